"""The hardened sync core (issue 8): one test per defect, each against real parts (apsw databases, the embedded
log, the FoundationDB emulation, the supervisor's real threads and watchers)."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path
from typing import Callable

import apsw
import pytest

from cxsync.agent import status
from cxsync.agent.config import load_config
from cxsync.agent.ingest import Ingestor
from cxsync.agent.supervisor import Supervisor
from cxsync.cache import open_cache
from cxsync.cache.rebuild import rebuild_cache
from cxsync.sync import events as ev
from cxsync.sync.engine import SyncEngine
from cxsync.sync.sqlite_log import SqliteEventLog
from cxsync.tray import model as tray
from tests import transcripts as T
from tests.helpers import wait_until

SID = "5e550000-0000-4000-8000-0000000000c1"
OTHER = ev.Identity("acme", "bob", "elsewhere")
STREAM = "u/bob"


def remote_message(n: int, content: str | None = None) -> ev.ContextEvent:
    return ev.message_indexed(OTHER, {"session": "remote-s", "key": f"u:remote-{n}", "hash": f"h{n}",
                                      "content": content or f"remote message number{n}"})


def stays(pred: Callable[[], bool], seconds: float) -> bool:
    """True if ``pred`` holds during the whole of ``seconds`` (the negative twin of ``wait_until``)."""
    try:
        wait_until(lambda: not pred(), seconds, interval=0.05)
    except AssertionError:
        return True
    return False


def corrupt_log_event(log_path: Path, event_id: str, payload: bytes = bytes.fromhex("02deadbeef")) -> None:
    raw = apsw.Connection(str(log_path))
    raw.execute("UPDATE events SET payload = ? WHERE event_id = ?", (payload, event_id))
    raw.close()


# ---- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path, claude_home: Path) -> Callable[..., object]:
    """A config with the embedded log at tmp_path/log.db (``sync=False``: no sync)."""
    def make(sync: bool = True, name: str = "cxhome") -> object:
        h = tmp_path / name
        h.mkdir(exist_ok=True)
        target = f"sqlite:{tmp_path / 'log.db'}" if sync else "none"
        (h / "config.toml").write_text('[identity]\ntenant = "acme"\nuser = "bob"\nmachine = "m"\n'
                                       f'[transcripts]\nroots = ["{claude_home}"]\n[sync]\ntarget = "{target}"\n')
        return load_config(env={**os.environ, "CXSYNC_HOME": str(h)})
    return make


@pytest.fixture
def agent(home, no_thread_leak):
    started: list[Supervisor] = []

    def start(sync: bool = True) -> Supervisor:
        sup = Supervisor(home(sync))
        sup.backoff_base, sup.backoff_cap = 0.05, 0.3  # recover within a test's patience
        sup.start()
        started.append(sup)
        return sup

    yield start
    for s in started:
        assert s.stop() == []


def messages(sup: Supervisor) -> int:
    return int(sup.cache.conn.execute("SELECT count(*) FROM messages").fetchone()[0])


def searchable(sup: Supervisor, word: str) -> bool:
    return bool(sup.cache.search(word)) if hasattr(sup.cache, "search") else bool(
        sup.cache.conn.execute("SELECT 1 FROM messages_fts WHERE messages_fts MATCH ?", (word,)).fetchone())


def fts_has(sup: Supervisor, word: str) -> bool:
    with sup.cache._lock:
        return sup.cache.conn.execute("SELECT 1 FROM messages_fts WHERE messages_fts MATCH ?",
                                      (word,)).fetchone() is not None


# ---- defect 1: what a reader cannot decode is kept and skipped ---------------------------------------------


def test_undecodable_unknown_and_malformed_events_are_kept_aside_and_the_stream_goes_on(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "log.db", "acme")
    future = ev.ContextEvent("PlanApproved", "future-1", "acme", "bob", "elsewhere", "2030-01-01T00:00:00Z",
                             {"session": "remote-s", "plan": "a type a newer cxsync writes"})
    malformed = ev.ContextEvent(ev.MESSAGE_INDEXED, "no-key", "acme", "bob", "elsewhere", "2030-01-01T00:00:00Z",
                                {"session": "remote-s", "content": "a message without its key"})
    log.append(STREAM, [remote_message(1), remote_message(2), future, malformed, remote_message(3)])
    corrupt_log_event(tmp_path / "log.db", remote_message(2).event_id)
    cache = open_cache(tmp_path / "cache.db")
    engine = SyncEngine(cache, log, tenant="acme", subscribe=[STREAM], page=2)
    r = engine.pull_stream(STREAM)
    assert (r.read, r.applied, r.undecodable) == (5, 2, 3)
    kept = {u["event_id"]: u["error"] for u in cache.undecodable()}
    assert set(kept) == {remote_message(2).event_id, "future-1", "no-key"}
    assert "PlanApproved" in kept["future-1"] and "materialise" in kept["no-key"]
    keys = {r[0] for r in cache.conn.execute("SELECT key FROM messages")}
    assert keys == {"u:remote-1", "u:remote-3"}  # the events after the bad ones were applied
    assert engine.pull_stream(STREAM).read == 0  # the cursor moved past them: nothing stalls
    # the payload is stored as it was read: decoded once, never re-encoded
    stored = cache.conn.execute("SELECT payload FROM events WHERE event_id=?", (remote_message(3).event_id,))
    read = {e.event_id: e.payload for e in log.read(STREAM, None)}
    assert bytes(stored.fetchone()[0]) == read[remote_message(3).event_id]
    cache.close()
    log.close()


def test_fdb_adapter_hands_on_a_corrupt_entry_instead_of_failing_the_page(tmp_path: Path) -> None:
    if os.environ.get("CXSYNC_FDB_CLUSTER_FILE"):
        pytest.skip("the emulation cannot share the process with a real libfdb_c")
    from tests.fdbemu import install, reset_all

    install(int(os.environ.get("CXSYNC_FDB_API_VERSION", "730")))
    reset_all()
    from cxsync.sync.fdb_log import FdbEventLog

    log = FdbEventLog("acme", cluster_file=str(tmp_path / "fdb.cluster"))
    try:
        cursors = log.append(STREAM, [remote_message(1), remote_message(2), remote_message(3)])
        key = log.keys.log_key(STREAM, cursors[1])
        tr = log.database.create_transaction()
        tr.set(key, b"\x02not zstd at all")
        tr.commit().wait()
        page = log.read(STREAM, None)
        assert [e.cursor for e in page] == cursors
        assert page[1].event is None and page[1].error and cursors[1].hex() in page[1].error
        assert page[2].event is not None and page[2].event.event_id == remote_message(3).event_id
        assert log.identity() == FdbEventLog("acme", cluster_file=str(tmp_path / "fdb.cluster")).identity()
    finally:
        log.close()
        reset_all()


def test_status_shows_undecodable_events_without_blaming_the_network(agent, tmp_path: Path) -> None:
    sup = agent()
    sup.pause()  # the agent would read the events before the test damages one
    log = SqliteEventLog(tmp_path / "log.db", "acme")
    log.append(STREAM, [remote_message(1, "before the damage"), remote_message(2), remote_message(3, "after")])
    corrupt_log_event(tmp_path / "log.db", remote_message(2).event_id)
    sup.resume()
    wait_until(lambda: fts_has(sup, "after"), 10, what="the event after the corrupt one is applied")
    s = wait_until(lambda: (lambda st: st if st["state"] == "idle" else None)(sup.snapshot()), 10)
    assert s["undecodable"] == 1 and s["last_error"] is None
    assert any("Unreadable: 1 event" in line for line in tray.view(s).status_lines)
    log.close()


def test_rebuild_applies_what_an_older_version_kept_aside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = SqliteEventLog(tmp_path / "log.db", "acme")
    future = ev.ContextEvent("SessionRenamed", "renamed-1", "acme", "bob", "elsewhere", "2030-01-01T00:00:00Z",
                             {"session": "remote-s", "title": "a title from the future"})
    log.append(STREAM, [remote_message(1), future])
    cache = open_cache(tmp_path / "cache.db")
    SyncEngine(cache, log, tenant="acme", subscribe=[STREAM]).pull_stream(STREAM)
    assert [u["event_id"] for u in cache.undecodable()] == ["renamed-1"]
    cache.close()
    # "Upgrade": this version now knows SessionRenamed.
    from cxsync.cache import apply as apply_mod

    def rename(conn, e, seq, agg) -> None:
        conn.execute("UPDATE sessions SET title=? WHERE session_id=?", (e.data["title"], e.data["session"]))

    monkeypatch.setattr(ev, "EVENT_TYPES", ev.EVENT_TYPES | {"SessionRenamed"})
    monkeypatch.setitem(apply_mod._HANDLERS, "SessionRenamed", rename)
    rebuild_cache(tmp_path / "cache.db", lambda p: open_cache(p))
    cache = open_cache(tmp_path / "cache.db")
    assert cache.undecodable() == []
    assert cache.conn.execute("SELECT title FROM sessions WHERE session_id='remote-s'").fetchone()[0] == \
        "a title from the future"
    cache.close()
    log.close()


# ---- defect 2: pause pauses sync ---------------------------------------------------------------------------


def test_pause_stops_pull_and_push_until_resume(agent, tmp_path: Path, claude_home: Path) -> None:
    sup = agent()
    wait_until(lambda: sup.snapshot()["state"] == "idle", 10)
    sup.pause()
    log = SqliteEventLog(tmp_path / "log.db", "acme")
    log.append(STREAM, [remote_message(1, "pulled only after resume")])
    sup.sync_now()
    assert stays(lambda: not fts_has(sup, "resume"), 1.5), "a remote event was applied while paused"
    assert sup.snapshot()["state"] == "paused"
    sup.resume()
    wait_until(lambda: fts_has(sup, "resume"), 10, what="pulled after resume")
    log.close()


# ---- defect 4: every worker recovers by itself; status tells the truth meanwhile ---------------------------


def test_capture_resumes_by_itself_once_a_full_disk_has_space_again(agent, claude_home: Path) -> None:
    sup = agent(sync=False)
    f = T.session_file(claude_home, SID)
    T.write(f, [T.user(SID, "first line before the disk fills")])
    wait_until(lambda: fts_has(sup, "fills"), 10)
    with sup.cache._lock:  # a real SQLITE_FULL: the database may not grow by a single page
        pages = sup.cache.conn.execute("PRAGMA page_count").fetchone()[0]
        sup.cache.conn.execute(f"PRAGMA max_page_count={pages}")
    # distinct words: the text is stored compressed and indexed word by word, so it must need new pages
    words = " ".join(f"padding{os.urandom(6).hex()}" for _ in range(30000))
    T.write(f, [T.user(SID, "written while the disk is full padding " + words)], mode="ab")
    s = wait_until(lambda: (lambda st: st if st["state"] == "error" else None)(sup.snapshot()), 10)
    assert "disk is full" in s["last_error"]["title"] and s["last_error"]["kind"] == "disk-full"
    with sup.cache._lock:
        sup.cache.conn.execute("PRAGMA max_page_count=1073741823")  # space freed; nobody writes or wakes ingest
    wait_until(lambda: fts_has(sup, "padding"), 10, what="capture resumed after the disk had space again")
    s = wait_until(lambda: (lambda st: st if st["state"] == "idle" else None)(sup.snapshot()), 10)
    assert s["last_error"] is None and sup.workers["ingest"].restarts >= 1
    assert not any(line.startswith("Last error") for line in tray.view(s).status_lines)


def test_a_log_connection_that_became_read_only_is_reopened_and_the_error_clears(agent, claude_home: Path) -> None:
    sup = agent()
    wait_until(lambda: sup.snapshot()["state"] == "idle", 10)
    inner = sup.engine.log.connect()
    with inner._lock:  # the handle refuses writes, like one opened while the file was read-only
        inner._connection().pragma("query_only", 1)
    T.write(T.session_file(claude_home, SID), [T.user(SID, "queued while the log was read-only")])
    # The first push fails on the read-only handle; the adapter drops it, the guard retries, the new handle works.
    wait_until(lambda: sup.cache.outbox_counts()["acked"] >= 1 and not sup.cache.outbox_counts()["pending"], 10,
               what="pushed through a reopened connection")
    assert sup.workers["push"].failures >= 1
    s = wait_until(lambda: (lambda st: st if st["state"] == "idle" else None)(sup.snapshot()), 10)
    assert s["last_error"] is None  # the stale error went with the recovery (defect 11)


def test_a_busy_cache_is_waited_for_and_never_stops_capture(agent, claude_home: Path, home) -> None:
    sup = agent(sync=False)
    f = T.session_file(claude_home, SID)
    T.write(f, [T.user(SID, "before another writer")])
    wait_until(lambda: fts_has(sup, "another"), 10)
    sup.cache.conn.setbusytimeout(50)
    other = apsw.Connection(str(sup.cfg.paths.cache_db))
    other.execute("BEGIN IMMEDIATE")  # a second writer (an import, a sync --once) holds the database
    try:
        T.write(f, [T.user(SID, "appended while busy")], mode="ab")
        wait_until(lambda: sup.workers["ingest"].failures >= 1, 10, what="ingest met the busy database")
        assert sup.snapshot()["state"] in ("syncing", "idle")  # waiting, not an error
    finally:
        other.execute("ROLLBACK")
        other.close()
    wait_until(lambda: fts_has(sup, "busy"), 10, what="captured once the other writer let go")


# ---- defect 5: a replaced or deleted log is noticed and refilled ---------------------------------------------


def test_a_deleted_log_is_noticed_and_gets_every_event_again(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    a_cache = open_cache(tmp_path / "a.db", route=lambda e: ev.route(e, [STREAM]))
    b_cache = open_cache(tmp_path / "b.db", route=lambda e: ev.route(e, [STREAM]))
    a_log, b_log = SqliteEventLog(path, "acme"), SqliteEventLog(path, "acme")
    a = SyncEngine(a_cache, a_log, tenant="acme", subscribe=[STREAM])
    b = SyncEngine(b_cache, b_log, tenant="acme", subscribe=[STREAM])
    a_cache.apply([remote_message(i) for i in range(5)], "local")
    assert a.sync_once()["pushed"] == 5
    b.sync_once()
    for suffix in ("", "-wal", "-shm", "-head"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    r = a.sync_once()
    assert r["log_replaced"]["requeued"] == 5 and r["pushed"] == 5  # acknowledged by the old log: sent again
    b_cache.apply([ev.message_indexed(ev.Identity("acme", "bob", "b"), {"session": "b-s", "key": "u:b",
                                                                         "hash": "hb", "content": "from b"})],
                  "local")
    rb = b.sync_once()
    assert rb["log_replaced"]["current"] == r["log_replaced"]["current"]
    assert a.sync_once()["pulled"][STREAM]["applied"] == 1
    ids = [e.event_id for e in a_log.read(STREAM, None)]
    assert len(ids) == len(set(ids)) == 6  # nothing lost, nothing doubled
    for c in (a_cache, b_cache):
        assert {r[0] for r in c.conn.execute("SELECT event_id FROM events")} == set(ids)
    for x in (a_log, b_log, a_cache, b_cache):
        x.close()


# ---- defect 7: concurrency ---------------------------------------------------------------------------------


def test_concurrent_pull_threads_keep_each_streams_state(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path / "log.db", "acme")
    streams = ["u/bob", "team", "p/web", "p/api"]
    for s in streams:
        log.append(s, [ev.message_indexed(OTHER, {"session": f"s-{s}", "key": f"u:{s}-{i}", "hash": f"{s}{i}",
                                                  "content": f"m {i}"}) for i in range(30)])
    cache = open_cache(tmp_path / "cache.db")
    engine = SyncEngine(cache, log, tenant="acme", subscribe=streams, page=1)
    threads = [threading.Thread(target=engine.pull_stream, args=(s,)) for s in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    states = cache.stream_states()
    assert set(states) == set(streams)
    assert all(st["caught_up_at"] and st["last_pull"] and st["behind"] == 0 for st in states.values())
    cache.close()
    log.close()


def test_the_session_end_check_never_reads_another_threads_uncommitted_rows(tmp_path: Path,
                                                                            claude_home: Path) -> None:
    cache = open_cache(tmp_path / "cache.db")
    ing = Ingestor(cache, ev.Identity("acme", "bob", "m"), [claude_home])
    f = T.session_file(claude_home, SID)
    T.write(f, [T.user(SID, "quiet session")])
    tf = ing.classify(f)
    ctx = ing._context(tf, None)
    state = type("St", (), {"mtime": time.time() - 7200})()
    inside, done = threading.Event(), threading.Event()

    def writer() -> None:  # another thread's transaction, rolled back in the end
        with cache._lock:
            cache.conn.execute("BEGIN")
            cache.conn.execute("INSERT INTO sessions(session_id, root_session, tenant, user_id, message_count,"
                               " last_at) VALUES (?, ?, 'acme', 'bob', 5, '2026-01-01T00:00:00Z')", (SID, SID))
            inside.set()
            done.wait(5)
            cache.conn.execute("ROLLBACK")

    w = threading.Thread(target=writer)
    w.start()
    inside.wait(5)
    checker = threading.Thread(target=ing.end_session_if_idle, args=(ctx, state))
    checker.start()
    checker.join(0.5)  # it must wait for the writer (the cache lock), not read its uncommitted row
    done.set()
    w.join(5)
    checker.join(5)
    assert cache.conn.execute("SELECT count(*) FROM events WHERE type=?", (ev.SESSION_ENDED,)).fetchone()[0] == 0
    cache.close()


def test_a_status_probe_holding_the_lock_does_not_make_a_starting_agent_quit(home, no_thread_leak) -> None:
    cfg = home(sync=False)
    cfg.paths.ensure()
    probe = open(cfg.paths.lock_file, "a+")
    fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # what `status`'s holder() does, for an instant
    timer = threading.Timer(0.2, probe.close)
    timer.start()
    sup = Supervisor(cfg)
    try:
        sup.start()  # formerly: AlreadyRunning("already running (pid -1)")
        assert status.collect(cfg)["pid"] == os.getpid()
    finally:
        timer.join()
        assert sup.stop() == []


# ---- defect 11: the tray's "behind" line is fed by what status writes --------------------------------------


def test_status_reports_events_behind_and_the_tray_shows_them(home, tmp_path: Path) -> None:
    cfg = home()
    log = SqliteEventLog(tmp_path / "log.db", "acme")
    log.append(STREAM, [remote_message(i) for i in range(12)])
    cache = open_cache(cfg.paths.cache_db)
    engine = SyncEngine(cache, log, tenant="acme", subscribe=[STREAM], page=5)
    engine.pull_page(STREAM)  # one page of a catch-up
    s = status.collect(cfg)
    assert s["streams"][STREAM]["behind"] == 5
    assert "Behind: 5+ events to pull" in tray.view({**s, "state": "syncing"}).status_lines
    engine.pull_stream(STREAM)
    assert status.collect(cfg)["streams"][STREAM]["behind"] == 0
    cache.close()
    log.close()


# ---- the session-end detection (a mutation guard: it had no test) -------------------------------------------


def test_a_quiet_transcript_ends_its_session(tmp_path: Path, claude_home: Path) -> None:
    cache = open_cache(tmp_path / "cache.db")
    ing = Ingestor(cache, ev.Identity("acme", "bob", "m"), [claude_home])
    f = T.session_file(claude_home, SID)
    T.write(f, [T.user(SID, "an old conversation"), *T.assistant_lines(SID, [T.text("an old answer")])])
    quiet = time.time() - 3 * 3600
    os.utime(f, (quiet, quiet))
    ing.ingest_file(ing.classify(f))
    ended = cache.conn.execute("SELECT ended_at, ended_count FROM sessions WHERE session_id=?", (SID,)).fetchone()
    assert ended is not None and ended[0] and ended[1] == 2
    cache.close()


# ---- a stop signal always reaches the thread that waits for it ---------------------------------------------


def test_stop_signals_reach_the_main_thread_of_cxsync_run(home, tmp_path: Path) -> None:
    """A SIGTERM the kernel hands to a worker thread leaves the main thread asleep in its wait (for an hour):
    `cxsync run` blocks SIGTERM/SIGINT in every worker, so only the main thread can take them."""
    import signal
    import subprocess
    import sys

    if not Path("/proc/self/task").is_dir():
        pytest.skip("reads the threads' signal masks from /proc")
    cfg = home(sync=True)
    env = {**os.environ, "CXSYNC_HOME": str(tmp_path / "cxhome")}
    proc = subprocess.Popen([sys.executable, "-m", "cxsync.agent", "run"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: status.collect(cfg)["state"] != "not-running", 30, interval=0.1, what="agent started")

        def blocked(tid: str) -> bool:
            try:
                text = Path(f"/proc/{proc.pid}/task/{tid}/status").read_text()
            except (FileNotFoundError, ProcessLookupError):  # a start-up thread (the keyring probe) that has ended
                return True
            for line in text.splitlines():
                if line.startswith("SigBlk:"):
                    mask = int(line.split()[1], 16)
                    return all(mask & (1 << (s - 1)) for s in (signal.SIGTERM, signal.SIGINT))
            return False

        tids = [t.name for t in Path(f"/proc/{proc.pid}/task").iterdir()]
        assert len(tids) > 5  # workers, watchers, the control channel
        assert not blocked(str(proc.pid))
        assert all(blocked(t) for t in tids if t != str(proc.pid))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
