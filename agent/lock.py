"""The single-instance lock: an OS file lock on ``agent.lock`` in the runtime dir, released by the kernel when
the process dies (so a ``kill -9`` never leaves a stale lock), with the holder's pid written inside."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import IO


class InstanceLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fh = os.fdopen(fd, "r+")
        if not _try_lock(fh):
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
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


def holder(path: Path) -> int | None:
    """The pid of the running agent holding the lock, or None when nobody holds it."""
    try:
        fh = open(path, "r+")
    except OSError:
        return None
    with fh:
        if _try_lock(fh):
            return None  # we could take it: nobody holds it (closing releases it again)
        try:
            return int(fh.read().strip() or 0) or -1
        except ValueError:
            return -1


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
