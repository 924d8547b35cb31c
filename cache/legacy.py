"""Reading the seed's legacy single-user ``context.db``: its schema checked, every row validated.

The legacy store (SEED.md, "Current Architecture Analysis") holds ``messages`` (hash, content, role, source_type,
source_file, created_at), an FTS index over them (derived: ignored here) and ``knowledge`` (message_id,
knowledge_type, JSON extracted_data, created_at).  Years of hand-run scripts wrote it, so nothing in it is trusted:
each row comes out either as a clean value or as a ``Refused`` with the reason a person can act on — never
silently dropped, never a reason to stop.  Turning rows into events is the migrator's job (``agent/migrate.py``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import apsw
import orjson

from cxsync.cache.db import scalar
from cxsync.sync.errors import CxError

ROLES = ("user", "assistant", "system", "tool")
KNOWLEDGE_TYPES = ("decision", "pattern", "error_solution")
REQUIRED_MESSAGE_COLUMNS = ("id", "content", "role")
OPTIONAL_MESSAGE_COLUMNS = ("hash", "source_type", "source_file", "created_at")
KNOWLEDGE_COLUMNS = ("id", "message_id", "knowledge_type", "extracted_data", "created_at")

# Times before the first Claude Code transcript, or a day after now, are not times this database can hold.
_EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)


class LegacyError(CxError):
    """The file given to ``migrate`` is not a legacy context database we can read."""


def content_hash(text: str) -> str:
    """The seed's dedup hash: SHA-256 of the content, as the transcripts' messages carry it."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Refused:
    table: str
    row_id: Any
    reason: str


@dataclass(frozen=True)
class LegacyMessage:
    row_id: int
    content: str
    hash: str  # ours: sha256(content)
    legacy_hash: str | None
    role: str
    source_type: str | None
    source_file: str | None
    created_at: str | None  # ISO 8601 UTC, or None when the row had no usable time
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class LegacyKnowledge:
    row_id: int
    message_id: int | None
    knowledge_type: str
    data: dict[str, Any]
    created_at: str | None
    warnings: tuple[str, ...] = field(default=())


