"""The FoundationDB adapter on the emulated native layer: key layout, exactly-once under injected faults,
ordering under concurrent clients, chunking, watches, quotas, and the binding's set-up errors.

The emulation replaces only ``fdb.impl``; the official ``fdb.tuple`` and ``fdb.Subspace`` run unchanged, so every
key below is decoded by the real tuple layer.
"""

from __future__ import annotations

import base64
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

if os.environ.get("CXSYNC_FDB_CLUSTER_FILE"):
    # the emulation replaces the native layer for the whole process; a real-cluster run keeps the real one
    pytest.skip("CXSYNC_FDB_CLUSTER_FILE is set: the emulation cannot share a process with a real cluster",
                allow_module_level=True)

from tests.fdbemu import FaultPlan, cluster_for, install, open_client, reset_all  # noqa: E402

API_VERSION = int(os.environ.get("CXSYNC_FDB_API_VERSION", "730"))
fdb = install(api_version=API_VERSION)  # fdb.tuple, the official tuple layer, comes with it

from cxsync.sync import fdb_log  # noqa: E402
from cxsync.sync.events import (  # noqa: E402
    ContextEvent,
    Identity,
    encode,
    knowledge_extracted,
    knowledge_shared,
    message_indexed,
)
from cxsync.sync.fdb_log import FdbEventLog, LogConfigError, Quota  # noqa: E402
from cxsync.sync.keys import Keys  # noqa: E402
from cxsync.sync.port import PermanentLogError, QuotaExceeded, TransientLogError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ALICE = Identity("acme", "alice", "laptop")
BOB = Identity("acme", "bob", "desktop")


@pytest.fixture(autouse=True)
def _fresh_clusters() -> Iterator[None]:
    reset_all()
    yield
    reset_all()


@pytest.fixture
def cluster_file(tmp_path: Path) -> str:
    return str(tmp_path / "fdb.cluster")


@pytest.fixture
def log(cluster_file: str) -> Iterator[FdbEventLog]:
    with FdbEventLog("acme", cluster_file=cluster_file) as lg:
        yield lg


def msg(n: int, *, ident: Identity = ALICE, session: str = "s1", content: str | None = None,
        project: str | None = None) -> ContextEvent:
    m: dict[str, Any] = {"session": session, "key": f"k{n}", "hash": f"h{n:06d}",
                         "occurred_at": f"2025-01-02T03:04:{n % 60:02d}.{n:06d}Z", "role": "user",
                         "content": content if content is not None else f"message {n}"}
    if project:
        m["project"] = project
    return message_indexed(ident, m)


def raw_items(db: Any, prefix: tuple[Any, ...] = ("coditect",)) -> list[tuple[tuple[Any, ...], bytes]]:
    """Every key under the prefix, decoded by the official tuple layer."""
    r = fdb.tuple.range(prefix)
    return [(fdb.tuple.unpack(bytes(kv.key)), bytes(kv.value)) for kv in db.get_range(r.start, r.stop)]


def vs_bytes(vs: Any) -> bytes:
    assert isinstance(vs, fdb.tuple.Versionstamp) and vs.is_complete()
    return bytes(vs.to_bytes())


# ---- key layout --------------------------------------------------------------------------------------------


