"""A reference model of the EventLog port, and a way to run one operation sequence on any log and compare.

``ModelLog`` keeps the whole log in memory with the simplest possible code: one global commit counter, a list of
entries and an id index per (tenant, stream).  It issues cursors in the port's format (8-byte commit version,
2-byte batch order 0, 2-byte position in the batch), so it runs through the contract suite like any adapter —
which is what makes it trustworthy as a reference.

``random_ops(seed, n)`` draws a sequence of appends (with replays, overlaps, in-batch duplicates, foreign-tenant
events, bad stream names), reads (from the start or after any cursor seen so far, with small limits) and
zero-timeout waits over two tenants, two clients each, three streams.  ``run_ops(open_log, ops)`` executes it and
returns a transcript in which cursors are replaced by labels given in order of first sight, plus the total order
of all cursors and a final dump of every stream.  Two logs with the same semantics give equal transcripts
whatever their cursor values, so the same seed can be compared between the model, the SQLite log, the FDB
emulation and a real cluster (``transcript_json`` for comparing across processes).
"""

from __future__ import annotations

import json
import random
import struct
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from cxsync.sync.events import ContextEvent
from cxsync.sync.port import (
    EventLog,
    LogEntry,
    PermanentLogError,
    check_cursor,
    validate_name,
    validate_stream,
)
from tests.helpers import make_event

_CURSOR = struct.Struct(">QHH")


class ModelStore:
    """What several ModelLog clients share: the whole log."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.version = 0
        self.entries: dict[tuple[str, str], list[LogEntry]] = defaultdict(list)
        self.ids: dict[tuple[str, str], dict[str, bytes]] = defaultdict(dict)


class ModelLog:
    """The port's semantics, plainly (see the module docstring)."""

    def __init__(self, store: ModelStore, tenant: str) -> None:
        self.tenant = validate_name("tenant", tenant)
        self._store = store

    def append(self, stream: str, events: Sequence[ContextEvent]) -> list[bytes]:
        validate_stream(stream)
        events = list(events)
        foreign = [e.event_id for e in events if e.tenant != self.tenant]
        if foreign:
            raise PermanentLogError(f"events of another tenant: {foreign}", foreign)
        key = (self.tenant, stream)
        with self._store.cond:
            ids = self._store.ids[key]
            new = {}
            for i, e in enumerate(events):
                if e.event_id not in ids and e.event_id not in new:
                    new[e.event_id] = i
            if new:
                self._store.version += 1
                for event_id, i in new.items():
                    cursor = _CURSOR.pack(self._store.version, 0, i)
                    ids[event_id] = cursor
                    self._store.entries[key].append(LogEntry(cursor, events[i]))
                self._store.cond.notify_all()
            return [ids[e.event_id] for e in events]

    def read(self, stream: str, after: bytes | None, limit: int = 1000) -> list[LogEntry]:
        validate_stream(stream)
        after = check_cursor(after)
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        with self._store.cond:
            entries = self._store.entries[(self.tenant, stream)]
            return [e for e in entries if after is None or e.cursor > after][:limit]

    def wait(self, stream: str, after: bytes | None, timeout: float) -> bool:
        validate_stream(stream)
        after = check_cursor(after)
        key = (self.tenant, stream)

        def newer() -> bool:
            entries = self._store.entries[key]
            return bool(entries) and (after is None or entries[-1].cursor > after)

        with self._store.cond:
            return self._store.cond.wait_for(newer, max(0.0, timeout))

    def close(self) -> None:
        pass


# ---- operation sequences ----------------------------------------------------------------------------------

TENANTS = ("acme", "globex")
CLIENTS = 2
STREAMS = ("team", "u/alice", "p/web")
BAD_STREAM = "teams/x"
POOL = 12  # event keys per tenant: small, so that replays and overlaps are frequent


@dataclass(frozen=True)
class Op:
    kind: str  # "append" | "read" | "wait"
    tenant: int  # index into TENANTS
    client: int
    stream: str
    keys: tuple[int, ...] = ()  # pool indices; appended as events of the client's tenant
    foreign: bool = False  # add an event of the other tenant: the whole batch must be refused
    after: int | None = None  # index (modulo) into the cursors seen so far; None = from the start
    limit: int = 1000


