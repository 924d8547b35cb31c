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
    cursor: bytes
    event: ContextEvent


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


def check_cursor(after: bytes | None) -> bytes | None:
    if after is not None and (not isinstance(after, (bytes, bytearray)) or len(after) != CURSOR_LEN):
        raise InvalidValue(f"a cursor is {CURSOR_LEN} bytes, got {after!r}")
    return bytes(after) if after is not None else None
