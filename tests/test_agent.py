"""The agent as a user runs it: a real `cxsync run` process, real files, a real watchdog observer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import apsw
import pytest

from cxsync.cache import fts
from tests import transcripts as T
from tests.helpers import wait_until

SID = "a9e47000-0000-4000-8000-000000000001"


class AgentProc:
    def __init__(self, tmp: Path, claude: Path, sync: str = "", extra: str = "") -> None:
        self.home = tmp / "cxhome"
        self.home.mkdir(exist_ok=True)
        (self.home / "config.toml").write_text(
            f'[identity]\ntenant = "acme"\nuser = "bob"\nmachine = "m1"\n'
            f'[transcripts]\nroots = ["{claude}"]\n[sync]\ntarget = "{sync or "none"}"\n{extra}')
        self.env = {**os.environ, "CXSYNC_HOME": str(self.home)}
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> "AgentProc":
        self.proc = subprocess.Popen([sys.executable, "-m", "cxsync.agent", "run"], env=self.env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_until(lambda: self.status()["state"] != "not-running", 20, what="agent started")
        return self

    def cx(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cxsync.agent", *args], env=self.env, text=True,
                              capture_output=True, timeout=60)

    def status(self) -> dict:
        r = self.cx("status", "--json")
        assert r.returncode in (0, 3), r.stderr
        return json.loads(r.stdout)

    def db(self) -> apsw.Connection:
        c = apsw.Connection(str(self.home / "data" / "cache.db"), flags=apsw.SQLITE_OPEN_READONLY)
        fts.register(c)  # cx_text(event_id): a message's text lives in its stored event
        return c

    def count(self, sql: str, *args: object) -> int:
        try:
            c = self.db()
        except apsw.Error:
            return -1
        try:
            return int(c.execute(sql, args).fetchone()[0])
        except apsw.Error:
            return -1
        finally:
            c.close()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self.proc.stdout.close()  # type: ignore[union-attr]
        self.proc.stderr.close()  # type: ignore[union-attr]
        return rc


@pytest.fixture
def agent(tmp_path: Path, claude_home: Path):
    T.write(T.session_file(claude_home, SID), [T.user(SID, "existing prompt before start")])
    a = AgentProc(tmp_path, claude_home)
    yield a
    if a.proc and a.proc.poll() is None:
        a.stop(signal.SIGKILL)


def searchable(a: AgentProc, word: str) -> bool:
    return a.count("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH ?", word) > 0


def test_appended_lines_are_searchable_within_one_second(agent: AgentProc, claude_home: Path) -> None:
    agent.start()
    wait_until(lambda: searchable(agent, "existing"), 10, what="startup rescan")
    f = T.session_file(claude_home, SID)
    latencies = []
    for i in range(5):
        word = f"liveword{i}x"
        t0 = time.monotonic()
        T.write(f, [T.user(SID, f"appended {word}")], mode="ab")
        wait_until(lambda: searchable(agent, word), 1.0, interval=0.005, what=f"{word} searchable within 1 s")
        latencies.append(time.monotonic() - t0)
    assert agent.cx("query", "liveword3x", "--json").returncode == 0
    assert agent.stop() == 0


def test_kill_9_and_restart_loses_and_duplicates_nothing(agent: AgentProc, claude_home: Path) -> None:
    f = T.session_file(claude_home, SID)
    expected = {"existing prompt before start"}
    agent.start()
    for round_ in range(3):
        for i in range(20):
            text = f"round {round_} line {i}"
            expected.add(text)
            recs = [T.user(SID, text), *T.assistant_lines(SID, [T.text(f"reply {round_} {i}"), T.text("more")])]
            T.write(f, recs, mode="ab")
            expected.add(f"reply {round_} {i}\n\nmore")
        time.sleep(0.01 * round_)  # kill at a different moment each round
        agent.stop(signal.SIGKILL)
        agent.start()
    wait_until(lambda: agent.count("SELECT count(*) FROM messages") == len(expected), 20, what="all captured")
    c = agent.db()
    contents = [r[0] for r in c.execute("SELECT cx_text(event_id) FROM messages")]
    c.close()
    assert sorted(contents) == sorted(expected)  # nothing lost, nothing twice
    assert agent.stop() == 0


def test_second_run_says_already_running_and_exits_0(agent: AgentProc) -> None:
    agent.start()
    r = agent.cx("run")
    assert r.returncode == 0 and f"already running (pid {agent.proc.pid})" in r.stdout
    assert agent.stop() == 0


def test_status_states_idle_paused_not_running(agent: AgentProc) -> None:
    agent.start()
    s = wait_until(lambda: (lambda st: st if st["state"] == "idle" else None)(agent.status()), 10)
    assert s["pid"] == agent.proc.pid and s["uptime_s"] is not None
    assert s["transcripts_watched"] == 1 and s["messages"] == 1 and s["import"] == {"done": 1, "total": 1}
    assert json.loads(agent.cx("pause", "--json").stdout)["ok"]
    assert agent.status()["state"] == "paused"
    agent.cx("resume")
    wait_until(lambda: agent.status()["state"] == "idle", 10)
    assert agent.cx("sync-now").returncode == 0
    assert agent.cx("stop").returncode == 0
    assert agent.proc.wait(15) == 0
    r = agent.cx("status", "--json")
    assert r.returncode == 3 and json.loads(r.stdout)["state"] == "not-running"
    assert agent.cx("pause").returncode == 3


def test_paused_agent_captures_after_resume(agent: AgentProc, claude_home: Path) -> None:
    agent.start()
    wait_until(lambda: searchable(agent, "existing"), 10)
    agent.cx("pause")
    T.write(T.session_file(claude_home, SID), [T.user(SID, "written while paused")], mode="ab")
    agent.cx("resume")
    wait_until(lambda: searchable(agent, "paused"), 5)
    assert agent.stop() == 0


def test_status_offline_then_drains_on_reconnect(tmp_path: Path, claude_home: Path) -> None:
    T.write(T.session_file(claude_home, SID), [T.user(SID, "queued while offline")])
    share = tmp_path / "share"  # not there yet: like an unmounted network share
    a = AgentProc(tmp_path, claude_home, sync=f"sqlite:{share}/log.db")
    a.start()
    try:
        s = wait_until(lambda: (lambda st: st if st["state"] == "offline" else None)(a.status()), 15)
        assert s["outbox"] > 0 and "offline" in s["last_error"]["hint"]
        share.mkdir()
        wait_until(lambda: a.status()["outbox"] == 0, 30, interval=0.2, what="outbox drained after reconnect")
        seen = []
        try:
            wait_until(lambda: seen.append(a.status()) or seen[-1]["state"] == "idle", 15, interval=0.2)
        except AssertionError:
            raise AssertionError(f"did not settle to idle; last status: {seen[-1]}") from None
    finally:
        assert a.stop() == 0


def test_status_error_when_fdb_client_missing_and_capture_goes_on(tmp_path: Path, claude_home: Path) -> None:
    T.write(T.session_file(claude_home, SID), [T.user(SID, "captured despite sync error")])
    a = AgentProc(tmp_path, claude_home, sync="fdb")
    a.start()
    try:
        s = wait_until(lambda: (lambda st: st if st["state"] == "error" else None)(a.status()), 15)
        assert "FoundationDB" in s["last_error"]["title"] and "install" in s["last_error"]["hint"]
        wait_until(lambda: searchable(a, "captured"), 10)
    finally:
        assert a.stop() == 0


def test_status_needs_auth_without_credential(tmp_path: Path, claude_home: Path) -> None:
    a = AgentProc(tmp_path, claude_home, sync=f"sqlite:{tmp_path}/log.db", extra="needs_credential = true\n")
    a.env["PYTHON_KEYRING_BACKEND"] = "tests.memory_keyring.MemoryKeyring"  # a working, empty keyring
    a.env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    a.start()
    try:
        s = wait_until(lambda: (lambda st: st if st["state"] == "needs-auth" else None)(a.status()), 15)
        assert "cxsync login" in s["last_error"]["hint"]
    finally:
        assert a.stop() == 0


def test_status_needs_auth_without_any_keyring(tmp_path: Path, claude_home: Path) -> None:
    a = AgentProc(tmp_path, claude_home, sync=f"sqlite:{tmp_path}/log.db", extra="needs_credential = true\n")
    a.env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.null.Keyring"
    a.start()
    try:
        s = wait_until(lambda: (lambda st: st if st["state"] == "needs-auth" else None)(a.status()), 15)
        assert "CXSYNC_TOKEN" in s["last_error"]["hint"]
    finally:
        assert a.stop() == 0


def test_sigterm_stops_within_budget_and_logs_to_private_file(agent: AgentProc) -> None:
    agent.start()
    t0 = time.monotonic()
    assert agent.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 12
    log = agent.home / "logs" / "cxsync.log"
    assert log.stat().st_mode & 0o077 == 0
    text = log.read_text()
    assert "agent starting" in text and "agent stopped" in text
    assert "existing prompt" not in text  # transcript text never reaches the log