def random_ops(seed: int, n: int = 150) -> list[Op]:
    rng = random.Random(seed)
    ops: list[Op] = []
    for _ in range(n):
        tenant, client = rng.randrange(len(TENANTS)), rng.randrange(CLIENTS)
        stream = BAD_STREAM if rng.random() < 0.04 else rng.choice(STREAMS)
        after = None if rng.random() < 0.3 else rng.randrange(1 << 16)
        roll = rng.random()
        if roll < 0.5:
            keys = tuple(rng.randrange(POOL) for _ in range(rng.randint(1, 5)))
            # A foreign event only in a batch that is otherwise valid: which of two faults an adapter reports
            # first is not part of the contract.
            foreign = stream != BAD_STREAM and rng.random() < 0.05
            ops.append(Op("append", tenant, client, stream, keys, foreign=foreign))
        elif roll < 0.85:
            ops.append(Op("read", tenant, client, stream, after=after, limit=rng.choice((1, 2, 3, 1000))))
        else:
            ops.append(Op("wait", tenant, client, stream, after=after))
    return ops


def run_ops(open_log: Callable[[str], EventLog], ops: Sequence[Op]) -> list[Any]:
    """Run ``ops`` on fresh clients from ``open_log(tenant)``; return the normalised transcript."""
    clients = {(t, c): open_log(TENANTS[t]) for t in range(len(TENANTS)) for c in range(CLIENTS)}
    labels: dict[bytes, int] = {}
    seen: list[bytes] = []

    def label(cursor: bytes) -> int:
        assert isinstance(cursor, bytes) and len(cursor) == 12, cursor
        if cursor not in labels:
            labels[cursor] = len(seen)
            seen.append(cursor)
        return labels[cursor]

    def event(t: int, key: int) -> ContextEvent:
        return make_event(clients[(t, 0)].tenant, f"k{key}", n=key)

    transcript: list[Any] = []
    for op in ops:
        log = clients[(op.tenant, op.client)]
        after = seen[op.after % len(seen)] if op.after is not None and seen else None
        head: tuple[Any, ...] = (op.kind, op.tenant, op.client, op.stream)
        try:
            if op.kind == "append":
                batch = [event(op.tenant, k) for k in op.keys]
                if op.foreign:
                    batch.insert(len(batch) // 2, event(1 - op.tenant, POOL))
                result: Any = [label(c) for c in log.append(op.stream, batch)]
            elif op.kind == "read":
                entries = log.read(op.stream, after, op.limit)
                assert all(after is None or e.cursor > after for e in entries), "read returned a cursor not after"
                assert [e.cursor for e in entries] == sorted({e.cursor for e in entries}), "read out of order"
                for e in entries:  # what comes back is exactly what went in
                    assert e.event == event(op.tenant, int(e.event.event_id[1:])), e.event
                result = [(label(e.cursor), e.event.event_id) for e in entries]
            else:
                result = log.wait(op.stream, after, 0)
        except PermanentLogError as exc:
            result = ("PermanentLogError", sorted(exc.event_ids))
        except ValueError:
            result = ("ValueError",)
        transcript.append([*head, result])
    for t in range(len(TENANTS)):
        for stream in STREAMS:
            entries = clients[(t, 1)].read(stream, None, 10_000)
            transcript.append(["final", t, stream, [(label(e.cursor), e.event.event_id) for e in entries]])
    transcript.append(["order", [labels[c] for c in sorted(seen)]])
    for log in clients.values():
        log.close()
    return transcript


def model_transcript(ops: Sequence[Op]) -> list[Any]:
    store = ModelStore()
    return run_ops(lambda tenant: ModelLog(store, tenant), ops)


def first_difference(a: Sequence[Any], b: Sequence[Any]) -> str:
    """A readable account of where two transcripts part ways ("" when they are equal)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"step {i}: {x!r} != {y!r}"
    if len(a) != len(b):
        return f"lengths differ: {len(a)} != {len(b)}"
    return ""


def transcript_json(transcript: Sequence[Any]) -> str:
    """A stable text form, to compare runs made in different processes (e.g. emulation vs a real cluster)."""
    return json.dumps(transcript, sort_keys=True, separators=(",", ":"))
