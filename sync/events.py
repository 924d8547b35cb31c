"""The event model: every change to a cache is a ContextEvent, local or remote.

Events are immutable and carry a deterministic ``event_id`` derived from what they describe, so the same
transcript line captured twice (or on two machines, or replayed after a crash) yields the same event and every
consumer can treat a replay as a no-op.

The codec is versioned and compact: one version byte, then compressed orjson.  Version 2 (written now) is
zstandard level 3 — five times faster than zlib on these payloads at the same ratio; version 1 (zlib) is still
read.  ``decode`` refuses versions it does not know with a clear error rather than guessing.

Version 3 never leaves a cache: zstandard with a dictionary trained on that cache's own events (its frames name the
dictionary's id), at level 2 (``DICT_LEVEL``).  Small frames of similar JSON compress twice as well with one, and
faster.  A cache registers its dictionaries when it is opened; an event decoded from a version-3 payload hands
``encode`` a version-2 wire form of the same bytes, so nothing compressed with a dictionary ever reaches a log.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import orjson
import zstandard

from cxsync.sync import clock
from cxsync.sync.errors import CxError
from cxsync.sync.names import Identity as Identity  # one Identity, defined with the name rules

MESSAGE_INDEXED = "MessageIndexed"
SESSION_STARTED = "SessionStarted"
SESSION_ENDED = "SessionEnded"
RECORDS_CAPTURED = "RecordsCaptured"
KNOWLEDGE_EXTRACTED = "KnowledgeExtracted"
KNOWLEDGE_SHARED = "KnowledgeShared"

EVENT_TYPES = frozenset(
    {MESSAGE_INDEXED, SESSION_STARTED, SESSION_ENDED, RECORDS_CAPTURED, KNOWLEDGE_EXTRACTED, KNOWLEDGE_SHARED}
)

CODEC_VERSION = 2
CODEC_ZLIB = 1
CODEC_DICT = 3  # cache-local only
DICTIONARY_SIZE = 256 << 10  # as good as 1 MB on transcript events, and quicker to train and to load
_tls = threading.local()  # zstd (de)compressors are not safe to share between threads
_dictionaries: dict[int, zstandard.ZstdCompressionDict] = {}  # every dictionary this process has registered, by id
_dictionaries_lock = threading.Lock()


def _zstd() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    pair = getattr(_tls, "zstd", None)
    if pair is None:
        pair = _tls.zstd = (zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor())
    return pair


def train_dictionary(samples: Sequence[bytes], size: int = DICTIONARY_SIZE) -> bytes:
    """A compression dictionary for events like ``samples`` (``serialize``d events), under a fresh random id."""
    # Ids below 32768 and from 2**31 are reserved by zstd's format.
    dict_id = 32768 + secrets.randbelow(2**31 - 32768)
    return bytes(zstandard.train_dictionary(size, list(samples), dict_id=dict_id, level=3).as_bytes())


# zstandard's level for version 3. At a million messages level 2 took a backfill's readers 3.6 s less CPU than
# level 3 (84.8 s against 88.4 s, two imports run side by side) for a cache 1.6% larger (2.70 GB against 2.66 GB).
DICT_LEVEL = 2


def register_dictionary(data: bytes) -> int:
    """Make a dictionary usable by ``seal`` and ``decode`` in this process; returns its id."""
    d = zstandard.ZstdCompressionDict(bytes(data))
    dict_id = int(d.dict_id())
    if dict_id == 0:
        raise CodecError("not a zstd dictionary (it has no id)")
    if dict_id not in _dictionaries:
        d.precompute_compress(level=DICT_LEVEL)  # digested once, not at every frame: an eighth faster per event
    with _dictionaries_lock:
        _dictionaries.setdefault(dict_id, d)
    return dict_id


def has_dictionary(dict_id: int) -> bool:
    return dict_id in _dictionaries


_dictionary_source: Callable[[int], bytes | None] | None = None


def set_dictionary_source(source: Callable[[int], bytes | None]) -> None:
    """Where a dictionary this process has not registered is looked for (the caches it has open), by id."""
    global _dictionary_source
    _dictionary_source = source


def _dict_zstd(dict_id: int) -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    pairs = getattr(_tls, "dicts", None)
    if pairs is None:
        pairs = _tls.dicts = {}
    pair = pairs.get(dict_id)
    if pair is None:
        d = _dictionaries.get(dict_id)
        if d is None and _dictionary_source is not None:
            data = _dictionary_source(dict_id)  # trained since its cache was opened here
            if data is not None:
                register_dictionary(data)
                d = _dictionaries.get(dict_id)
        if d is None:
            raise CodecError(f"this event was compressed with dictionary {dict_id}, which this process has not"
                             " loaded: open its cache with cxsync.cache.open_cache")
        pair = pairs[dict_id] = (zstandard.ZstdCompressor(level=DICT_LEVEL, dict_data=d),
                                 zstandard.ZstdDecompressor(dict_data=d))
    return pair
_SHORT = {  # compact wire names, stable forever for codec version 1
    "type": "t",
    "event_id": "i",
    "tenant": "n",
    "user": "u",
    "machine": "m",
    "timestamp": "s",
    "data": "d",
}
_LONG = {v: k for k, v in _SHORT.items()}


class CodecError(CxError):
    """An encoded event could not be decoded (unknown version, corrupt bytes, missing field)."""


utcnow_iso = clock.utcnow_iso


def make_event_id(event_type: str, tenant: str, *identity: str) -> str:
    """A deterministic id: the same (type, tenant, identity) always gives the same id."""
    h = hashlib.sha256()
    h.update(event_type.encode())
    for part in (tenant, *identity):
        h.update(b"\x00")
        h.update(part.encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class ContextEvent:
    type: str
    event_id: str
    tenant: str
    user: str
    machine: str
    timestamp: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A type this version does not know is carried, not refused: a newer agent on the same log writes it,
        # and a reader keeps it (``known`` is False) until an upgrade can materialise it.
        if not isinstance(self.type, str) or not self.type:
            raise ValueError(f"an event type is a non-empty string, not {self.type!r}")

    @property
    def wire(self) -> bytes | None:
        """The bytes this event was decoded from, if any: ``encode`` hands them back instead of compressing
        again, so an event read from the outbox or a log travels on exactly as it came (decoded once, at the
        edge).  Not a field: a copy made with ``dataclasses.replace`` (other data) does not inherit them."""
        wire = self.__dict__.get("_wire")
        if wire is None and isinstance(self.__dict__.get("_serialized"), bytes):
            wire = seal(self.__dict__["_serialized"])  # decoded from a cache-local payload: never sent as is
            object.__setattr__(self, "_wire", wire)
        return wire if isinstance(wire, bytes) else None

    @property
    def known(self) -> bool:
        """Whether this version of cxsync knows how to materialise the event."""
        return self.type in EVENT_TYPES

    @property
    def session(self) -> str | None:
        s = self.data.get("session")
        return s if isinstance(s, str) else None


def without(d: Mapping[str, Any], key: str) -> dict[str, Any]:
    """``d`` less ``key`` (which it holds), in its order."""
    out = dict(d)  # a copy, then one key less: a tenth of the time of a comprehension that skips it
    del out[key]
    return out


def serialize(event: ContextEvent) -> bytes:
    """Version 2: zstd( orjson(envelope) [ "\n" verbatim-line ]* ).  Verbatim transcript lines (the strings of a
    MessageIndexed's ``records``, the ``raw`` of a RecordsCaptured's records — JSON text already) travel after
    the envelope as they are, instead of being escaped again inside it: cheaper to write and to compress.  They
    never contain a newline (lines are split on newlines); if one ever did, it stays inside the envelope."""
    data = event.data
    records = data.get("records")
    tail = b""
    raws: list[str] | None = None
    if isinstance(records, list) and records:
        if all(isinstance(r, str) for r in records):
            raws, marker, kept = records, "R", None
        elif all(isinstance(r, dict) and isinstance(r.get("raw"), str) for r in records):
            raws, marker = [r["raw"] for r in records], "RR"
            kept = [without(r, "raw") for r in records]
        if raws is not None and not any("\n" in r for r in raws):
            data = without(data, "records")
            data[marker] = len(raws)
            if kept is not None:
                data["records"] = kept
            tail = b"\n" + "\n".join(raws).encode("utf-8", "surrogatepass")
    body = {
        "t": event.type,
        "i": event.event_id,
        "n": event.tenant,
        "u": event.user,
        "m": event.machine,
        "s": event.timestamp,
        "d": data,
    }
    return orjson.dumps(body) + tail


def seal(serialized: bytes, dictionary: int | None = None) -> bytes:
    """The wire form of a ``serialize``d event: the version byte, then zstd.  Split from ``serialize`` so a
    backfill can serialise in one process and compress in another.  With a registered ``dictionary``, the
    cache-local form (version 3) instead."""
    if dictionary is None:
        return bytes([CODEC_VERSION]) + _zstd()[0].compress(serialized)
    return bytes([CODEC_DICT]) + _dict_zstd(dictionary)[0].compress(serialized)


def wire_form(blob: bytes) -> bytes:
    """A stored payload as it may travel: a cache-local (version 3) one is recompressed without its dictionary."""
    if blob[:1] != bytes([CODEC_DICT]):
        return blob
    return seal(_unseal(blob))


def _unseal(blob: bytes) -> bytes:
    version = blob[0]
    if version == CODEC_VERSION:
        return bytes(_zstd()[1].decompress(blob[1:]))
    if version == CODEC_DICT:
        dict_id = zstandard.get_frame_parameters(blob[1:]).dict_id
        return bytes(_dict_zstd(dict_id)[1].decompress(blob[1:]))
    if version == CODEC_ZLIB:
        return zlib.decompress(blob[1:])
    raise CodecError(f"event codec version {version} is not supported by this cxsync (knows {CODEC_ZLIB} to"
                     f" {CODEC_DICT}): upgrade cxsync")


def serialized(blob: bytes) -> bytes:
    """The ``serialize``d bytes inside a payload of any version (what a dictionary is trained on)."""
    try:
        return _unseal(blob)
    except (zlib.error, zstandard.ZstdError) as exc:
        raise CodecError(f"corrupt event payload: {exc}") from exc


def encode(event: ContextEvent) -> bytes:
    if event.wire is not None:
        return event.wire
    return seal(serialize(event))


def decode(blob: bytes) -> ContextEvent:
    if not blob:
        raise CodecError("empty event payload")
    try:
        raw = _unseal(blob)
        head, sep, tail = raw.partition(b"\n")
        body = orjson.loads(head)
        if not isinstance(body, dict):
            raise ValueError("not an event object")
        data = body.get("d")
        if isinstance(data, dict) and ("R" in data or "RR" in data):
            n = data.pop("R") if "R" in data else data.pop("RR")
            raws = tail.decode("utf-8", "surrogatepass").split("\n") if sep else []
            if len(raws) != n:
                raise ValueError(f"expected {n} verbatim records, found {len(raws)}")
            if "records" in data:  # RecordsCaptured: each record's raw text goes back in place
                data["records"] = [{**r, "raw": raw} for r, raw in zip(data["records"], raws)]
            else:
                data["records"] = raws
        fields = {_LONG[k]: v for k, v in body.items() if k in _LONG}
        missing = [k for k in _SHORT if k != "data" and not isinstance(fields.get(k), str)]
        if missing:
            raise ValueError(f"missing or non-text field(s): {', '.join(missing)}")
        if not isinstance(fields.get("data", {}), dict):
            raise ValueError("the event data is not an object")
        event = ContextEvent(**fields)
        if blob[0] == CODEC_DICT:
            object.__setattr__(event, "_serialized", raw)  # ``wire`` compresses it again, plainly, if asked
        else:
            object.__setattr__(event, "_wire", bytes(blob))
        return event
    except (zlib.error, zstandard.ZstdError, orjson.JSONDecodeError, TypeError, ValueError, AttributeError,
            UnicodeDecodeError, KeyError) as exc:
        raise CodecError(f"corrupt event payload: {exc}") from exc


# ---- constructors -------------------------------------------------------------------------------------------




def message_indexed(ident: Identity, message: Mapping[str, Any]) -> ContextEvent:
    """A message (one user turn, one merged assistant response, one tool result …) entered the cache.

    The id covers the message key *and* its content hash: a split assistant response that grows as more of its
    lines arrive is re-announced with the merged content, and ``apply`` keeps the version with the most parts.
    """
    eid = make_event_id(MESSAGE_INDEXED, ident.tenant, message["session"], message["key"], message["hash"],
                        str(message.get("parts", 1)))
    return ContextEvent(MESSAGE_INDEXED, eid, ident.tenant, ident.user, ident.machine,
                        message.get("occurred_at") or utcnow_iso(), dict(message))


def session_started(ident: Identity, session: Mapping[str, Any]) -> ContextEvent:
    eid = make_event_id(SESSION_STARTED, ident.tenant, ident.user, session["session"])
    return ContextEvent(SESSION_STARTED, eid, ident.tenant, ident.user, ident.machine,
                        session.get("started_at") or utcnow_iso(), dict(session))


def session_ended(ident: Identity, session: str, message_count: int, ended_at: str) -> ContextEvent:
    eid = make_event_id(SESSION_ENDED, ident.tenant, ident.user, session, str(message_count))
    return ContextEvent(SESSION_ENDED, eid, ident.tenant, ident.user, ident.machine, ended_at,
                        {"session": session, "message_count": message_count, "ended_at": ended_at})


def records_captured(ident: Identity, session: str, records: Sequence[Mapping[str, Any]]) -> ContextEvent:
    """Non-conversational records (progress, snapshots, titles, unknown types) kept verbatim, not indexed."""
    keys = sorted(str(r["key"]) for r in records)
    eid = make_event_id(RECORDS_CAPTURED, ident.tenant, session, *keys)
    return ContextEvent(RECORDS_CAPTURED, eid, ident.tenant, ident.user, ident.machine, utcnow_iso(),
                        {"session": session, "records": [dict(r) for r in records]})


def knowledge_extracted(ident: Identity, knowledge: Mapping[str, Any], source_hashes: list[str]) -> ContextEvent:
    eid = make_event_id(KNOWLEDGE_EXTRACTED, ident.tenant, str(knowledge["id"]))
    return ContextEvent(KNOWLEDGE_EXTRACTED, eid, ident.tenant, ident.user, ident.machine, utcnow_iso(),
                        {"knowledge": dict(knowledge), "source_message_hashes": list(source_hashes)})


SHARED_SCOPES = ("user", "team", "project", "public")


def knowledge_shared(ident: Identity, knowledge_id: str, scope: str, project: str | None = None, *,
                     item: Mapping[str, Any] | None = None, shared: bool = True) -> ContextEvent:
    """A person shared an item with a scope (``shared``), or withdrew it.  Each act is its own event (its time is in
    the id), and the latest act per (item, scope) wins in every cache.  ``item`` travels along: subscribers of the
    scope never see the owner's private stream, where the item was extracted."""
    if scope not in SHARED_SCOPES:
        raise ValueError(f"shared scope must be one of {', '.join(SHARED_SCOPES)}, not {scope!r}")
    at = utcnow_iso()
    eid = make_event_id(KNOWLEDGE_SHARED, ident.tenant, ident.user, knowledge_id, scope, project or "",
                        "share" if shared else "unshare", at)
    data: dict[str, Any] = {"knowledge_id": knowledge_id, "scope": scope, "project": project, "shared": shared}
    if item is not None:
        data["knowledge"] = dict(item)
    return ContextEvent(KNOWLEDGE_SHARED, eid, ident.tenant, ident.user, ident.machine, at, data)


# ---- routing ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def project_stream_name(project: str | None) -> str | None:
    """The ``p/<name>`` stream of a project path: its last component, reduced to the stream alphabet."""
    if not project:
        return None
    import re

    base = project.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._-]", "-", base).strip("-.")[:128]
    return f"p/{name}" if name else None


def route(event: ContextEvent, publish: "tuple[str, ...] | list[str]") -> list[str]:
    """The streams a local event is published to, given the agent's ``sync.publish`` list.

    A user's own history goes to their ``u/`` streams and to the ``p/`` stream of its project when the agent
    publishes that project; knowledge goes where its share scope says.
    """
    if event.type == KNOWLEDGE_SHARED:
        scope = event.data.get("scope")
        if scope == "team":
            return ["team"]
        if scope == "project":
            p = event.data.get("project")
            return [f"p/{p}"] if p else []
        return [s for s in publish if s.startswith("u/")]
    out = [s for s in publish if s.startswith("u/")]
    pstream = project_stream_name(event.data.get("project") if isinstance(event.data.get("project"), str) else None)
    if pstream and pstream in publish:
        out.append(pstream)
    return out
