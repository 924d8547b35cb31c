"""One writer per cache: a second writer (import, sync --once, rebuild, another connection) never stops capture,
and never writes into a database that is being swapped out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import apsw

from tests import transcripts as T
from tests.helpers import wait_until
from tests.test_agent import SID, AgentProc

from cxsync.agent.lock import AGENT, InstanceLock, holder_info


def _stop(a: AgentProc) -> int | None:
    """Stop the agent; one that does not stop in time (a loaded machine) is killed rather than left behind."""
    if a.proc is None:
        return None
    try:
        return a.stop(signal.SIGTERM, timeout=60)
    except subprocess.TimeoutExpired:
        a.proc.kill()
        a.proc.communicate()
        raise


def _append_users(f: Path, prefix: str, n: int, per_write: int = 10) -> None:
    for i in range(0, n, per_write):
        T.write(f, [T.user(SID, f"{prefix} {j}") for j in range(i, min(n, i + per_write))], mode="ab")


def _contents(a: AgentProc, like: str) -> set[str]:
    c = a.db()
    try:
        return {r[0] for r in c.execute("SELECT cx_text(event_id) FROM messages WHERE cx_text(event_id) LIKE ?", (like,))}
    finally:
        c.close()


def test_import_and_sync_once_beside_a_running_agent_refuse_and_lose_nothing(tmp_path: Path,
                                                                              claude_home: Path) -> None:
    f = T.write(T.session_file(claude_home, SID), [T.user(SID, "existing prompt before start")])
    a = AgentProc(tmp_path, claude_home, sync=f"sqlite:{tmp_path / 'log.db'}").start()
    try:
        wait_until(lambda: a.count("SELECT count(*) FROM messages") == 1, 10, what="startup scan")
        writer = threading.Thread(target=_append_users, args=(f, "burst one", 250))
        writer.start()
        second = [a.cx("import", "--json"), a.cx("sync", "--once"), a.cx("import", "--root", str(claude_home))]
        writer.join()
        _append_users(f, "burst two", 250)  # after the would-be second writers: the agent alone must catch these
        for r in second:
            assert r.returncode == 1, r.stdout + r.stderr
            assert f"the cxsync agent (pid {a.proc.pid}) is running" in r.stderr  # type: ignore[union-attr]
        assert "already captures every transcript" in second[0].stderr
        assert "cxsync sync-now" in second[1].stderr
        expected = {f"burst one {i}" for i in range(250)} | {f"burst two {i}" for i in range(250)}
        wait_until(lambda: _contents(a, "burst %") == expected, 20, what="all 500 appended messages captured")
        assert a.status()["state"] != "error"
        assert a.count("SELECT count(*) FROM messages") == 501  # none twice
    finally:
        assert _stop(a) == 0


def test_a_busy_cache_is_waited_for_never_fatal(tmp_path: Path, claude_home: Path) -> None:
    f = T.write(T.session_file(claude_home, SID), [T.user(SID, "existing prompt before start")])
    a = AgentProc(tmp_path, claude_home).start()
    try:
        wait_until(lambda: a.count("SELECT count(*) FROM messages") == 1, 10, what="startup scan")
        other = apsw.Connection(str(a.home / "data" / "cache.db"))
        other.execute("BEGIN IMMEDIATE")  # another writer holds the write lock while messages arrive
        try:
            _append_users(f, "while busy", 50)
            # Long enough for the agent to read the lines and reach its write; well within its busy timeout.
            threading.Event().wait(1.5)
            assert a.count("SELECT count(*) FROM messages") == 1
        finally:
            other.execute("COMMIT")
            other.close()
        wait_until(lambda: len(_contents(a, "while busy %")) == 50, 15, what="captured once the lock is free")
        _append_users(f, "after busy", 50)  # the ingest worker is still alive
        wait_until(lambda: len(_contents(a, "after busy %")) == 50, 15, what="capture goes on")
        assert a.status()["state"] != "error"
    finally:
        assert _stop(a) == 0


def test_an_agent_started_during_rebuild_waits_and_writes_into_the_rebuilt_cache(tmp_path: Path,
                                                                                 claude_home: Path) -> None:
    T.history(claude_home, "b16e0000", 40, 150)  # 12 000 messages: a rebuild takes a few seconds
    f = T.write(T.session_file(claude_home, SID), [T.user(SID, "existing prompt before start")])
    a = AgentProc(tmp_path, claude_home)
    r = a.cx("import")
    assert r.returncode == 0, r.stderr
    rebuild = subprocess.Popen([sys.executable, "-m", "cxsync.agent", "rebuild", "--json"], env=a.env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lock = a.home / "run" / "agent.lock"
    try:
        wait_until((a.home / "data" / "cache.db.rebuild").exists, 20, what="rebuild under way")
        agent = subprocess.Popen([sys.executable, "-m", "cxsync.agent", "run"], env=a.env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        a.proc = agent
        T.write(f, [T.user(SID, f"during rebuild {i}") for i in range(20)], mode="ab")
        out, err = rebuild.communicate(timeout=120)
        assert rebuild.returncode == 0, err
        assert agent.poll() is None, "the agent gave up instead of waiting for the rebuild"
        wait_until(lambda: (h := holder_info(lock)) is not None and h.role == AGENT, 60, what="agent started")
        T.write(f, [T.user(SID, f"after rebuild {i}") for i in range(20)], mode="ab")
        wait_until(lambda: len(_contents(a, "during rebuild %")) == 20 and len(_contents(a, "after rebuild %")) == 20,
                   60, what="new messages in the rebuilt cache")
        assert a.count("SELECT count(*) FROM messages") == 40 * 150 * 2 + 41
    finally:
        if rebuild.poll() is None:
            rebuild.kill()
            rebuild.communicate()
        _stop(a)


def test_the_lock_names_its_holder_and_one_shot_writers_refuse_each_other(tmp_path: Path) -> None:
    path = tmp_path / "run" / "agent.lock"
    first = InstanceLock(path, "import")
    assert first.acquire()
    try:
        h = holder_info(path)
        assert h is not None and h.role == "import" and not h.is_agent
        assert not InstanceLock(path, "rebuild").acquire()
    finally:
        first.release()
    assert holder_info(path) is None


def test_a_starting_agent_is_not_turned_away_by_a_status_probe(tmp_path: Path) -> None:
    """`cxsync status` takes the lock for a moment to see whether anyone holds it: an agent starting in that
    moment must wait it out, not exit "already running (pid -1)"."""
    import fcntl

    path = tmp_path / "run" / "agent.lock"
    path.parent.mkdir(parents=True)
    probe = open(path, "a+")
    fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # held, and nothing written: a probe
    released = threading.Timer(0.3, probe.close)
    released.start()
    agent = InstanceLock(path, AGENT)
    try:
        assert agent.acquire()
        h = holder_info(path)
        assert h is not None and h.is_agent and h.pid == os.getpid()
    finally:
        agent.release()
        released.join()


def test_an_agent_waiting_for_a_one_shot_command_stops_on_sigterm(tmp_path: Path, claude_home: Path) -> None:
    a = AgentProc(tmp_path, claude_home)
    lock = InstanceLock(a.home / "run" / "agent.lock", "rebuild")  # a rebuild under way
    assert lock.acquire()
    agent = subprocess.Popen([sys.executable, "-m", "cxsync.agent", "run"], env=a.env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        try:
            agent.wait(3)  # it waits for the rebuild instead of giving up
            raise AssertionError(f"the agent exited ({agent.returncode}) instead of waiting")
        except subprocess.TimeoutExpired:
            pass
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(10) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
        agent.communicate()
        lock.release()
