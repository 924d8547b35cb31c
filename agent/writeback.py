"""Put captured transcripts back on disk where Claude Code reads them, without the agent capturing them again.

A file is written beside its destination under a name discovery ignores, its offset row (the agent's "read up to
here" for that path: inode, size, line count, head hash — what the tailer would record after reading it whole)
is committed to the cache, and only then is the file linked into place.  Whenever the agent sees the new file,
its row already says "read to the end": nothing is read, nothing is captured twice.  ``os.link`` refuses an
existing destination, so a file that appeared meanwhile is never overwritten.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxsync.agent.tailer import tail
from cxsync.cache import Cache
from cxsync.cache.records import SessionFile
from cxsync.sync.errors import CxError


class DestinationExists(CxError):
    """A different file is already where the transcript would go: it is left alone."""


@dataclass
class Planned:
    file: SessionFile
    dest: Path
    data: bytes
    state: str = "new"  # new | same (already there, identical) | different (a file we must not overwrite)


@dataclass
class Outcome:
    written: list[Planned] = field(default_factory=list)
    unchanged: list[Planned] = field(default_factory=list)


def plan_file(sf: SessionFile, dest: Path, data: bytes) -> Planned:
    """What writing ``data`` at ``dest`` would do: create it, find it already there, or meet a different file."""
    p = Planned(sf, dest, data)
    try:
        existing = dest.read_bytes()
    except FileNotFoundError:
        return p
    p.state = "same" if existing == data else "different"
    return p


def renamed_copy(data: bytes, old: str, new: str) -> bytes:
    """The lines of a session as a copy under a new id: only the exact ``"sessionId":"<old>"`` tokens change."""
    return data.replace(f'"sessionId":"{old}"'.encode(), f'"sessionId":"{new}"'.encode())


def _offset_row(tmp: Path, dest: Path, kind: str, session: str, size: int) -> dict[str, Any]:
    res = tail(str(tmp), None, max_bytes=size + 1)
    s = res.state
    return {"path": str(dest), "kind": kind, "session_id": session, "inode": s.inode, "dev": s.dev,
            "offset": s.offset, "line_no": s.line_no, "head_len": s.head_len, "head_hash": s.head_hash,
            "size": s.size, "mtime": s.mtime, "status": "active"}


def private_dirs(folder: Path) -> None:
    """Create ``folder`` and any missing parent, each private (0700); existing folders are left as they are."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)


def write_captured(cache: Cache, dest: Path, data: bytes, kind: str, session: str) -> None:
    """Write ``data`` at ``dest`` (never over an existing file) and record it in the cache as fully read.

    Crash-only: killed before the link, the offset row names a file that is not there (a later write replaces
    the row; a different file appearing there has another inode and is read from its start) and the hidden
    temporary file is removed by the next write to ``dest``."""
    import secrets

    private_dirs(dest.parent)
    for stale in dest.parent.glob(f".{dest.name}.*.cxsync-tmp"):
        stale.unlink(missing_ok=True)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.cxsync-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        before = cache.file_state(str(dest))
        cache.apply([], "local", files=[_offset_row(tmp, dest, kind, session, len(data))])
        try:
            os.link(tmp, dest)
        except FileExistsError:
            _restore_row(cache, str(dest), before)
            raise DestinationExists(f"{dest} appeared while writing it: left alone",
                                    "run the command again to compare it with the captured session") from None
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _restore_row(cache: Cache, path: str, before: dict[str, Any] | None) -> None:
    if before is None:
        with cache._lock, cache.conn:
            cache.conn.execute("DELETE FROM files WHERE path=?", (path,))
    else:
        cache.apply([], "local", files=[{**before, "malformed_add": 0}])


def write_all(cache: Cache, planned: list[Planned]) -> Outcome:
    out = Outcome()
    for p in planned:
        if p.state == "same":
            out.unchanged.append(p)
            continue
        if p.state == "different":  # callers resolve conflicts first; this is the last guard
            raise DestinationExists(f"a different file is already at {p.dest}: not overwritten")
        write_captured(cache, p.dest, p.data, p.file.kind, p.file.session)
        out.written.append(p)
    return out