def test_every_key_is_tenant_first_and_views_commit_with_their_event(log: FdbEventLog) -> None:
    e = msg(1, project="web")
    (cursor,) = log.append("p/web", [e])
    items = dict(raw_items(log.database))
    for key in items:
        assert key[:3] == ("coditect", "events", "acme") or key[:4] == ("coditect", "context", "tenants", "acme")

    logs = [k for k in items if k[:4] == ("coditect", "events", "acme", "p/web")]
    assert len(logs) == 1 and len(logs[0]) == 5 and vs_bytes(logs[0][4]) == cursor
    assert items[logs[0]] == encode(e)
    assert items[("coditect", "events", "acme", "heads", "p/web")] == cursor
    assert items[("coditect", "events", "acme", "event-ids", "p/web", e.event_id)] == cursor

    ts = 1735787041000001  # 2025-01-02T03:04:01.000001Z in microseconds since the epoch
    user_view = ("coditect", "context", "tenants", "acme", "users", "alice", "sessions", "s1", "messages", ts,
                 "h000001")
    project_view = ("coditect", "context", "tenants", "acme", "projects", "web", "messages", ts, "h000001")
    for view in (user_view, project_view):
        stream, vs = fdb.tuple.unpack(items[view])
        # the versionstamp in the view equals the log key's: only one commit can produce both
        assert stream == "p/web" and vs_bytes(vs) == cursor
    usage = {k[-1]: int.from_bytes(v, "little") for k, v in items.items() if k[-2:-1] == ("usage",)}
    assert usage == {"events": 1, "bytes": len(encode(e))}


def test_knowledge_is_indexed_and_shares_file_it_under_team_and_project_views(log: FdbEventLog) -> None:
    k = knowledge_extracted(ALICE, {"id": "k-42", "type": "decision", "text": "use FDB"}, ["h1"])
    (kc,) = log.append("u/alice", [k])
    log.append("team", [knowledge_shared(ALICE, "k-42", "team")])
    log.append("p/web", [knowledge_shared(ALICE, "k-42", "project", "web")])
    # extraction and share in one batch (one transaction): resolved without reading the unreadable index
    p = knowledge_extracted(BOB, {"id": "k-7", "type": "error_solution"}, [])
    pc, _ = log.append("p/api", [p, knowledge_shared(BOB, "k-7", "project", "api")])

    items = dict(raw_items(log.database, ("coditect", "context", "tenants", "acme")))
    base = ("coditect", "context", "tenants", "acme")
    stream, vs, kind = fdb.tuple.unpack(items[base + ("knowledge", "k-42")])
    assert (stream, vs_bytes(vs), kind) == ("u/alice", kc, "decisions")
    for view in (base + ("shared", "decisions", "k-42"), base + ("projects", "web", "knowledge", "k-42")):
        stream, vs = fdb.tuple.unpack(items[view])
        assert (stream, vs_bytes(vs)) == ("u/alice", kc)
    stream, vs = fdb.tuple.unpack(items[base + ("projects", "api", "knowledge", "k-7")])
    assert (stream, vs_bytes(vs)) == ("p/api", pc)
    assert base + ("shared", "errors", "k-7") not in items  # shared/ is filled only by a team share


def test_tenants_and_streams_never_share_a_range(cluster_file: str) -> None:
    a, b = Keys("acme"), Keys("acme2")
    for (a0, a1) in a.tenant_ranges():
        for (b0, b1) in b.tenant_ranges():
            assert a1 <= b0 or b1 <= a0
    team, users = a.log_range("team"), a.log_range("u/team")
    assert team[1] <= users[0] or users[1] <= team[0]
    with FdbEventLog("acme", cluster_file=cluster_file) as la, FdbEventLog("acme2", cluster_file=cluster_file) as lb:
        la.append("team", [msg(1)])
        lb.append("team", [msg(2, ident=Identity("acme2", "alice", "m"))])
        assert [x.event.tenant for x in la.read("team", None)] == ["acme"]
        assert [x.event.tenant for x in lb.read("team", None)] == ["acme2"]


@pytest.mark.parametrize("tenant", ["", "a/b", "-x", "a" * 129, "é"])
def test_invalid_tenant_names_are_refused_before_any_key_is_built(tenant: str) -> None:
    with pytest.raises(ValueError):
        Keys(tenant)


def test_invalid_streams_are_refused(log: FdbEventLog) -> None:
    for stream in ("heads", "event-ids", "chunks", "u/", "p/a/b", "x"):
        with pytest.raises(ValueError):
            log.append(stream, [msg(1)])
        with pytest.raises(ValueError):
            log.read(stream, None)


# ---- append: idempotency and exactly-once --------------------------------------------------------------------


