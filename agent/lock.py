"""The single-instance lock: an OS file lock on ``agent.lock`` in the runtime dir, released by the kernel when
the process dies (so a ``kill -9`` never leaves a stale lock), with the holder's pid and role written inside.

One process writes a cache at a time.  The agent holds the lock for its whole life; the one-shot writers
(``import``, ``sync --once``, ``rebuild``) hold it for theirs.  A one-shot writer finding the lock taken refuses
(the agent already does its work, or another one-shot writer is under way).  An agent finding it held by a
one-shot writer waits for it to finish rather than exiting: a service manager that starts the agent during a
``rebuild`` must get a running agent afterwards, not one that gave up.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger("cxsync.lock")

AGENT = "agent"
COMMAND = "command"  # a one-shot command that did not name itself
# A probe (``holder``) holds the lock for microseconds; a writer that lost the race to one tries again for this
# long before it believes the lock is really taken.
PROBE_GRACE = 1.0
RETRY = 0.05


@dataclass(frozen=True)
class Holder:
    pid: int  # -1: the lock is held but its holder has not written its pid yet (or is a probe)
    role: str  # "agent", or the one-shot command holding it ("import", "rebuild", "sync"); "" when unknown

    @property
    def is_agent(self) -> bool:
        return self.role == AGENT

    def describe(self) -> str:
        what = "the cxsync agent" if self.is_agent else \
            f"`cxsync {self.role}`" if self.role and self.role != COMMAND else "another cxsync command"
        return f"{what} (pid {self.pid})" if self.pid > 0 else what


class InstanceLock:
    def __init__(self, path: Path, role: str = COMMAND) -> None:
        self.path = path
        self.role = role
        self._fh: IO[str] | None = None

    def acquire(self, *, wait_for_commands: bool | None = None) -> bool:
        """Take the lock; False when another process holds it.

        ``wait_for_commands`` (default: only for the agent): while the holder is a one-shot command, wait for it
        to finish instead of giving up.
        """
        if wait_for_commands is None:
            wait_for_commands = self.role == AGENT
        from cxsync.agent.paths import make_private_dirs

        make_private_dirs(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fh = os.fdopen(fd, "r+")
        grace = time.monotonic() + PROBE_GRACE
        said = False
        while not _try_lock(fh):
            who = _read(fh)
            if who.pid > 0:
                if who.is_agent or not wait_for_commands:
                    fh.close()
                    return False
                if not said:
                    log.info("waiting for %s to finish before starting", who.describe())
                    said = True
            elif time.monotonic() > grace:  # held, but nobody says by whom: not a passing probe
                fh.close()
                return False
            time.sleep(RETRY)  # flock has no timed wait; a one-shot command ends within its own time
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()} {self.role}")
        fh.flush()
        self._fh = fh
        return True

    def release(self) -> None:
        if self._fh is not None:
            try:
                self._fh.seek(0)
                self._fh.truncate()
            finally:
                self._fh.close()  # closing drops the lock
                self._fh = None

    def __enter__(self) -> "InstanceLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder_info(path: Path) -> Holder | None:
    """Who holds the lock, or None when nobody does."""
    try:
        fh = open(path, "r+")
    except OSError:
        return None
    with fh:
        if _try_lock(fh):
            return None  # we could take it: nobody holds it (closing releases it again)
        return _read(fh)


def holder(path: Path) -> int | None:
    """The pid of the process holding the lock (-1 when it has not written it yet), or None when nobody does."""
    h = holder_info(path)
    return None if h is None else h.pid


def _read(fh: IO[str]) -> Holder:
    try:
        fh.seek(0)
        text = fh.read().split()
    except (OSError, ValueError):
        return Holder(-1, "")
    try:
        pid = int(text[0]) if text else -1
    except ValueError:
        return Holder(-1, "")
    # A lock file written by an older cxsync holds the pid alone: only agents took the lock then.
    return Holder(pid if pid > 0 else -1, text[1] if len(text) > 1 else AGENT if pid > 0 else "")


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fh: IO[str]) -> bool:
        try:
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
else:
    import fcntl

    def _try_lock(fh: IO[str]) -> bool:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False


def hold(path: Path, role: str, *, agent_title: str, agent_hint: str) -> InstanceLock:
    """Take the lock for the one-shot command ``role`` for as long as it runs, or refuse with a clear error.

    ``agent_title`` (with ``{agent}`` for who holds it) and ``agent_hint`` say why the running agent makes the
    command unnecessary or unsafe, and what to do instead.
    """
    from cxsync.sync.errors import CxError

    lock = InstanceLock(path, role)
    if lock.acquire():
        return lock
    who = holder_info(path) or Holder(-1, "")
    if who.is_agent:
        raise CxError(agent_title.format(agent=who.describe()), agent_hint)
    raise CxError(f"{who.describe()} is writing this cache now", "wait for it to finish, then run this again")
