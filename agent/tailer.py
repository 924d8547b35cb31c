"""Tail a growing JSONL file by byte offset, yielding only complete lines.

The tailer is pure file logic: it reads from a remembered ``FileState`` and returns the lines it found with the
state to remember next.  The caller commits that state in the same SQLite transaction as the rows built from the
lines, so a crash between the two can never happen (crash-only correctness).

A file is re-read from the start when it was truncated (size below our offset), replaced (new inode/device) or
rewritten in place (the bytes before our offset changed, detected by a hash of its head).  Re-reading is safe
because every record's identity is content-derived: what we already hold is recognised, nothing is duplicated.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass, replace
from typing import BinaryIO

HEAD_BYTES = 4096  # how much of the file's start identifies "the same file" across reads
CHUNK = 1 << 20
MAX_LINE = 256 << 20  # a line longer than this is skipped (counted), never held in memory whole


@dataclass(frozen=True)
class FileState:
    path: str
    inode: int = 0
    dev: int = 0
    offset: int = 0
    line_no: int = 0  # number of complete lines consumed
    head_len: int = 0
    head_hash: str = ""
    size: int = 0
    mtime: float = 0.0


@dataclass(frozen=True)
class Line:
    number: int  # 1-based line number in the file
    start: int  # byte offset of the line's first byte
    data: bytes  # without the trailing newline


@dataclass
class TailResult:
    lines: list[Line]
    state: FileState
    reset: bool = False  # True when the file was re-read from the start
    reason: str = ""
    oversized: int = 0  # lines skipped for exceeding MAX_LINE
    more: bool = False  # stopped at max_bytes: call again


class NotRegularFile(OSError):
    """A path named like a transcript that is a FIFO, a device or a socket: reading it could block forever or
    never end, so it is never opened."""

    def __init__(self, path: str) -> None:
        super().__init__(errno.EINVAL, "not a regular file (a FIFO, device or socket is never read)", path)


def _open_regular(path: str) -> tuple[BinaryIO, os.stat_result]:
    """Open ``path`` for reading only if it is a regular file (after symlinks).  Checked before opening, since
    opening a FIFO blocks until a writer appears, and again on the open descriptor, in case the path was
    swapped in between (non-blocking, so even then the open returns at once)."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise NotRegularFile(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
                 | getattr(os, "O_BINARY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(path)
        return os.fdopen(fd, "rb"), st
    except BaseException:
        os.close(fd)
        raise


def _head_hash(fh: BinaryIO, length: int) -> str:
    fh.seek(0)
    return hashlib.sha256(fh.read(length)).hexdigest()


def _skip_to_newline(fh: BinaryIO, pos: int, end: int) -> int | None:
    """Offset just past the next newline at or after pos (before ``end``), or None if the line is still open."""
    fh.seek(pos)
    while pos < end:
        chunk = fh.read(min(CHUNK, end - pos))
        if not chunk:
            return None
        i = chunk.find(b"\n")
        if i >= 0:
            return pos + i + 1
        pos += len(chunk)
    return None


def tail(path: str, state: FileState | None, *, max_bytes: int = 16 << 20, max_line: int = MAX_LINE) -> TailResult:
    """Read complete lines after ``state.offset``; at most about ``max_bytes`` per call (then ``more`` is set).

    Reads stop at the size the file had when it was opened: a file growing faster than it is read (or a
    symlink to something endless) can never keep one call going.  Only regular files are read
    (``NotRegularFile`` otherwise).  Raises FileNotFoundError when the file is gone: the caller stops tailing
    it and keeps what it captured.
    """
    state = state or FileState(path)
    reset, reason = False, ""
    fh, st = _open_regular(path)
    end = st.st_size
    with fh:
        if state.offset:
            if (state.inode, state.dev) != (st.st_ino, st.st_dev):
                reset, reason = True, "replaced"
            elif st.st_size < state.offset:
                reset, reason = True, "truncated"
            elif state.head_len and _head_hash(fh, state.head_len) != state.head_hash:
                reset, reason = True, "rewritten"
        if reset:
            state = FileState(path)
        lines: list[Line] = []
        pos, number, oversized = state.offset, state.line_no, 0
        fh.seek(pos)
        buf = b""
        budget_hit = False
        while True:
            if pos - state.offset >= max_bytes and lines:
                budget_hit = True
                break
            want = min(CHUNK, end - pos - len(buf))
            chunk = fh.read(want) if want > 0 else b""
            if not chunk:
                break
            buf = buf + chunk if buf else chunk
            start = 0
            while True:
                i = buf.find(b"\n", start)
                if i < 0:
                    break
                number += 1
                data = buf[start:i]
                if data.strip():
                    lines.append(Line(number, pos, data))
                pos += i + 1 - start
                start = i + 1
                if pos - state.offset >= max_bytes:
                    budget_hit = True
                    break
            buf = buf[start:]
            if budget_hit:
                break
            if len(buf) > max_line:
                # A monster line: skip it without keeping it, or wait for its end.
                stop = _skip_to_newline(fh, pos + len(buf), end)
                if stop is None:
                    break
                number += 1
                oversized += 1
                pos = stop
                buf = b""
                fh.seek(pos)
        head_len = min(pos, HEAD_BYTES)
        head_hash = _head_hash(fh, head_len) if head_len else ""
    new_state = replace(state, inode=st.st_ino, dev=st.st_dev, offset=pos, line_no=number, head_len=head_len,
                        head_hash=head_hash, size=st.st_size, mtime=st.st_mtime)
    return TailResult(lines, new_state, reset, reason, oversized, budget_hit)
