"""The one clock helper: the current UTC time as ISO 8601 text with a ``Z``, the form every stored time takes, and
that text read back."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow_iso(timespec: str = "microseconds") -> str:
    return datetime.now(timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_iso(iso: str | None) -> datetime | None:
    """A stored time as an aware datetime (a time without a zone is UTC); None when absent or unreadable."""
    if not iso:
        return None
    try:
        t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