def test_replay_returns_original_cursors_and_writes_nothing(log: FdbEventLog) -> None:
    events = [msg(i) for i in range(5)]
    first = log.append("u/alice", events)
    before = raw_items(log.database)
    again = log.append("u/alice", [events[3], events[0], events[3]])
    assert again == [first[3], first[0], first[3]]
    assert raw_items(log.database) == before
    assert first == sorted(first) and len(set(first)) == 5


def test_duplicates_inside_one_batch_are_written_once(log: FdbEventLog) -> None:
    e = msg(1)
    cursors = log.append("u/alice", [e, msg(2), e])
    assert cursors[0] == cursors[2] != cursors[1]
    assert [x.event.event_id for x in log.read("u/alice", None)] == [e.event_id, msg(2).event_id]


def test_exactly_once_when_commits_fail_and_some_failures_were_applied(log: FdbEventLog, cluster_file: str) -> None:
    cluster = cluster_for(cluster_file)
    cluster.set_faults(FaultPlan(commit_failure_rate=0.1, unknown_result_fraction=1 / 3, read_failure_rate=0.0,
                                 seed=7))
    rng = random.Random(7)
    events = [msg(i) for i in range(500)]
    batches: list[list[ContextEvent]] = []
    i = 0
    while i < len(events):
        n = rng.randint(1, 5)
        batches.append(events[i:i + n])
        i += n
    cursors: dict[str, bytes] = {}
    for batch in batches:
        for _attempt in range(20):  # the push loop's retry: the same batch again after a transient failure
            try:
                got = log.append("u/alice", batch)
                break
            except TransientLogError:
                continue
        else:
            pytest.fail("20 transient failures in a row")
        for e, c in zip(batch, got, strict=True):
            assert cursors.setdefault(e.event_id, c) == c
    cluster.set_faults(None)

    replayed = log.append("u/alice", events)
    assert replayed == [cursors[e.event_id] for e in events]
    entries = log.read("u/alice", None, limit=10_000)
    assert [x.event.event_id for x in entries] == [e.event_id for e in events]
    assert [x.cursor for x in entries] == [cursors[e.event_id] for e in events]
    assert log.usage()["events"] == len(events)
    # the faults really happened, so a non-idempotent append would have written some events twice
    assert cluster.stats.injected_1021_applied >= 3 and cluster.stats.injected_1020 >= 5, cluster.stats


class _GatedDatabase:
    """A Database whose transactions call hooks at chosen points: ``before_commit`` just before the first
    commit (to slip another client's commit between a transaction's reads and its commit) and ``on_watch``
    with each watch future the adapter creates (to make it fail)."""

    def __init__(self, db: Any, before_commit: Any = None, on_watch: Any = None, on_range: Any = None) -> None:
        self._db, self._hooks = db, (before_commit, on_watch, on_range)

    def create_transaction(self) -> Any:
        return _GatedTransaction(self._db.create_transaction(), *self._hooks)


class _GatedTransaction:
    def __init__(self, tr: Any, before_commit: Any, on_watch: Any, on_range: Any) -> None:
        self._tr, self._before_commit, self._on_watch, self._on_range = tr, before_commit, on_watch, on_range

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tr, name)

    def commit(self) -> Any:
        hook, self._before_commit = self._before_commit, None
        if hook is not None:
            hook()
        return self._tr.commit()

    def get_range(self, begin: Any, end: Any, limit: int = 0, **kwargs: Any) -> Any:
        if self._on_range is not None:
            self._on_range(limit)
        return self._tr.get_range(begin, end, limit=limit, **kwargs)

    def watch(self, key: bytes) -> Any:
        future = self._tr.watch(key)
        if self._on_watch is not None:
            self._on_watch(future)
        return future


