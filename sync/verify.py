"""``cxsync verify``: the seed's shadow read — the local cache compared with the log, event by event.

For each stream: the events the log holds that the cache lacks (``missing_local``), the events this machine's
outbox says were acknowledged that the log no longer holds (``missing_in_log``: a replaced or damaged log), and
events present on both sides whose content differs (``mismatched``), with message counts per session.  Outbox rows
not pushed yet are counted, not reported as differences.  ``repair`` applies what the cache lacks and re-appends
what the log lost (idempotent by event id on both sides); a content mismatch is reported only, since neither side
can be trusted over the other without a person looking.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import orjson

from cxsync.sync import events as ev
from cxsync.sync.port import EventLog
from cxsync.sync.redact import redact_event

PAGE = 1000


def digest(e: ev.ContextEvent) -> str:
    """A content hash of an event that does not depend on its encoding (codec version, compression)."""
    body = {"type": e.type, "event_id": e.event_id, "tenant": e.tenant, "user": e.user, "machine": e.machine,
            "timestamp": e.timestamp, "data": e.data}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)).hexdigest()


@dataclass
class StreamReport:
    stream: str
    log_events: int = 0
    local_events: int = 0
    pending: int = 0
    missing_local: list[str] = field(default_factory=list)
    missing_in_log: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    sessions: dict[str, dict[str, int]] = field(default_factory=dict)  # only sessions whose counts differ
    repaired: dict[str, int] = field(default_factory=dict)

    @property
    def differences(self) -> int:
        return len(self.missing_local) + len(self.missing_in_log) + len(self.mismatched)

    def as_dict(self) -> dict[str, Any]:
        return {"stream": self.stream, "log_events": self.log_events, "local_events": self.local_events,
                "pending": self.pending, "differences": self.differences, "missing_local": self.missing_local,
                "missing_in_log": self.missing_in_log, "mismatched": self.mismatched, "sessions": self.sessions,
                "repaired": self.repaired}


def _local_events(cache: Any, ids: Sequence[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for i in range(0, len(ids), 900):
        chunk = list(ids[i:i + 900])
        q = "SELECT event_id, payload FROM events WHERE event_id IN (%s)" % ",".join("?" * len(chunk))
        out.update((str(eid), bytes(p)) for eid, p in cache.conn.execute(q, chunk))
    return out


def _outbox(cache: Any, stream: str) -> list[tuple[int, str, str, bytes]]:
    """(outbox seq, event id, state, payload) of this machine's events routed to ``stream``."""
    return [(int(s), str(eid), str(st), bytes(p)) for s, eid, st, p in cache.conn.execute(
        "SELECT o.seq, e.event_id, o.state, e.payload FROM outbox o JOIN events e ON e.seq = o.event_seq"
        " WHERE o.stream = ? ORDER BY o.seq", (stream,))]


def _session(e: ev.ContextEvent) -> str | None:
    return e.session if e.type == ev.MESSAGE_INDEXED else None


def verify_stream(cache: Any, event_log: EventLog, stream: str, *, repair: bool = False) -> StreamReport:
    rep = StreamReport(stream)
    in_log: dict[str, ev.ContextEvent] = {}
    after: bytes | None = None
    while True:
        page = event_log.read(stream, after, PAGE)
        for entry in page:
            in_log[entry.event.event_id] = entry.event
        if len(page) < PAGE:
            break
        after = page[-1].cursor
    rep.log_events = len(in_log)
    local = _local_events(cache, list(in_log))
    outbox = _outbox(cache, stream)
    log_sessions: Counter[str] = Counter()
    local_sessions: Counter[str] = Counter()
    for eid, e in in_log.items():
        sid = _session(e)
        if sid:
            log_sessions[sid] += 1
        blob = local.get(eid)
        if blob is None:
            rep.missing_local.append(eid)
            continue
        if sid:
            local_sessions[sid] += 1
        try:
            mine = ev.decode(blob)
        except ev.CodecError:
            rep.mismatched.append(eid)
            continue
        if digest(mine) != digest(e) and not (e.data.get("redacted") and digest(redact_event(mine)) == digest(e)):
            rep.mismatched.append(eid)
    lost: list[tuple[int, ev.ContextEvent]] = []
    for seq, eid, state, payload in outbox:
        if eid in in_log or state == "quarantined":
            continue
        if state == "pending":
            rep.pending += 1
            continue
        rep.missing_in_log.append(eid)
        try:
            e = ev.decode(payload)
        except ev.CodecError:
            continue
        lost.append((seq, e))
        sid = _session(e)
        if sid:
            local_sessions[sid] += 1
    rep.local_events = len(local) + len(rep.missing_in_log)
    rep.sessions = {s: {"log": log_sessions[s], "local": local_sessions[s]}
                    for s in sorted(set(log_sessions) | set(local_sessions)) if log_sessions[s] != local_sessions[s]}
    if repair:
        rep.repaired = _repair(cache, event_log, stream, [in_log[i] for i in rep.missing_local], lost)
    return rep


def _repair(cache: Any, event_log: EventLog, stream: str, missing: list[ev.ContextEvent],
            lost: list[tuple[int, ev.ContextEvent]]) -> dict[str, int]:
    applied = 0
    for i in range(0, len(missing), 500):
        applied += cache.apply(missing[i:i + 500], "remote").applied
    republished = 0
    for i in range(0, len(lost), 500):
        chunk = lost[i:i + 500]
        cursors = event_log.append(stream, [e for _, e in chunk])
        cache.ack([(seq, c) for (seq, _), c in zip(chunk, cursors)])
        republished += len(chunk)
    return {"applied": applied, "republished": republished}


def verify(cache: Any, event_log: EventLog, streams: Iterable[str], *, repair: bool = False) -> list[StreamReport]:
    return [verify_stream(cache, event_log, s, repair=repair) for s in streams]
