"""Files holding transcripts are private (0600) from the moment they exist; folders cxsync did not create keep
their mode; one silent client on the control socket does not lock everyone else out of the agent."""

from __future__ import annotations

import logging
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from cxsync.agent.config import load_config
from cxsync.agent.control import CLIENT_TIMEOUT, ControlServer, send
from cxsync.agent.paths import resolve_paths
from cxsync.agent.supervisor import setup_file_logging
from cxsync.sync.sqlite_log import SqliteEventLog
from tests.helpers import make_events, wait_until


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The common default umask: files are world-readable unless created otherwise."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_the_embedded_log_and_its_wal_shm_and_head_files_are_created_private(tmp_path: Path,
                                                                               open_umask: None) -> None:
    path = tmp_path / "shared" / "log.db"
    path.parent.mkdir()
    log = SqliteEventLog(path, "acme", notify=False)
    try:
        log.append("team", make_events("acme", ["e1", "e2"]))
        files = [path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-head")]
        assert all(f.exists() for f in files)
        assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
    finally:
        log.close()


def test_every_agent_log_file_is_private_the_rotated_ones_too(tmp_path: Path, open_umask: None) -> None:
    home = tmp_path / "cxhome"
    cfg = load_config(env={**os.environ, "CXSYNC_HOME": str(home)})
    handler = setup_file_logging(cfg)
    try:
        noisy = logging.getLogger("cxsync.test.rotation")
        for i in range(2600):  # > 2 MB: at least two rotations
            noisy.info("line %d %s", i, "x" * 800)
    finally:
        logging.getLogger("cxsync").removeHandler(handler)
        handler.close()
    logs = sorted(cfg.paths.log_dir.glob("cxsync.log*"))
    assert len(logs) >= 3
    assert {p.name: _mode(p) for p in logs} == {p.name: 0o600 for p in logs}


def test_an_existing_home_keeps_its_mode_and_created_folders_are_private(tmp_path: Path, open_umask: None) -> None:
    home = tmp_path / "shared-tmp"
    home.mkdir()
    os.chmod(home, 0o1777)  # like /tmp
    env = {**os.environ, "CXSYNC_HOME": str(home)}
    for args in (["paths"], ["status"], ["import", "--root", str(tmp_path)]):
        subprocess.run([sys.executable, "-m", "cxsync.agent", *args], env=env, capture_output=True, timeout=60)
    assert _mode(home) == 0o1777
    paths = resolve_paths(env)
    for d in (paths.data_dir, paths.state_dir, paths.log_dir, paths.runtime_dir):
        assert d.is_dir() and _mode(d) == 0o700, d


def test_missing_parents_of_the_home_are_created_private(tmp_path: Path, open_umask: None) -> None:
    os.chmod(tmp_path, 0o755)
    paths = resolve_paths({"CXSYNC_HOME": str(tmp_path / "a" / "b")})
    paths.ensure()
    assert _mode(tmp_path / "a") == 0o700 and _mode(tmp_path / "a" / "b") == 0o700
    assert _mode(tmp_path) == 0o755  # it existed: not ours to change


def test_a_silent_client_does_not_block_pause_and_stop(tmp_path: Path) -> None:
    paths = resolve_paths({"CXSYNC_HOME": str(tmp_path / "cxhome")})
    handled: list[str] = []

    def handler(cmd: str) -> dict[str, Any]:
        handled.append(cmd)
        return {"ok": True}

    server = ControlServer(paths, handler)
    server.start()
    silent = [socket.socket(socket.AF_UNIX) for _ in range(3)]
    try:
        for s in silent:
            s.connect(str(paths.control_socket))  # connects, then says nothing at all
        assert send(paths, "pause", timeout=2.0)["ok"]
        assert send(paths, "stop", timeout=2.0)["ok"]
        assert handled == ["pause", "stop"]
        # The silent clients are dropped after the time limit, their threads with them.
        for s in silent:
            s.settimeout(CLIENT_TIMEOUT + 5)
            while s.recv(4096):  # the unanswered challenge, then the end of the connection
                pass
        wait_until(lambda: not [t for t in threading.enumerate() if t.name == "control-conn"], 5,
                   what="connection threads ended")
    finally:
        for s in silent:
            s.close()
        server.close()