def test_two_clients_racing_to_append_the_same_events_write_them_once(cluster_file: str) -> None:
    """Two machines pushing the same captured lines: the dedup read conflicts, the loser's retry finds the
    winner's keys, and both get the winner's cursors."""
    batch = [msg(i) for i in range(4)]
    winner = FdbEventLog("acme", database=open_client(cluster_file))
    won: list[list[bytes]] = []
    loser = FdbEventLog("acme", database=_GatedDatabase(
        open_client(cluster_file), before_commit=lambda: won.append(winner.append("team", batch))))
    lost = loser.append("team", batch)
    assert won and lost == won[0]
    entries = winner.read("team", None)
    assert [x.event for x in entries] == batch and [x.cursor for x in entries] == lost
    assert cluster_for(cluster_file).stats.conflicts == 1


def test_a_commit_that_lands_after_its_timeout_fired_is_not_written_twice(log: FdbEventLog,
                                                                           cluster_file: str) -> None:
    """1031 is not retryable inside the adapter (the commit may still land): it surfaces as transient, and the
    caller's retry of the same batch finds the dedup keys."""
    cluster = cluster_for(cluster_file)
    cluster.set_faults(FaultPlan(commit_timeout_rate=0.3, seed=11))
    events = [msg(i) for i in range(60)]
    transient = 0
    for i in range(0, len(events), 4):
        while True:
            try:
                log.append("u/alice", events[i:i + 4])
                break
            except TransientLogError:
                transient += 1
    cluster.set_faults(None)
    assert transient > 0 and cluster.stats.injected_1031_applied == transient
    assert [x.event.event_id for x in log.read("u/alice", None)] == [e.event_id for e in events]


def test_concurrent_clients_never_put_an_event_behind_a_readers_cursor(cluster_file: str) -> None:
    cluster_for(cluster_file).set_faults(FaultPlan(commit_failure_rate=0.05, unknown_result_fraction=1 / 3,
                                                   read_failure_rate=0.0, seed=3))
    writers, per_writer = 4, 60
    stop = threading.Event()
    seen: list[tuple[bytes, str]] = []
    errors: list[BaseException] = []

    def write(w: int) -> None:
        # each writer is its own client: its own Database from fdb.open
        lg = FdbEventLog("acme", database=open_client(cluster_file))
        ident = Identity("acme", f"user{w}", f"m{w}")
        try:
            for j in range(0, per_writer, 3):
                batch = [msg(w * 1000 + j + d, ident=ident) for d in range(3)]
                while True:
                    try:
                        lg.append("team", batch)
                        break
                    except TransientLogError:
                        continue
        except BaseException as exc:  # surfaced by the main thread
            errors.append(exc)

    def read() -> None:
        lg = FdbEventLog("acme", database=open_client(cluster_file))
        cursor = None
        try:
            while True:
                done = stop.is_set()
                for entry in lg.read("team", cursor, limit=50):
                    seen.append((entry.cursor, entry.event.event_id))
                    cursor = entry.cursor
                if done:
                    break
                lg.wait("team", cursor, 0.05)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,), name=f"writer-{w}") for w in range(writers)]
    reader = threading.Thread(target=read, name="reader")
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    cluster_for(cluster_file).set_faults(None)
    stop.set()
    reader.join(30)
    assert not errors, errors
    assert not reader.is_alive()

    with FdbEventLog("acme", cluster_file=cluster_file) as lg:
        final = [(x.cursor, x.event.event_id) for x in lg.read("team", None, limit=10_000)]
    # the reader's incremental view is exactly the final log: nothing ever appeared behind its cursor
    assert seen == final
    assert len(final) == writers * per_writer == len({eid for _, eid in final})
    assert [c for c, _ in final] == sorted(c for c, _ in final)


def test_a_large_batch_is_split_into_several_bounded_transactions(cluster_file: str) -> None:
    with FdbEventLog("acme", cluster_file=cluster_file, max_batch_bytes=4_000) as lg:
        events = [msg(i, content="x" * 500 + str(i)) for i in range(40)]
        cursors = lg.append("u/alice", events)
        assert cursors == sorted(cursors)
        assert len({c[:10] for c in cursors}) > 5  # several commits, so several versionstamps
        assert [x.cursor for x in lg.read("u/alice", None)] == cursors
        assert lg.append("u/alice", events) == cursors


