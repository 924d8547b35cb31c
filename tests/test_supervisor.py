"""The supervisor in-process: threads, the watch-limit fallback, wake-from-sleep, the control channel."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from cxsync.agent.config import load_config
from cxsync.agent.control import send
from cxsync.sync.errors import AgentNotRunning
from cxsync.agent.supervisor import AlreadyRunning, Supervisor
from tests import transcripts as T
from tests.helpers import wait_until

SID = "5e550000-0000-4000-8000-000000000001"


@pytest.fixture
def cfg(tmp_path: Path, claude_home: Path):
    home = tmp_path / "cxhome"
    home.mkdir()
    (home / "config.toml").write_text('[identity]\ntenant = "acme"\nuser = "bob"\nmachine = "m"\n'
                                      f'[transcripts]\nroots = ["{claude_home}"]\n')
    T.write(T.session_file(claude_home, SID), [T.user(SID, "hello supervisor")])
    return load_config(env={**os.environ, "CXSYNC_HOME": str(home)})


def test_workers_are_named_and_stop_within_budget(cfg, no_thread_leak) -> None:
    sup = Supervisor(cfg)
    sup.start()
    names = {t.name for t in sup._threads}
    assert {"ingest", "clock", "credentials"} <= names
    wait_until(lambda: sup.cache.search("supervisor"), 10)
    t0 = time.monotonic()
    assert sup.stop(5) == []
    assert time.monotonic() - t0 < 5


def test_single_instance_lock(cfg, no_thread_leak) -> None:
    a = Supervisor(cfg)
    a.start()
    try:
        with pytest.raises(AlreadyRunning) as exc:
            Supervisor(cfg).start()
        assert exc.value.pid == os.getpid() and exc.value.exit_code == 0
    finally:
        a.stop(5)


def test_watch_limit_falls_back_to_polling_with_an_actionable_message(cfg, monkeypatch, no_thread_leak) -> None:
    from watchdog.observers import Observer

    def refuse(self, *a, **kw):
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    monkeypatch.setattr(Observer, "schedule", refuse)
    sup = Supervisor(cfg)
    sup.start()
    try:
        assert sup.state.facts["observer"] == "polling"
        assert "max_user_watches" in sup.snapshot()["last_error"]["hint"]
        f = T.session_file(Path(cfg.roots[0]), SID)
        T.write(f, [T.user(SID, "seen by polling")], mode="ab")
        wait_until(lambda: sup.cache.search("polling"), 10, what="the polling observer saw the append")
    finally:
        sup.stop(5)


def test_wake_from_sleep_rescans_and_rearms_sync(cfg, no_thread_leak) -> None:
    sup = Supervisor(cfg)
    offset = [0.0]
    sup.wall_clock = lambda: time.time() + offset[0]
    sup.clock_interval = 0.05
    sup.start()
    try:
        wait_until(lambda: sup.cache.search("supervisor"), 10)
        f = T.session_file(Path(cfg.roots[0]), SID)
        sup._observers[0].stop()  # no notification will tell us: only the wake-up rescan can find the change
        sup._observers[0].join(5)
        T.write(f, [T.user(SID, "written while asleep")], mode="ab")
        offset[0] = 3600.0  # an hour passed on the wall clock, none on the monotonic one
        wait_until(lambda: sup.wakeups >= 1, 5)
        wait_until(lambda: sup.cache.search("asleep"), 10, what="rescan after wake-up")
    finally:
        sup.stop(5)


def test_control_channel_drives_the_agent_and_refuses_strangers(cfg, no_thread_leak) -> None:
    sup = Supervisor(cfg)
    sup.start()
    try:
        assert send(cfg.paths, "pause")["status"]["state"] == "paused"
        assert send(cfg.paths, "resume")["ok"]
        assert cfg.paths.control_key.stat().st_mode & 0o077 == 0
        from multiprocessing.connection import Client

        with pytest.raises(Exception):  # a wrong key fails the handshake
            Client(str(cfg.paths.control_socket), family="AF_UNIX", authkey=b"x" * 32).send({"cmd": "stop"})
        assert send(cfg.paths, "ping")["ok"]  # and the server survived it
    finally:
        sup.stop(5)
    with pytest.raises(AgentNotRunning):
        send(cfg.paths, "status")


def test_reading_a_transcript_does_not_trigger_another_read(cfg, no_thread_leak) -> None:
    """Our own open/close of a file raises inotify events; they must not make the agent read it again."""
    sup = Supervisor(cfg)
    reads = []
    sup.start()
    try:
        wait_until(lambda: sup.cache.search("supervisor"), 10)
        original = sup.ingestor.ingest_file

        def counting(tf, **kw):
            reads.append(tf.path)
            return original(tf, **kw)

        sup.ingestor.ingest_file = counting
        T.write(T.session_file(Path(cfg.roots[0]), SID), [T.user(SID, "one append")], mode="ab")
        wait_until(lambda: sup.cache.search("append"), 5)
        time.sleep(1.0)  # long enough for a feedback loop to show itself (it re-read every ~50 ms)
        assert len(reads) <= 2
        assert sup.snapshot()["state"] == "idle"
    finally:
        sup.stop(5)


def test_status_says_syncing_while_a_push_is_in_flight(tmp_path, claude_home, no_thread_leak) -> None:
    home = tmp_path / "cx-sync"
    home.mkdir()
    (home / "config.toml").write_text('[identity]\ntenant = "acme"\nuser = "bob"\nmachine = "m"\n'
                                      f'[transcripts]\nroots = ["{claude_home}"]\n'
                                      f'[sync]\ntarget = "sqlite:{tmp_path}/log.db"\n')
    cfg = load_config(env={**os.environ, "CXSYNC_HOME": str(home)})
    sup = Supervisor(cfg)
    sup.start()
    gate, entered = __import__("threading").Event(), __import__("threading").Event()
    try:
        wait_until(lambda: sup.snapshot()["state"] == "idle" and sup.snapshot()["outbox"] == 0, 15)
        real_append = sup.engine.log.append

        def slow_append(stream, events):
            entered.set()
            gate.wait(10)
            return real_append(stream, events)

        sup.engine.log.append = slow_append
        T.write(T.session_file(Path(cfg.roots[0]), SID), [T.user(SID, "pushed slowly")], mode="ab")
        wait_until(entered.is_set, 10, what="the push started")
        assert sup.snapshot()["state"] == "syncing"
        gate.set()
        wait_until(lambda: sup.snapshot()["state"] == "idle", 10, what="idle once the push landed")
        assert sup.snapshot()["outbox"] == 0
    finally:
        gate.set()
        sup.stop(5)


def test_a_worker_stopped_by_a_full_disk_says_so_and_how_it_recovers(cfg, monkeypatch, no_thread_leak) -> None:
    import apsw

    from cxsync.agent.ingest import Ingestor

    def full(self, *a, **kw):
        raise apsw.FullError("FullError: database or disk is full")

    monkeypatch.setattr(Ingestor, "ingest_file", full)
    sup = Supervisor(cfg)
    sup.start()
    try:
        err = wait_until(lambda: sup.snapshot()["last_error"], 10, what="the ingest worker's failure reported")
        assert "the disk is full" in err["title"] and err["kind"] == "disk-full", err
        assert "free some space" in err["hint"] and "unexpected" not in err["title"]
        assert sup.snapshot()["state"] == "error"
    finally:
        sup.stop(5)
