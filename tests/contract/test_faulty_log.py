"""FaultyLog on every adapter: each injected fault does what it says, and a retry after it is exactly-once."""

from __future__ import annotations

import pytest

from cxsync.sync.port import TransientLogError
from tests.contract.conftest import LogFactory
from tests.faults import FaultyLog
from tests.helpers import make_events


def keys(log: FaultyLog, stream: str = "team") -> list[str]:
    return [e.event.event_id for e in log.inner.read(stream, None, 10_000)]


def test_without_faults_it_only_delegates(make_log: LogFactory) -> None:
    inner = make_log()
    log = FaultyLog(inner)
    assert log.tenant == inner.tenant
    cursors = log.append("team", make_events(log.tenant, ["a", "b"]))
    assert [e.cursor for e in log.read("team", None)] == cursors
    assert log.wait("team", None, 0) is True
    assert (log.counters.appends, log.counters.reads, log.counters.waits, log.counters.injected) == (1, 1, 1, 0)


def test_a_lost_append_writes_nothing_and_its_retry_writes_once(make_log: LogFactory) -> None:
    log = FaultyLog(make_log())
    batch = make_events(log.tenant, ["a", "b"])
    log.fail_next_append(applied=False)
    with pytest.raises(TransientLogError):
        log.append("team", batch)
    assert keys(log) == []
    log.append("team", batch)
    assert keys(log) == ["a", "b"]
    assert log.counters.lost == 1


def test_an_applied_but_failed_append_is_retried_into_the_original_cursors(make_log: LogFactory) -> None:
    log = FaultyLog(make_log())
    batch = make_events(log.tenant, ["a", "b"])
    log.fail_next_append(applied=True)
    with pytest.raises(TransientLogError, match="unknown"):
        log.append("team", batch)
    written = log.inner.read("team", None)
    assert [e.event.event_id for e in written] == ["a", "b"]  # it did land
    assert log.append("team", batch) == [e.cursor for e in written]
    assert keys(log) == ["a", "b"]
    assert log.counters.applied_then_failed == 1


def test_a_batch_cut_in_the_middle_is_completed_by_its_retry(make_log: LogFactory) -> None:
    log = FaultyLog(make_log())
    batch = make_events(log.tenant, ["a", "b", "c", "d"])
    log.fail_mid_batch(2)
    with pytest.raises(TransientLogError, match="2 of 4"):
        log.append("team", batch)
    first = [e.cursor for e in log.inner.read("team", None)]
    assert keys(log) == ["a", "b"]
    cursors = log.append("team", batch)
    assert cursors[:2] == first and first[1] < cursors[2] < cursors[3]
    assert keys(log) == ["a", "b", "c", "d"]


def test_scheduled_faults_hit_the_following_appends_in_order(make_log: LogFactory) -> None:
    log = FaultyLog(make_log())
    log.fail_next_append(applied=True)
    log.fail_next_append(applied=False)
    for key in ("a", "b"):
        with pytest.raises(TransientLogError):
            log.append("team", make_events(log.tenant, [key]))
    log.append("team", make_events(log.tenant, ["c"]))
    assert keys(log) == ["a", "c"]


def test_an_unavailable_log_refuses_every_call_until_it_is_back(make_log: LogFactory) -> None:
    log = FaultyLog(make_log())
    log.unavailable(True)
    with pytest.raises(TransientLogError):
        log.append("team", make_events(log.tenant, ["a"]))
    with pytest.raises(TransientLogError):
        log.read("team", None)
    with pytest.raises(TransientLogError):
        log.wait("team", None, 0)
    assert log.counters.unavailable == 3 and keys(log) == []
    log.unavailable(False)
    log.append("team", make_events(log.tenant, ["a"]))
    assert keys(log) == ["a"]


def test_failed_reads_are_exactly_as_many_as_asked(make_log: LogFactory) -> None:
    log = FaultyLog(make_log())
    log.append("team", make_events(log.tenant, ["a"]))
    log.fail_reads(2)
    for _ in range(2):
        with pytest.raises(TransientLogError):
            log.read("team", None)
    assert [e.event.event_id for e in log.read("team", None)] == ["a"]
    assert log.counters.read_failures == 2


def push_until_acked(log: FaultyLog, batches: list[list[str]]) -> int:
    """What the push loop does: retry each batch until it is acknowledged; return the number of attempts."""
    attempts = 0
    for batch in batches:
        while True:
            attempts += 1
            try:
                log.append("team", make_events(log.tenant, batch))
                break
            except TransientLogError:
                continue
    return attempts


def test_random_faults_are_seeded_and_retries_stay_exactly_once(make_log: LogFactory) -> None:
    batches = [[f"e{i}-{j}" for j in range(3)] for i in range(30)]
    runs: list[tuple[int, int, int]] = []
    for _ in range(2):
        log = FaultyLog(make_log(f"tenant{len(runs)}"), seed=7)
        log.random_failures(0.4, applied_fraction=0.5)
        attempts = push_until_acked(log, batches)
        assert keys(log) == sum(batches, [])
        runs.append((attempts, log.counters.lost, log.counters.applied_then_failed))
    assert runs[0] == runs[1]  # same seed, same faults
    attempts, lost, applied = runs[0]
    assert lost > 0 and applied > 0 and attempts == 30 + lost + applied


def test_random_read_faults_only_when_asked(make_log: LogFactory) -> None:
    log = FaultyLog(make_log(), seed=3)
    log.append("team", make_events(log.tenant, ["a"]))
    log.random_failures(1.0, 0.0)
    for _ in range(5):
        log.read("team", None)
    log.random_failures(1.0, 0.0, reads=True)
    with pytest.raises(TransientLogError):
        log.read("team", None)
    log.clear()
    assert len(log.read("team", None)) == 1
