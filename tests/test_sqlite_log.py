"""The embedded SQLite log beyond the shared contract: several real processes on one file, wake-ups across
processes, reopening, and the errors a user meets (unreachable folder, wrong file, locked, corrupt)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import apsw
import pytest

from cxsync.sync import sqlite_log
from cxsync.sync.port import PermanentLogError, TransientLogError
from cxsync.sync.sqlite_log import SqliteEventLog
from cxsync.sync.targets import open_log
from tests.helpers import make_event, make_events, wait_until

pytestmark = pytest.mark.usefixtures("no_thread_leak")

SPAWN = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing shared but the file
REPO = Path(__file__).resolve().parents[1]


def keys(log: SqliteEventLog, stream: str = "team") -> list[str]:
    return [e.event.event_id for e in log.read(stream, None, 100_000)]


# ---- child processes (module level: spawn imports them by name) ------------------------------------------------


def _append_rounds(path: str, worker: int, rounds: int, start: Any, results: Any) -> None:
    log = SqliteEventLog(path, "acme")
    start.wait(30)
    out: list[tuple[str, str]] = []
    for i in range(rounds):
        # Own events, an event both processes append (idempotency across processes), a duplicate in the batch.
        batch = make_events("acme", [f"w{worker}-{i}", f"shared-{i}"] + ([f"w{worker}-{i}"] if i % 5 == 0 else []))
        out.extend((e.event_id, c.hex()) for e, c in zip(batch, log.append("team", batch)))
    log.close()
    results.put((worker, out))


def _append_when_told(path: str, ready: Any, go: Any, committed_at: Any, key: str) -> None:
    log = SqliteEventLog(path, "acme")
    ready.set()
    if go.wait(30):
        before = time.monotonic()  # CLOCK_MONOTONIC: comparable between processes of one machine
        log.append("team", [make_event("acme", key)])
        committed_at.put((before, time.monotonic()))
    log.close()


# ---- several processes -----------------------------------------------------------------------------------------


def test_two_processes_appending_at_once_keep_strict_order_and_write_each_event_once(tmp_path: Path) -> None:
    path, rounds = str(tmp_path / "log.db"), 40
    start, results = SPAWN.Event(), SPAWN.Queue()
    procs = [SPAWN.Process(target=_append_rounds, args=(path, w, rounds, start, results)) for w in (0, 1)]
    for p in procs:
        p.start()
    reader = SqliteEventLog(path, "acme")
    seen: list[Any] = []
    cursor = None
    start.set()
    got: dict[int, list[tuple[str, str]]] = {}
    deadline = time.monotonic() + 60
    while len(got) < 2 and time.monotonic() < deadline:
        page = reader.read("team", cursor, limit=5)
        if page:
            assert cursor is None or page[0].cursor > cursor
            seen.extend(page)
            cursor = page[-1].cursor
        elif not results.empty():
            worker, out = results.get()
            got[worker] = out
        else:
            reader.wait("team", cursor, 0.2)  # a bounded wait on the log itself, not a sleep
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    seen.extend(reader.read("team", cursor, 100_000))
    full = reader.read("team", None, 100_000)
    assert full == seen  # the reader, reading while both wrote, saw everything and nothing behind its cursor
    assert [e.cursor for e in full] == sorted({e.cursor for e in full})
    expected = {f"w{w}-{i}" for w in (0, 1) for i in range(rounds)} | {f"shared-{i}" for i in range(rounds)}
    assert sorted(keys(reader)) == sorted(expected)  # each event exactly once
    standing = {e.event.event_id: e.cursor.hex() for e in full}
    for worker in (0, 1):
        assert all(standing[k] == c for k, c in got[worker])  # replays got the cursors that stand
    reader.close()


def test_a_waiter_is_woken_by_a_commit_in_another_process_through_notification(tmp_path: Path) -> None:
    path = str(tmp_path / "log.db")
    # A re-check period far beyond the test's bound: only the file notification can wake the waiter in time.
    waiter = SqliteEventLog(path, "acme", recheck_interval=30)
    (head,) = waiter.append("team", make_events("acme", ["a"]))
    woke, latency = wait_for_child_append(path, waiter, head)
    try:
        assert woke and latency < 1.0
        assert sqlite_log._NOTIFIER.active()
    finally:
        waiter.close()
    assert not sqlite_log._NOTIFIER.active()  # the watch thread ends with the last log that waited


def test_without_notification_a_waiter_still_wakes_by_rechecking(tmp_path: Path) -> None:
    path = str(tmp_path / "log.db")
    waiter = SqliteEventLog(path, "acme", notify=False)
    (head,) = waiter.append("team", make_events("acme", ["a"]))
    woke, latency = wait_for_child_append(path, waiter, head)
    try:
        assert woke and latency < 1.0
        assert not sqlite_log._NOTIFIER.active()
    finally:
        waiter.close()


def wait_for_child_append(path: str, waiter: SqliteEventLog, head: bytes) -> tuple[bool, float]:
    """Block in ``waiter.wait`` while another process appends; return (woken, seconds from its append's return).

    The latency can be slightly negative: the waiter may wake before the appending call has returned."""
    ready, go, committed_at = SPAWN.Event(), SPAWN.Event(), SPAWN.Queue()
    child = SPAWN.Process(target=_append_when_told, args=(path, ready, go, committed_at, "from-child"))
    child.start()
    try:
        assert ready.wait(30), "the child did not open the log"
        timer = threading.Timer(0.2, go.set)  # the waiter is blocked by then
        started = time.monotonic()
        timer.start()
        woke = waiter.wait("team", head, 10)
        woke_at = time.monotonic()
        timer.join()
        assert woke_at - started >= 0.15  # it did block
        append_started, append_returned = committed_at.get(timeout=10)
        assert woke_at >= append_started  # woken by the append, not by something else
        latency = woke_at - append_returned
    finally:
        go.set()
        child.join(30)
    assert child.exitcode == 0
    assert keys(waiter)[-1] == "from-child"
    return woke, latency


def test_the_log_module_does_not_load_the_foundationdb_binding(tmp_path: Path) -> None:
    code = (
        "import sys; from cxsync.sync.targets import open_log; "
        f"log = open_log('sqlite:{tmp_path / 'log.db'}', 'acme'); log.close(); "
        "assert not [m for m in sys.modules if m == 'fdb' or m.startswith('fdb.')], 'fdb was imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


# ---- one process -----------------------------------------------------------------------------------------------


def test_reopening_after_close_keeps_every_event_and_its_cursor(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    with SqliteEventLog(path, "acme") as log:
        cursors = log.append("team", make_events("acme", ["a", "b"]))
        before = log.read("team", None)
    with SqliteEventLog(path, "acme") as log:
        assert log.read("team", None) == before
        assert log.append("team", make_events("acme", ["a", "b"])) == cursors
        (c,) = log.append("team", make_events("acme", ["c"]))
        assert c > cursors[-1]
        assert keys(log) == ["a", "b", "c"]


def test_threads_sharing_one_log_object_append_and_read_safely(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "log.db", "acme")
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(15):
                ks = [f"t{t}-{i}-{j}" for j in range(3)]
                cursors = log.append("team", make_events("acme", ks))
                assert [e.cursor for e in log.read("team", cursors[0][:10] + b"\x00\x00", 3)][:2] == cursors[1:]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,), name=f"shared-log-{t}") for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    assert len(keys(log)) == 8 * 15 * 3
    log.close()


def test_cursors_carry_the_commit_version_and_a_replay_leaves_the_clock_alone(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    log = SqliteEventLog(path, "acme")
    before_us = time.time_ns() // 1000
    first = log.append("team", make_events("acme", ["a", "b"]))
    second = log.append("p/web", make_events("acme", ["c"]))
    versions = [int.from_bytes(c[:8], "big") for c in first + second]
    assert versions[0] == versions[1] < versions[2] and versions[0] >= before_us  # ~1M per second, like FDB
    assert all(c[8:10] == b"\x00\x00" for c in first + second)  # one commit at a time: batch order 0
    head_file = Path(f"{path}-head")
    assert int.from_bytes(head_file.read_bytes(), "big") == versions[2]
    raw = apsw.Connection(str(path))
    clock = raw.execute("SELECT version FROM clock").fetchone()
    assert log.append("team", make_events("acme", ["b", "a"])) == [first[1], first[0]]
    assert raw.execute("SELECT version FROM clock").fetchone() == clock
    assert int.from_bytes(head_file.read_bytes(), "big") == versions[2]  # nobody was told of a commit
    raw.close()
    log.close()


def test_close_wakes_a_waiting_thread_and_later_calls_are_refused(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "log.db", "acme")
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(log.wait("team", None, 30)), name="closing-waiter")
    waiter.start()
    wait_until(lambda: sqlite_log._NOTIFIER.active(), what="the waiter subscribed")
    started = time.monotonic()
    log.close()
    waiter.join(5)
    assert result == [False] and time.monotonic() - started < 2
    log.close()  # twice is harmless
    with pytest.raises(PermanentLogError, match="closed"):
        log.append("team", make_events("acme", ["a"]))
    with pytest.raises(PermanentLogError, match="closed"):
        log.read("team", None)


# ---- errors ----------------------------------------------------------------------------------------------------


def test_a_missing_folder_is_a_transient_error_that_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "share" / "cxsync" / "log.db"
    with pytest.raises(TransientLogError) as err:
        SqliteEventLog(path, "acme")
    assert str(path) in str(err.value) and "does not exist" in str(err.value)
    assert not path.parent.exists()  # not created: it may be an unmounted share's mount point
    path.parent.mkdir(parents=True)  # the share is back
    with SqliteEventLog(path, "acme") as log:
        log.append("team", make_events("acme", ["a"]))


def test_a_folder_that_is_a_file_is_a_transient_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(TransientLogError, match="is not a directory"):
        SqliteEventLog(tmp_path / "afile" / "log.db", "acme")


def test_a_file_that_is_not_a_database_is_refused_permanently(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(PermanentLogError, match="not a database"):
        SqliteEventLog(path, "acme")


def test_another_sqlite_database_is_refused_rather_than_written_into(tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    other = apsw.Connection(str(path))
    other.execute("CREATE TABLE messages(id)")
    other.close()
    with pytest.raises(PermanentLogError, match="not a cxsync event log"):
        SqliteEventLog(path, "acme")
    other = apsw.Connection(str(path))
    assert [r[0] for r in other.execute("SELECT name FROM sqlite_schema")] == ["messages"]
    other.close()


def test_a_log_locked_by_another_writer_is_a_transient_error(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    log = SqliteEventLog(path, "acme", busy_timeout_ms=50)
    holder = apsw.Connection(str(path))
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(TransientLogError, match="busy"):
            log.append("team", make_events("acme", ["a"]))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    log.append("team", make_events("acme", ["a"]))  # and it recovers by itself
    assert keys(log) == ["a"]
    log.close()


def test_a_corrupt_payload_is_a_permanent_error_naming_its_cursor(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    log = SqliteEventLog(path, "acme")
    cursors = log.append("team", make_events("acme", ["a", "b"]))
    raw = apsw.Connection(str(path))
    raw.execute("UPDATE events SET payload = x'01deadbeef' WHERE event_id = 'b'")
    raw.close()
    assert [e.event.event_id for e in log.read("team", None, limit=1)] == ["a"]
    with pytest.raises(PermanentLogError) as err:
        log.read("team", None)
    assert cursors[1].hex() in str(err.value) and err.value.event_ids == ["b"]
    log.close()


# ---- sync.target -----------------------------------------------------------------------------------------------


def test_a_relative_sqlite_target_is_relative_to_the_current_folder(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "logs").mkdir()
    monkeypatch.chdir(tmp_path)
    log = open_log("sqlite:logs/team.db", "acme")
    assert isinstance(log, SqliteEventLog) and log.path == tmp_path / "logs" / "team.db"
    assert log.tenant == "acme"
    log.close()


def test_a_sqlite_target_expands_the_home_folder_and_passes_its_options(tmp_path: Path) -> None:
    home = Path(os.path.expanduser("~"))  # tests run with HOME in tmp_path
    home.mkdir(parents=True, exist_ok=True)
    log = open_log("sqlite:~/log.db", "acme", busy_timeout_ms=1234, notify=False, api_version=730, tls=None)
    assert isinstance(log, SqliteEventLog) and log.path == home / "log.db"
    assert log._busy_timeout_ms == 1234 and log._notify is False
    log.close()


@pytest.mark.parametrize("target", ["", "none", "  None "])
def test_an_unset_target_says_sync_is_not_configured_and_how_to_set_it(target: str) -> None:
    with pytest.raises(ValueError) as err:
        open_log(target, "acme")
    assert "not configured" in str(err.value)
    assert 'cxsync config: [sync] target = "sqlite:/path/log.db"' in str(err.value)


@pytest.mark.parametrize("target", ["mysql://x", "sqlite", "sqlite:", "/just/a/path.db", "fdbx:foo"])
def test_an_unknown_target_names_the_accepted_forms(target: str) -> None:
    with pytest.raises(ValueError) as err:
        open_log(target, "acme")
    assert '"sqlite:PATH", "https://gateway:port", "fdb" or "fdb:CLUSTER_FILE"' in str(err.value)


def test_an_invalid_tenant_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tenant"):
        open_log(f"sqlite:{tmp_path / 'log.db'}", "no/slashes")
    assert not (tmp_path / "log.db").exists()