def parse_time(value: Any) -> str | None:
    """A legacy timestamp as ISO 8601 UTC with milliseconds, or None when it is not a plausible time.

    SQLite's ``CURRENT_TIMESTAMP`` writes ``YYYY-MM-DD HH:MM:SS`` in UTC; scripts also wrote ISO 8601 with a zone
    and Unix epochs (seconds or milliseconds)."""
    if value is None or isinstance(value, bool):
        return None
    when: datetime | None = None
    if isinstance(value, (int, float)):
        seconds = float(value) / (1000.0 if abs(value) > 1e11 else 1.0)
        try:
            when = datetime.fromtimestamp(seconds, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
    else:
        return None
    if not _EARLIEST <= when <= datetime.now(timezone.utc) + timedelta(days=1):
        return None
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


class LegacyDb:
    """A legacy ``context.db``, opened read-only: the migration never changes the file it reads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise LegacyError(f"no legacy database at {self.path}", "give the path of your context.db")
        try:
            self.conn = apsw.Connection(f"file:{self.path}?mode=ro", flags=apsw.SQLITE_OPEN_READONLY
                                        | apsw.SQLITE_OPEN_URI)
            self.conn.set_busy_timeout(5000)
            tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except apsw.Error as exc:
            raise LegacyError(f"{self.path} is not a readable SQLite database: {exc}",
                              "check the path; a copy made with `sqlite3 context.db .backup copy.db` also works") \
                from None
        if "messages" not in tables:
            raise LegacyError(f"{self.path} has no messages table: it is not a legacy context database",
                              "give the context.db of the legacy /cx scripts (context-storage/context.db)")
        self.message_columns = self._columns("messages")
        missing = [c for c in REQUIRED_MESSAGE_COLUMNS if c not in self.message_columns]
        if missing:
            raise LegacyError(f"the messages table of {self.path} lacks the column(s) {', '.join(missing)}",
                              "this is not the seed's legacy schema; nothing was imported")
        self.has_knowledge = "knowledge" in tables and all(
            c in self._columns("knowledge") for c in ("id", "knowledge_type", "extracted_data"))

    def _columns(self, table: str) -> set[str]:
        return {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "LegacyDb":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count(self, table: str) -> int:
        if table == "knowledge" and not self.has_knowledge:
            return 0
        return int(scalar(self.conn, f"SELECT count(*) FROM {table}"))

    def messages(self, after_id: int | None = None) -> Iterator[LegacyMessage | Refused]:
        """Every message row in id order, validated."""
        cols = [c if c in self.message_columns else f"NULL AS {c}"
                for c in ("id", "content", "role", *OPTIONAL_MESSAGE_COLUMNS)]
        sql = f"SELECT {', '.join(cols)} FROM messages"
        args: tuple[Any, ...] = ()
        if after_id is not None:
            sql += " WHERE id > ?"
            args = (after_id,)
        for row in self.conn.execute(sql + " ORDER BY id", args):
            yield self._message(*row)

    @staticmethod
    def _message(row_id: Any, content: Any, role: Any, legacy_hash: Any, source_type: Any, source_file: Any,
                 created_at: Any) -> LegacyMessage | Refused:
        if not isinstance(row_id, int):
            return Refused("messages", row_id, f"id {row_id!r} is not an integer")
        if content is None:
            return Refused("messages", row_id, "content is NULL")
        text = _text(content)
        if text is None:
            return Refused("messages", row_id, f"content is not UTF-8 text ({type(content).__name__})")
        if not text.strip():
            return Refused("messages", row_id, "content is empty")
        r = _text(role)
        norm = r.strip().lower() if r is not None else None
        if norm not in ROLES:
            return Refused("messages", row_id, f"role {role!r} is not one of {', '.join(ROLES)}")
        warnings: list[str] = []
        when = parse_time(created_at)
        if created_at is not None and when is None:
            warnings.append("created_at is not a valid time: kept without a time")
        return LegacyMessage(row_id, text, content_hash(text), _text(legacy_hash), norm, _text(source_type),
                             _text(source_file), when, tuple(warnings))

    def knowledge(self) -> Iterator[LegacyKnowledge | Refused]:
        if not self.has_knowledge:
            return
        cols = self._columns("knowledge")
        select = [c if c in cols else f"NULL AS {c}" for c in KNOWLEDGE_COLUMNS]
        for row in self.conn.execute(f"SELECT {', '.join(select)} FROM knowledge ORDER BY id"):
            yield self._knowledge(*row)

    @staticmethod
    def _knowledge(row_id: Any, message_id: Any, ktype: Any, data: Any, created_at: Any) -> LegacyKnowledge | Refused:
        if not isinstance(row_id, int):
            return Refused("knowledge", row_id, f"id {row_id!r} is not an integer")
        kt = _text(ktype)
        norm = kt.strip().lower() if kt is not None else None
        if norm not in KNOWLEDGE_TYPES:
            return Refused("knowledge", row_id, f"knowledge_type {ktype!r} is not one of {', '.join(KNOWLEDGE_TYPES)}")
        raw = _text(data)
        if raw is None:
            return Refused("knowledge", row_id, "extracted_data is NULL" if data is None else
                           "extracted_data is not UTF-8 text")
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return Refused("knowledge", row_id, f"extracted_data is not valid JSON ({exc})")
        if not isinstance(parsed, dict):
            return Refused("knowledge", row_id, "extracted_data is not a JSON object")
        warnings: list[str] = []
        when = parse_time(created_at)
        if created_at is not None and when is None:
            warnings.append("created_at is not a valid time: kept without a time")
        mid = message_id if isinstance(message_id, int) else None
        if message_id is not None and mid is None:
            warnings.append(f"message_id {message_id!r} is not an integer: kept without a source message")
        return LegacyKnowledge(row_id, mid, norm, parsed, when, tuple(warnings))