# ---- chunking ----------------------------------------------------------------------------------------------


def test_a_multi_megabyte_event_is_chunked_and_round_trips(log: FdbEventLog) -> None:
    big = base64.b64encode(random.Random(1).randbytes(1_500_000)).decode()  # incompressible: ~1.1 MB encoded
    events = [msg(1), msg(2, content=big), msg(3)]
    cursors = log.append("u/alice", events)
    entries = log.read("u/alice", None)
    assert [x.event for x in entries] == events and [x.cursor for x in entries] == cursors

    items = raw_items(log.database, ("coditect", "events", "acme"))
    assert all(len(v) <= 100_000 for _, v in items)
    chunks = [(k, v) for k, v in items if k[3] == "chunks"]
    assert len(chunks) >= 10 and {vs_bytes(k[5]) for k, _ in chunks} == {cursors[1]}
    assert b"".join(v for _, v in chunks) == encode(events[1])
    manifest = next(v for k, v in items if k[3] == "u/alice" and vs_bytes(k[4]) == cursors[1])
    assert manifest[:1] == b"\x00"
    assert log.read("u/alice", cursors[0], limit=1)[0].event == events[1]


def test_an_event_too_large_for_one_transaction_is_refused_permanently(log: FdbEventLog,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fdb_log, "MAX_EVENT_BYTES", 50_000)
    big = msg(2, content=base64.b64encode(random.Random(2).randbytes(80_000)).decode())
    with pytest.raises(PermanentLogError) as info:
        log.append("u/alice", [msg(1), big])
    assert info.value.event_ids == [big.event_id]
    assert raw_items(log.database) == []


# ---- read --------------------------------------------------------------------------------------------------


def test_read_pages_in_short_transactions_and_resumes_strictly_after_the_cursor(
        log: FdbEventLog, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fdb_log, "READ_PAGE_KEYS", 3)
    cursors = log.append("u/alice", [msg(i) for i in range(10)])
    log.append("u/bob", [msg(100, ident=BOB)])
    assert [x.cursor for x in log.read("u/alice", None, limit=7)] == cursors[:7]
    assert [x.cursor for x in log.read("u/alice", cursors[6])] == cursors[7:]
    assert log.read("u/alice", cursors[-1]) == []
    for bad in (0, -1):
        with pytest.raises(ValueError):
            log.read("u/alice", None, limit=bad)
    with pytest.raises(ValueError):
        log.read("u/alice", b"short")


def test_a_page_that_outlives_five_seconds_is_retried_smaller(cluster_file: str) -> None:
    big = msg(2, content=base64.b64encode(random.Random(3).randbytes(300_000)).decode())
    events = [msg(1), big, msg(3)]
    cursors = FdbEventLog("acme", cluster_file=cluster_file).append("u/alice", events)
    limits: list[int] = []

    def slow_storage(limit: int) -> None:
        limits.append(limit)
        if len(limits) == 2:  # between the page read and its chunk read: the read version grows too old
            cluster_for(cluster_file).advance_time(6)

    lg = FdbEventLog("acme", database=_GatedDatabase(open_client(cluster_file), on_range=slow_storage))
    entries = lg.read("u/alice", None)
    assert [x.event for x in entries] == events and [x.cursor for x in entries] == cursors
    assert cluster_for(cluster_file).stats.too_old >= 1
    assert limits[0] == fdb_log.READ_PAGE_KEYS and 0 < limits[2] < limits[0]  # the retry asked for less


def test_a_page_stops_early_when_its_chunked_events_are_large(log: FdbEventLog, cluster_file: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fdb_log, "READ_PAGE_BYTES", 250_000)
    rng = random.Random(4)
    events = [msg(i, content=base64.b64encode(rng.randbytes(150_000)).decode()) for i in range(4)] + [msg(9)]
    cursors = log.append("u/alice", events)
    grvs = cluster_for(cluster_file).stats.grvs
    entries = log.read("u/alice", None)
    assert [x.cursor for x in entries] == cursors and [x.event for x in entries] == events
    assert cluster_for(cluster_file).stats.grvs - grvs >= 3  # one short transaction per ~250 kB page


