"""Every path cxsync uses, from one place.

platformdirs gives the per-OS defaults; ``CXSYNC_HOME`` moves everything under one folder (tests, side-by-side
profiles).  Directories are created 0700 and files holding data or secrets are 0600.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

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
        for d in (self.config_dir, self.data_dir, self.state_dir, self.log_dir, self.runtime_dir):
            d.mkdir(parents=True, exist_ok=True)
            try:
                os.chmod(d, 0o700)
            except OSError:
                pass
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


def secure_file(path: Path) -> None:
    """Make a file private to the user (0600); best effort on platforms without POSIX modes."""
    try:
        os.chmod(path, 0o600)
    except OSError:
        pass
