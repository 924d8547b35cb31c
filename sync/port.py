"""The EventLog port: the three operations every log adapter offers, with the same semantics everywhere.

Cursors are 12 bytes: a 10-byte FoundationDB-style versionstamp (8-byte big-endian commit version + 2-byte batch
order) followed by a 2-byte big-endian user version (the event's position in its batch).  They compare bytewise,
exactly like FoundationDB's versionstamps, and ``None`` means "before the first event".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from cxsync.sync.errors import CxError, InvalidValue
from cxsync.sync.events import ContextEvent
from cxsync.sync.names import validate_name as validate_name, validate_stream as validate_stream  # re-exported

CURSOR_LEN = 12



class LogError(CxError):
    """Base of every error an EventLog raises."""

    default_hint = "see `cxsync status` and the log file"


class TransientLogError(LogError):
    """Worth retrying later: the log is unreachable, busy, or the outcome of a commit is unknown."""


class PermanentLogError(LogError):
    """Retrying the same events will fail the same way. ``event_ids`` names the offending events."""

    def __init__(self, message: str, event_ids: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.event_ids = list(event_ids)


class QuotaExceeded(PermanentLogError):
    """The tenant's quota does not admit these events; they stay in the outbox and are reported."""


@dataclass(frozen=True)
class LogEntry:
    """One event as read from a stream.

    ``payload`` is the stored bytes exactly as they came (decoded once, here at the edge; the cache keeps them
    as they are, never re-encoded).  An entry the reader cannot decode has ``event`` None and says why in
    ``error``: it is handed on rather than failing the page, so one bad event never stalls a stream.
    """

    cursor: bytes
    event: ContextEvent | None
    payload: bytes | None = None
    event_id: str = ""
    error: str | None = None

    def __post_init__(self) -> None:
        if not self.event_id and self.event is not None:
            object.__setattr__(self, "event_id", self.event.event_id)


def undecodable(cursor: bytes, event_id: str, payload: bytes, error: str) -> LogEntry:
    return LogEntry(cursor, None, payload, event_id, error)


def log_identity(event_log: object) -> str | None:
    """The identity of the log behind ``event_log`` (created at its birth), or None for a log without one.
    A wrapper that does not offer ``identity`` simply opts out of replaced-log detection."""
    fn = getattr(event_log, "identity", None)
    if fn is None:
        return None
    ident = fn()
    return ident if isinstance(ident, str) and ident else None


class EventLog(Protocol):
    tenant: str

    def append(self, stream: str, events: Sequence[ContextEvent]) -> list[bytes]:
        """Append in order; return one cursor per event.  Idempotent by event_id: an event already in the
        stream returns its original cursor and is not written again."""

    def read(self, stream: str, after: bytes | None, limit: int = 1000) -> list[LogEntry]:
        """Events strictly after ``after``, in commit order, at most ``limit``."""

    def wait(self, stream: str, after: bytes | None, timeout: float) -> bool:
        """Return True as soon as the stream holds something newer than ``after`` (a hint: re-read), False on
        timeout."""

    def close(self) -> None: ...


class IdentifiedLog(EventLog, Protocol):
    def identity(self) -> str:
        """A random id written when the log was created, read again on every (re)connect: a log that was
        deleted and recreated, or replaced by another file or cluster, answers with a new one."""


def check_cursor(after: bytes | None) -> bytes | None:
    if after is not None and (not isinstance(after, (bytes, bytearray)) or len(after) != CURSOR_LEN):
        raise InvalidValue(f"a cursor is {CURSOR_LEN} bytes, got {after!r}")
    return bytes(after) if after is not None else None


def check_read(stream: str, after: bytes | None, limit: int) -> bytes | None:
    """The arguments of ``EventLog.read``, checked the same way by every adapter; the cursor as bytes."""
    validate_stream(stream)
    if not isinstance(limit, int) or limit < 1:
        raise InvalidValue(f"limit must be a positive integer, got {limit!r}")
    return check_cursor(after)