# ---- wait --------------------------------------------------------------------------------------------------


def test_wait_answers_at_once_when_something_newer_exists(log: FdbEventLog, cluster_file: str) -> None:
    (c,) = log.append("u/alice", [msg(1)])
    assert log.wait("u/alice", None, 5) is True
    assert log.wait("u/alice", c, 0) is False
    assert cluster_for(cluster_file).stats.watches_armed == 0  # answered by reading the head alone
    t0 = time.monotonic()
    assert log.wait("u/alice", c, 0.2) is False
    assert 0.15 < time.monotonic() - t0 < 2


def test_wait_wakes_on_an_append_by_another_client(log: FdbEventLog, cluster_file: str) -> None:
    (c,) = log.append("u/alice", [msg(1)])
    other = FdbEventLog("acme", database=open_client(cluster_file))
    timer = threading.Timer(0.2, lambda: other.append("u/alice", [msg(2)]))
    t0 = time.monotonic()
    timer.start()
    try:
        assert log.wait("u/alice", c, 10) is True
    finally:
        timer.join()
    assert time.monotonic() - t0 < 3
    stats = cluster_for(cluster_file).stats
    assert stats.watches_armed >= 1 and stats.watches_fired >= 1  # woken by the watch, not by polling
    assert log.wait("u/bob", None, 0.1) is False  # a different stream's head did not move


def test_wait_survives_the_watch_limit_by_polling(cluster_file: str) -> None:
    cluster_for(cluster_file).max_watches = 0  # every watch fails with 1032 too_many_watches
    with FdbEventLog("acme", cluster_file=cluster_file, watch_fallback_interval=0.1) as lg:
        (c,) = lg.append("u/alice", [msg(1)])
        assert lg.wait("u/alice", c, 0.3) is False
        timer = threading.Timer(0.2, lambda: lg.append("u/alice", [msg(2)]))
        timer.start()
        try:
            assert lg.wait("u/alice", c, 5) is True
        finally:
            timer.join()


def test_wait_survives_a_watch_cancelled_under_it(cluster_file: str) -> None:
    """A watch that fails (1101 operation_cancelled here) is re-armed after a bounded pause, never raised."""
    cancelled: list[Any] = []

    def cancel_soon(future: Any) -> None:
        if len(cancelled) < 2:  # the first two watches die shortly after they are armed
            cancelled.append(future)
            threading.Timer(0.05, future.cancel).start()

    writer = FdbEventLog("acme", cluster_file=cluster_file)
    (c,) = writer.append("u/alice", [msg(1)])
    lg = FdbEventLog("acme", database=_GatedDatabase(open_client(cluster_file), on_watch=cancel_soon),
                     watch_fallback_interval=0.1)
    t0 = time.monotonic()
    assert lg.wait("u/alice", c, 0.4) is False
    assert time.monotonic() - t0 >= 0.35 and len(cancelled) == 2  # kept waiting through both failures
    timer = threading.Timer(0.2, lambda: writer.append("u/alice", [msg(2)]))
    timer.start()
    try:
        assert lg.wait("u/alice", c, 5) is True
    finally:
        timer.join()
    with pytest.raises(fdb.FDBError) as info:
        cancelled[0].wait()
    assert info.value.code == 1101


def test_close_cancels_a_pending_wait(cluster_file: str) -> None:
    lg = FdbEventLog("acme", cluster_file=cluster_file)
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(lg.wait("u/alice", None, 30)), name="waiter")
    t.start()
    time.sleep(0.2)
    lg.close()
    t.join(5)
    assert not t.is_alive() and result == [False]
    with pytest.raises(PermanentLogError, match="closed"):
        lg.append("u/alice", [msg(1)])
    with pytest.raises(PermanentLogError, match="closed"):
        lg.read("u/alice", None)
    with pytest.raises(PermanentLogError, match="closed"):
        lg.wait("u/alice", None, 1)


