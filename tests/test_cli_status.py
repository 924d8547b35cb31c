"""``cxsync status`` as a person reads it: sizes, local times with their age, and no sync talk without sync."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cxsync.agent import render
from tests import transcripts as T


def cx(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cxsync.agent", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


@pytest.fixture
def captured(claude_home: Path) -> Path:
    s = "f00d0000-0000-4000-8000-000000000001"
    T.write(T.session_file(claude_home, s), [T.user(s, "hello status")])
    assert cx("import", "--root", str(claude_home)).returncode == 0
    return claude_home


def test_status_without_a_sync_target_says_nothing_about_an_outbox(captured: Path) -> None:
    r = cx("status")
    assert r.returncode == 3  # the agent is not running
    assert "1 messages in 1 sessions" in r.stdout or "1 message" in r.stdout
    assert re.search(r"cache .*\d+(\.\d)? (KiB|MiB)", r.stdout)
    assert "off" in r.stdout and "outbox" not in r.stdout and "last push" not in r.stdout


def test_status_shows_the_last_sync_as_an_age_in_the_local_zone(captured: Path, tmp_path: Path) -> None:
    env = {"CXSYNC_SYNC_TARGET": f"sqlite:{tmp_path / 'log.db'}", "TZ": "America/Sao_Paulo"}
    assert cx("sync", "--once", env=env).returncode == 0
    out = cx("status", env=env).stdout
    line = next(x for x in out.splitlines() if x.startswith("last push"))
    assert "just now" in line or "minute ago" in line
    from datetime import datetime, timedelta, timezone

    local = datetime.now(timezone.utc) - timedelta(hours=3)  # São Paulo: UTC-3, no daylight saving since 2019
    assert local.strftime("%Y-%m-%d %H:") in line
    assert "outbox       0 pending" in out


@pytest.mark.parametrize("seconds,short,long", [
    (10, "just now", "just now"), (120, "2m ago", "2 minutes ago"), (3600, "1h ago", "1 hour ago"),
    (3 * 86400 + 5, "3d ago", "3 days ago"), (30 * 86400, "4w ago", "4 weeks ago"),
])
def test_ages_read_like_atuin(seconds: int, short: str, long: str) -> None:
    assert render.ago(seconds) == short and render.ago(seconds, long=True) == long


@pytest.mark.parametrize("n,text", [(512, "512 B"), (1536, "1.5 KiB"), (23 * 1024 ** 2, "23 MiB"),
                                    (5 * 1024 ** 3, "5.0 GiB")])
def test_sizes_are_human(n: int, text: str) -> None:
    assert render.size(n) == text


def test_sync_now_without_a_sync_target_says_there_is_nothing_to_sync(captured: Path) -> None:
    import signal

    from tests.helpers import wait_until

    env = {**os.environ, "CXSYNC_ROOTS": str(captured)}
    proc = subprocess.Popen([sys.executable, "-m", "cxsync.agent", "run"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: cx("status").returncode == 0, 30, interval=0.2, what="the agent running")
        r = cx("sync-now")
        assert r.returncode == 0 and "nothing to sync" in r.stdout and ": ok" not in r.stdout
        # the agent's own target counts, not the calling shell's
        r = cx("sync-now", env={"CXSYNC_SYNC_TARGET": "sqlite:/elsewhere/log.db"})
        assert "nothing to sync" in r.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
