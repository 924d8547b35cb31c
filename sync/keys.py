"""The tenant key design: every FoundationDB key cxsync reads or writes, built with the official tuple layer.

One ``Keys`` object per tenant builds every key; nothing else in cxsync packs a tenant prefix, so the layout
below is the whole story (``T`` is the tenant, ``S`` a stream, ``VS`` a tuple-layer ``Versionstamp``)::

    ("coditect", "events", T, S, VS)                     -> encoded event, or a chunk manifest (first byte 0x00)
    ("coditect", "events", T, "chunks", S, VS, i)        -> i-th slice of a chunked event (values <= 100,000 B)
    ("coditect", "events", T, "heads", S)                -> 12-byte cursor of the newest event (the watch key)
    ("coditect", "events", T, "event-ids", S, event_id)  -> 12-byte cursor of that event (the dedup index)

    ("coditect", "context", "tenants", T, ...)           the seed's materialised views, values are references
        "users", U, "sessions", SESSION, "messages", ts_micros, hash   -> (S, VS) of the MessageIndexed event
        "shared", "decisions"|"patterns"|"errors", id                  -> (S, VS) of the KnowledgeExtracted event
        "projects", P, "messages", ts_micros, hash                     -> (S, VS) of the MessageIndexed event
        "projects", P, "knowledge", id                                 -> (S, VS) of the KnowledgeExtracted event
                                                                          (of the share, if that is not in the log)
        "knowledge", id                                                -> (S, VS, kind): the knowledge index
        "metadata", "limits", "events"|"bytes"                         -> int64 little-endian (operator-set quota)
        "metadata", "usage", "events"|"bytes"                          -> int64 little-endian (atomic add)
        "gateway", "tokens", TOKEN_ID                                  -> JSON token record (SHA-256, never the token)
        "gateway", "revocations"                                       -> int64 LE epoch, +1 per revocation
        "gateway", "quota", "events_per_day"|"bytes_stored"            -> int64 LE (operator-set)
        "gateway", "usage", "events", DAY | "gateway", "usage", "bytes" -> int64 LE (atomic add)

The auxiliary subspaces ("chunks", "heads", "event-ids") sit beside the streams inside the tenant's events
subspace: ``validate_stream`` admits only ``team``, ``u/…`` and ``p/…``, so no stream can be named like them, and
the tuple encoding is prefix-free, so a stream's range never covers another stream or an auxiliary key.  Clearing
the two tenant subspaces removes a tenant entirely.

View values reference the log entry (stream + versionstamp) instead of copying the event: messages can be
megabytes and the log is the single source of truth; a view is only an index into it.  The knowledge index is
the one addition to the seed's tree: a KnowledgeShared marker carries only the knowledge id, and filing it under
``shared/{kind}`` needs the kind recorded when the knowledge was extracted (in the author's ``u/`` stream).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

import fdb.tuple
from fdb.subspace_impl import Subspace  # the class fdb.Subspace names once an API version is selected
from fdb.tuple import Versionstamp

from cxsync.sync.errors import InvalidValue
from cxsync.sync.events import KNOWLEDGE_EXTRACTED, KNOWLEDGE_SHARED, MESSAGE_INDEXED, ContextEvent
from cxsync.sync.port import CURSOR_LEN, validate_name, validate_stream

ROOT = "coditect"

# knowledge["type"] -> the seed's shared/ folder name
SHARED_KINDS = {"decision": "decisions", "pattern": "patterns", "error_solution": "errors"}

QUOTA_NAMES = ("events", "bytes")

_VS_PLACEHOLDER = b"\x00" * 10
_OFFSET0 = (0).to_bytes(4, "little")  # versionstamp position at the start of the value (API >= 520: 4 bytes LE)


@dataclass
class EventViews:
    """The view writes of one event: ``refs`` are keys whose value references the event itself;
    ``index_key`` is its entry in the knowledge index (value: stream, versionstamp, kind); ``shares`` are
    (knowledge id, target stream) pairs resolved through that index at append time."""

    refs: list[bytes] = field(default_factory=list)
    index_key: bytes | None = None
    knowledge: tuple[str, str] | None = None  # (id, kind or "") of extracted knowledge
    shares: list[tuple[str, str]] = field(default_factory=list)

    def keys(self) -> list[bytes]:
        return [*self.refs, *([self.index_key] if self.index_key else [])]


def cursor_versionstamp(cursor: bytes) -> Versionstamp:
    """A 12-byte cursor (10-byte versionstamp + 2-byte big-endian user version) as a tuple-layer Versionstamp."""
    if len(cursor) != CURSOR_LEN:
        raise InvalidValue(f"a cursor is {CURSOR_LEN} bytes, got {len(cursor)}")
    return Versionstamp(bytes(cursor[:10]), int.from_bytes(cursor[10:], "big"))


def versionstamped_cursor_param(user_version: int) -> bytes:
    """Parameter for ``set_versionstamped_value`` whose stored result is the 12-byte cursor of this event."""
    return _VS_PLACEHOLDER + user_version.to_bytes(2, "big") + _OFFSET0


def timestamp_micros(value: Any) -> int | None:
    """ISO-8601 text to integer microseconds since the epoch (the seed's message timestamp), None if unusable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)  # transcripts write UTC; a naive stamp is read as UTC
    delta = dt - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def stream_project(stream: str) -> str | None:
    return stream[2:] if stream.startswith("p/") else None


def _project(project: str) -> str:
    """A project name is whatever its ``p/`` stream admits."""
    validate_stream(f"p/{project}")
    return project


class Keys:
    """Every key of one tenant."""

    def __init__(self, tenant: str) -> None:
        self.tenant = validate_name("tenant", tenant)
        self.events = Subspace((ROOT, "events", tenant))
        self.context = Subspace((ROOT, "context", "tenants", tenant))
        self._chunks = self.events.subspace(("chunks",))
        self._heads = self.events.subspace(("heads",))
        self._event_ids = self.events.subspace(("event-ids",))
        self._metadata = self.context.subspace(("metadata",))
        self._gateway = self.context.subspace(("gateway",))

    # ---- the log -----------------------------------------------------------------------------------------

    def log(self, stream: str) -> Subspace:
        return self.events.subspace((validate_stream(stream),))

    def log_range(self, stream: str) -> tuple[bytes, bytes]:
        """Explicit [begin, end) bounds of one stream's entries: every range read stays inside them."""
        r = self.log(stream).range()
        return r.start, r.stop

    def log_key(self, stream: str, cursor: bytes) -> bytes:
        return bytes(self.log(stream).pack((cursor_versionstamp(cursor),)))

    def log_key_versionstamped(self, stream: str, user_version: int) -> bytes:
        """Key for ``set_versionstamped_key``: the commit fills in the versionstamp."""
        return bytes(self.log(stream).pack_with_versionstamp((Versionstamp.incomplete(user_version),)))

    def cursor_of(self, stream: str, key: bytes) -> bytes:
        """The 12-byte cursor of a log key, read back through the tuple layer."""
        (vs,) = self.log(stream).unpack(key)
        if not isinstance(vs, Versionstamp) or not vs.is_complete():
            raise InvalidValue(f"not a committed log key: {key!r}")
        return bytes(vs.to_bytes())

    def chunk_key_versionstamped(self, stream: str, user_version: int, index: int) -> bytes:
        return bytes(self._chunks.pack_with_versionstamp(
            (validate_stream(stream), Versionstamp.incomplete(user_version), index)
        ))

    def chunk_range(self, stream: str, cursor: bytes) -> tuple[bytes, bytes]:
        r = self._chunks.range((validate_stream(stream), cursor_versionstamp(cursor)))
        return r.start, r.stop

    def head(self, stream: str) -> bytes:
        return bytes(self._heads.pack((validate_stream(stream),)))

    def event_id(self, stream: str, event_id: str) -> bytes:
        if not isinstance(event_id, str) or not event_id:
            raise InvalidValue(f"invalid event_id {event_id!r}")
        return bytes(self._event_ids.pack((validate_stream(stream), event_id)))

    # ---- the seed's materialised views -------------------------------------------------------------------

    def message(self, user: str, session: str, ts_micros: int, content_hash: str) -> bytes:
        return bytes(self.context.pack(
            ("users", validate_name("user", user), "sessions", session, "messages", ts_micros, content_hash)
        ))

    def shared(self, kind: str, knowledge_id: str) -> bytes:
        if kind not in SHARED_KINDS.values():
            raise InvalidValue(f"shared kind must be one of {sorted(SHARED_KINDS.values())}, not {kind!r}")
        return bytes(self.context.pack(("shared", kind, knowledge_id)))

    def project_message(self, project: str, ts_micros: int, content_hash: str) -> bytes:
        return bytes(self.context.pack(("projects", _project(project), "messages", ts_micros, content_hash)))

    def project_knowledge(self, project: str, knowledge_id: str) -> bytes:
        return bytes(self.context.pack(("projects", _project(project), "knowledge", knowledge_id)))

    def knowledge(self, knowledge_id: str) -> bytes:
        """The knowledge index: id -> (stream, versionstamp, kind) of its KnowledgeExtracted event, so that a
        KnowledgeShared marker (which carries only the id) can file the knowledge under shared/{kind}."""
        return bytes(self.context.pack(("knowledge", knowledge_id)))

    def share_target(self, target: str, kind: str | None, knowledge_id: str) -> bytes | None:
        """The view key a share lands in: ``team`` -> shared/{kind}/{id} (needs the kind), ``p/P`` ->
        projects/P/knowledge/{id}."""
        if target == "team":
            return self.shared(kind, knowledge_id) if kind is not None else None
        project = stream_project(target)
        return self.project_knowledge(project, knowledge_id) if project is not None else None

    def view_ref_versionstamped(self, stream: str, user_version: int, *extra: str) -> bytes:
        """Parameter for ``set_versionstamped_value``: a view entry stores (stream, versionstamp, *extra) of
        the event it indexes."""
        return bytes(fdb.tuple.pack_with_versionstamp(
            (validate_stream(stream), Versionstamp.incomplete(user_version), *extra)))

    def view_ref(self, stream: str, cursor: bytes, *extra: str) -> bytes:
        """A view value referencing an event already in the log."""
        return bytes(fdb.tuple.pack((validate_stream(stream), cursor_versionstamp(cursor), *extra)))

    @staticmethod
    def unpack_view_ref(value: bytes) -> tuple[str, bytes, tuple[Any, ...]]:
        """(stream, 12-byte cursor, extra elements) of a view value."""
        stream, vs, *extra = fdb.tuple.unpack(value)
        return str(stream), bytes(vs.to_bytes()), tuple(extra)

    def views_for(self, stream: str, event: ContextEvent) -> EventViews:
        """The view keys an event maintains when appended to ``stream``.

        Where a view lives follows the stream's audience: a message goes under its author's session (and under
        the project for a ``p/`` stream); extracted knowledge is indexed by id for the whole tenant and filed
        under ``shared/`` on ``team`` or under the project on ``p/``; a KnowledgeShared marker files the
        knowledge it names under its scope's view (``team`` -> shared/{kind}, ``project`` -> projects/P).
        Data that cannot form a key (no session, unparsable time, unknown kind) gets no view rather than a
        guessed one: the log stays the source of truth.
        """
        project = stream_project(validate_stream(stream))
        data: Mapping[str, Any] = event.data
        views = EventViews()
        if event.type == MESSAGE_INDEXED:
            session, content_hash = data.get("session"), data.get("hash")
            ts = timestamp_micros(data.get("occurred_at"))
            if ts is None:
                ts = timestamp_micros(event.timestamp)
            if isinstance(session, str) and session and isinstance(content_hash, str) and ts is not None:
                views.refs.append(self.message(event.user, session, ts, content_hash))
                if project is not None:
                    views.refs.append(self.project_message(project, ts, content_hash))
        elif event.type == KNOWLEDGE_EXTRACTED:
            knowledge = data.get("knowledge")
            if isinstance(knowledge, Mapping) and knowledge.get("id") is not None:
                kid = str(knowledge["id"])
                kind = SHARED_KINDS.get(str(knowledge.get("type")))
                views.knowledge = (kid, kind or "")
                if kind is not None:
                    views.index_key = self.knowledge(kid)
                target = self.share_target(stream, kind, kid)
                if target is not None:
                    views.refs.append(target)
        elif event.type == KNOWLEDGE_SHARED:
            shared_id, scope, project_name = data.get("knowledge_id"), data.get("scope"), data.get("project")
            if isinstance(shared_id, str) and shared_id:
                if scope == "team":
                    views.shares.append((shared_id, "team"))
                elif scope == "project" and isinstance(project_name, str):
                    views.shares.append((shared_id, validate_stream("p/" + project_name)))
        return views

    # ---- metadata: quotas --------------------------------------------------------------------------------

    def limit(self, name: str) -> bytes:
        if name not in QUOTA_NAMES:
            raise InvalidValue(f"quota name must be one of {QUOTA_NAMES}, not {name!r}")
        return bytes(self._metadata.pack(("limits", name)))

    def usage(self, name: str) -> bytes:
        if name not in QUOTA_NAMES:
            raise InvalidValue(f"quota name must be one of {QUOTA_NAMES}, not {name!r}")
        return bytes(self._metadata.pack(("usage", name)))

    # ---- the gateway: tokens (by id, value a JSON record with the digest), revocation epoch, quotas ---------

    def gateway_token(self, token_id: str) -> bytes:
        return bytes(self._gateway.pack(("tokens", validate_name("token id", token_id))))

    def gateway_token_range(self) -> tuple[bytes, bytes]:
        r = self._gateway.range(("tokens",))
        return r.start, r.stop

    def gateway_token_id(self, key: bytes) -> str:
        _, token_id = self._gateway.unpack(key)
        return str(token_id)

    def gateway_epoch(self) -> bytes:
        """int64 LE, atomically incremented by every revocation: the key server processes watch."""
        return bytes(self._gateway.pack(("revocations",)))

    def gateway_quota(self, name: str) -> bytes:
        if name not in ("events_per_day", "bytes_stored"):
            raise InvalidValue(f"gateway quota must be events_per_day or bytes_stored, not {name!r}")
        return bytes(self._gateway.pack(("quota", name)))

    def gateway_usage(self, name: str, day: str | None = None) -> bytes:
        """Events counted per UTC day (``day`` = YYYY-MM-DD), bytes in total (int64 LE, atomic add)."""
        if name == "events" and day is not None:
            return bytes(self._gateway.pack(("usage", "events", day)))
        if name == "bytes" and day is None:
            return bytes(self._gateway.pack(("usage", "bytes")))
        raise InvalidValue(f"gateway usage is ('events', day) or ('bytes',), not {(name, day)!r}")

    # ---- whole tenant ------------------------------------------------------------------------------------

    def tenant_ranges(self) -> list[tuple[bytes, bytes]]:
        """Every key of this tenant lies in one of these ranges (and no other tenant's key does)."""
        return [(r.start, r.stop) for r in (self.events.range(), self.context.range())]