# ---- quotas and permanent errors ---------------------------------------------------------------------------


def test_quota_exceeded_is_permanent_names_the_refused_events_and_writes_nothing(cluster_file: str) -> None:
    with FdbEventLog("acme", cluster_file=cluster_file, quota=Quota(max_events=3)) as lg:
        kept = lg.append("u/alice", [msg(1), msg(2)])
        before = raw_items(lg.database)
        batch = [msg(3), msg(4), msg(5)]
        for _ in range(2):  # permanent: the same batch fails the same way
            with pytest.raises(QuotaExceeded) as info:
                lg.append("u/alice", batch)
            assert isinstance(info.value, PermanentLogError)
            assert info.value.event_ids == [batch[1].event_id, batch[2].event_id]
            assert "quota" in str(info.value)
        assert raw_items(lg.database) == before
        assert lg.append("u/alice", [msg(1), msg(2)]) == kept  # replays are not new usage
        assert lg.append("u/alice", [msg(3)])  # the one that fits still does


def test_byte_quota_counts_encoded_sizes(cluster_file: str) -> None:
    e1, e2 = msg(1), msg(2, content="y" * 2000)
    with FdbEventLog("acme", cluster_file=cluster_file, quota=Quota(max_bytes=len(encode(e1)) + 10)) as lg:
        lg.append("u/alice", [e1])
        with pytest.raises(QuotaExceeded) as info:
            lg.append("u/alice", [e2])
        assert info.value.event_ids == [e2.event_id]
        assert lg.usage() == {"events": 1, "bytes": len(encode(e1))}


def test_events_of_another_tenant_are_refused(log: FdbEventLog) -> None:
    stranger = msg(1, ident=Identity("globex", "alice", "m"))
    with pytest.raises(PermanentLogError) as info:
        log.append("u/alice", [msg(2), stranger])
    assert info.value.event_ids == [stranger.event_id]
    assert log.read("u/alice", None) == []


def test_an_unreachable_cluster_is_a_transient_error_not_a_hang(cluster_file: str) -> None:
    cluster_for(cluster_file).set_faults(FaultPlan(commit_failure_rate=1.0, unknown_result_fraction=0.0,
                                                   read_failure_rate=1.0, seed=1))
    with FdbEventLog("acme", cluster_file=cluster_file, retry_limit=3, operation_timeout=5) as lg:
        t0 = time.monotonic()
        with pytest.raises(TransientLogError):
            lg.append("u/alice", [msg(1)])
        with pytest.raises(TransientLogError):
            lg.read("u/alice", None)
        assert time.monotonic() - t0 < 10


# ---- the binding's set-up --------------------------------------------------------------------------------


def test_a_different_api_version_in_the_same_process_is_a_clear_error(cluster_file: str) -> None:
    other = 800 if API_VERSION == 730 else 730
    with pytest.raises(LogConfigError, match="already selected"):
        FdbEventLog("acme", cluster_file=cluster_file, api_version=other)


def test_unknown_tls_options_are_refused(cluster_file: str) -> None:
    with pytest.raises(LogConfigError, match="TLS"):
        FdbEventLog("acme", cluster_file=cluster_file, tls={"certificate": "/x"})


def _run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=60)


def _libfdb_c_present() -> bool:
    import ctypes.util

    return ctypes.util.find_library("fdb_c") is not None or (Path(str(fdb.__file__)).parent / "libfdb_c.so").exists()


