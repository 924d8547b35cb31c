"""Every path cxsync uses, from one place.

platformdirs gives the per-OS defaults; ``CXSYNC_HOME`` moves everything under one folder (tests, side-by-side
profiles).  Directories are created 0700 and files holding data or secrets are 0600.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

APP = "cxsync"


@dataclass(frozen=True)
class Paths:
    config_dir: Path
    data_dir: Path
    state_dir: Path
    log_dir: Path
    runtime_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def cache_db(self) -> Path:
        return self.data_dir / "cache.db"

    @property
    def lock_file(self) -> Path:
        return self.runtime_dir / "agent.lock"

    @property
    def control_socket(self) -> Path:
        return self.runtime_dir / "control.sock"

    @property
    def control_key(self) -> Path:
        return self.runtime_dir / "control.key"

    @property
    def agent_state(self) -> Path:
        """The running agent's self-description (pid, start time, state), rewritten on every state change."""
        return self.runtime_dir / "agent.json"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "cxsync.log"

    def as_dict(self) -> dict[str, str]:
        return {
            "config_file": str(self.config_file),
            "config_dir": str(self.config_dir),
            "data_dir": str(self.data_dir),
            "cache_db": str(self.cache_db),
            "state_dir": str(self.state_dir),
            "log_dir": str(self.log_dir),
            "log_file": str(self.log_file),
            "runtime_dir": str(self.runtime_dir),
        }

    def ensure(self) -> "Paths":
        """Create the folders that are missing, private (0700).  A folder that exists is left as it is: it may
        be the user's own (``CXSYNC_HOME=/tmp``), and changing its mode would lock others out of it."""
        for d in (self.config_dir, self.data_dir, self.state_dir, self.log_dir, self.runtime_dir):
            make_private_dirs(d)
        return self


def resolve_paths(env: dict[str, str] | None = None) -> Paths:
    env = dict(os.environ) if env is None else env
    home = env.get("CXSYNC_HOME", "").strip()
    if home:
        base = Path(home).expanduser().resolve()
        return Paths(base, base / "data", base / "state", base / "logs", base / "run")
    import platformdirs

    dirs = platformdirs.PlatformDirs(APP, appauthor=False, ensure_exists=False)
    import warnings

    with warnings.catch_warnings():  # no XDG_RUNTIME_DIR (ssh, containers): platformdirs' /tmp fallback is fine
        warnings.simplefilter("ignore")
        runtime = Path(dirs.user_runtime_dir)
    return Paths(
        Path(dirs.user_config_dir),
        Path(dirs.user_data_dir),
        Path(dirs.user_state_dir),
        Path(dirs.user_log_dir),
        runtime,
    )


def make_private_dirs(path: Path) -> None:
    """``mkdir -p`` where every folder created (and only those) is 0700, whatever the umask."""
    missing: list[Path] = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:  # another process made it meanwhile: theirs to set
            continue
        try:
            os.chmod(d, 0o700)  # mkdir's mode is filtered by the umask
        except OSError:
            pass


def private_opener(path: str, flags: int) -> int:
    """An ``opener`` for ``open()`` that creates the file 0600 (the umask can only narrow it further)."""
    return os.open(path, flags, 0o600)


def create_private(path: Path) -> None:
    """Create ``path`` empty and 0600 unless it exists.  SQLite gives a database's ``-wal``, ``-shm`` and journal
    files the mode of the database file, so creating the database this way first keeps all of them private."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


def private_rotating_log(path: Path, *, max_bytes: int, backups: int) -> logging.Handler:
    """A rotating log handler whose every file, the first and each one opened after a rotation, is created 0600.
    (Built on call: ``logging.handlers`` costs ``cxsync status`` start-up time it never needs.)"""
    import logging.handlers

    class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
        def _open(self) -> Any:
            return open(self.baseFilename, self.mode, encoding=self.encoding, errors=self.errors,
                        opener=private_opener)

    return PrivateRotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")


def secure_file(path: Path) -> None:
    """Make a file private to the user (0600); best effort on platforms without POSIX modes."""
    try:
        os.chmod(path, 0o600)
    except OSError:
        pass
