"""``cxsync doctor`` finds what usually goes wrong and says what to do — through the CLI, on real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from cxsync.agent.cli_doctor import FAIL, OK, WARN, check_target, filesystem_of, watch_check
from tests import transcripts as T
from tests.helpers import wait_until


def cx(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cxsync.agent", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def findings(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, dict[str, str]]]:
    r = cx("doctor", "--json", *args, env=env)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, {c["name"]: c for c in json.loads(r.stdout)}


@pytest.fixture
def captured(claude_home: Path) -> Path:
    s = "abcd0000-0000-4000-8000-000000000001"
    T.write(T.session_file(claude_home, s), [T.user(s, "hello doctor")])
    assert cx("import", "--root", str(claude_home)).returncode == 0
    return claude_home


def test_missing_transcripts_fail_with_what_to_do(tmp_path: Path) -> None:
    rc, f = findings(env={"CXSYNC_ROOTS": str(tmp_path / "nowhere")})
    assert rc == 1
    assert f["transcripts"]["status"] == FAIL and "--root" in f["transcripts"]["hint"]
    assert f["cache"]["status"] == WARN and "cxsync import" in f["cache"]["hint"]
    text = cx("doctor", env={"CXSYNC_ROOTS": str(tmp_path / "nowhere")}).stdout
    assert "✗ transcripts" in text and "→" in text


def test_a_healthy_setup_passes(captured: Path) -> None:
    rc, f = findings(env={"CXSYNC_ROOTS": str(captured)})
    assert rc == 0
    assert f["transcripts"]["status"] == OK and "1 transcripts" in f["transcripts"]["detail"]
    assert f["cache"]["status"] == OK and "integrity ok" in f["cache"]["detail"]
    assert f["agent"]["status"] == WARN and "cxsync run" in f["agent"]["hint"]


def test_a_damaged_cache_is_found_with_the_rebuild_hint(captured: Path, cxhome: Path) -> None:
    db = cxhome / "data" / "cache.db"
    data = bytearray(db.read_bytes())
    for i in range(4096 * 2, min(len(data), 4096 * 6)):  # clobber a few pages past the header
        data[i] = 0x5A
    db.write_bytes(bytes(data))
    rc, f = findings(env={"CXSYNC_ROOTS": str(captured)})
    assert rc == 1
    assert f["cache"]["status"] == FAIL and "rebuild" in f["cache"]["hint"]
    assert f["transcripts"]["status"] == OK  # one failing check hides no other


def test_a_sync_log_in_a_missing_folder_fails(captured: Path, tmp_path: Path) -> None:
    rc, f = findings(env={"CXSYNC_ROOTS": str(captured),
                          "CXSYNC_SYNC_TARGET": f"sqlite:{tmp_path / 'gone' / 'log.db'}"})
    assert rc == 1 and f["sync target"]["status"] == FAIL and "mkdir" in f["sync target"]["hint"]
    rc, f = findings(env={"CXSYNC_ROOTS": str(captured), "CXSYNC_SYNC_TARGET": f"sqlite:{tmp_path / 'log.db'}"})
    assert f["sync target"]["status"] == OK


def test_a_sync_log_on_a_network_filesystem_is_refused(tmp_path: Path) -> None:
    mounts = (f"/dev/sda1 / ext4 rw 0 0\nserver:/export {tmp_path} nfs4 rw 0 0\n"
              "tmpfs /run tmpfs rw 0 0\n")
    assert filesystem_of(tmp_path / "team", mounts) == (str(tmp_path), "nfs4")
    assert filesystem_of(Path("/home/x"), mounts) == ("/", "ext4")
    cfg = SimpleNamespace(sync=SimpleNamespace(target=f"sqlite:{tmp_path}/log.db"),
                          paths=SimpleNamespace(config_file=tmp_path / "config.toml"))
    [c] = list(check_target(cfg, mounts))
    assert c.status == FAIL and "network filesystem" in c.detail and "nfs4" in c.detail


def test_low_inotify_limits_are_a_warning_with_the_sysctl() -> None:
    assert watch_check(10_000, 8192).status == WARN
    assert "max_user_watches" in watch_check(10_000, 8192).hint
    assert watch_check(10, 8192).status == OK


def test_a_running_agent_is_reported(captured: Path, cxhome: Path) -> None:
    env = {**os.environ, "CXSYNC_ROOTS": str(captured)}
    proc = subprocess.Popen([sys.executable, "-m", "cxsync.agent", "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: cx("status", env={"CXSYNC_ROOTS": str(captured)}).returncode == 0, 30,
                   interval=0.2, what="the agent running")
        rc, f = findings(env={"CXSYNC_ROOTS": str(captured)})
        assert f["agent"]["status"] == OK and f"pid {proc.pid}" in f["agent"]["detail"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