@pytest.mark.skipif(_libfdb_c_present(), reason="libfdb_c is installed here: the missing-library path cannot occur")
def test_missing_libfdb_c_gives_a_clear_permanent_configuration_error(tmp_path: Path) -> None:
    proc = _run_python(f"""
        from cxsync.sync.fdb_log import FdbEventLog, FdbUnavailable, LogConfigError
        from cxsync.sync.port import TransientLogError, PermanentLogError
        try:
            FdbEventLog("acme", cluster_file={str(tmp_path / 'fdb.cluster')!r})
        except FdbUnavailable as exc:
            assert isinstance(exc, LogConfigError)
            assert not isinstance(exc, (TransientLogError, PermanentLogError))
            print("TITLE:", exc.title)
            print("HINT:", exc.hint)
        else:
            raise SystemExit("no error")
    """)
    assert proc.returncode == 0, proc.stderr
    assert "could not be loaded" in proc.stdout
    assert "foundationdb-clients" in proc.stdout and "foundationdb==7.3.*" in proc.stdout
    assert "api_version 730" in proc.stdout


def test_tls_settings_reach_the_network_options_before_the_first_open(tmp_path: Path) -> None:
    """In a fresh process (network options are per process): the emulated libfdb_c records what it is given."""
    proc = _run_python(f"""
        from tests.fdbemu import install
        from tests.fdbemu.capi import LIB
        fdb = install()
        calls = []
        real = LIB.fdb_network_set_option._fn
        LIB.fdb_network_set_option._fn = lambda o, v, n: (calls.append((o, v)), real(o, v, n))[1]
        from cxsync.sync.fdb_log import FdbEventLog, LogConfigError
        tls = {{"cert": "/etc/c.pem", "key": "/etc/k.pem", "ca": "/etc/ca.pem", "password": "pw",
               "verify_peers": "Check.Valid=1"}}
        lg = FdbEventLog("acme", cluster_file={str(tmp_path / 'fdb.cluster')!r}, tls=tls)
        print("CALLS:", sorted(calls))
        print("ORDER:", [o for o, _ in calls])
        FdbEventLog("acme", cluster_file={str(tmp_path / 'fdb.cluster')!r}, tls=dict(tls))  # same: fine
        try:
            FdbEventLog("acme", cluster_file={str(tmp_path / 'fdb.cluster')!r}, tls={{"cert": "/other.pem"}})
        except LogConfigError as exc:
            print("LATE:", exc.title)
    """)
    assert proc.returncode == 0, proc.stderr
    # option codes from fdb/fdboptions.py: cert path 43, key path 46, verify peers 47, ca path 53, password 54
    assert ("CALLS: [(43, b'/etc/c.pem'), (46, b'/etc/k.pem'), (47, b'Check.Valid=1'), (53, b'/etc/ca.pem'),"
            " (54, b'pw')]") in proc.stdout
    order = proc.stdout.split("ORDER: ")[1].splitlines()[0]
    assert order.index("54") < order.index("46")  # the key's password before the key
    assert "LATE: FoundationDB TLS options must be set before the first database is opened" in proc.stdout


def test_api_version_800_works_end_to_end(tmp_path: Path) -> None:
    proc = _run_python(f"""
        from tests.fdbemu import install
        import os
        fdb = install(api_version=int(os.environ["CXSYNC_FDB_API_VERSION"]))
        from cxsync.sync.fdb_log import FdbEventLog, LogConfigError
        from cxsync.sync.events import Identity, session_started
        lg = FdbEventLog("acme", cluster_file={str(tmp_path / 'fdb.cluster')!r})
        assert lg.api_version == 800 and fdb.get_api_version() == 800
        e = session_started(Identity("acme", "alice", "m"), {{"session": "s1"}})
        (c,) = lg.append("u/alice", [e, e])[:1]
        assert lg.append("u/alice", [e]) == [c]
        assert [x.event for x in lg.read("u/alice", None)] == [e]
        assert lg.wait("u/alice", None, 1) and not lg.wait("u/alice", c, 0.1)
        try:
            FdbEventLog("acme", cluster_file="x", api_version=730)
        except LogConfigError as exc:
            print("MISMATCH:", exc.title)
        print("OK")
    """, env={"CXSYNC_FDB_API_VERSION": "800"})
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout and "already selected" in proc.stdout
