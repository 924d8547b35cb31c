"""The one clock helper: the current UTC time as ISO 8601 text with a ``Z``, the form every stored time takes."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow_iso(timespec: str = "microseconds") -> str:
    return datetime.now(timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")
