"""Acceptance on the real transcripts in ../shared/fixtures/claude-home (skipped where that folder is absent)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from cxsync.agent.discovery import discover


def cx(*args: str, env_home: Path) -> subprocess.CompletedProcess[str]:
    import os

    env = dict(os.environ, CXSYNC_HOME=str(env_home))
    return subprocess.run([sys.executable, "-m", "cxsync.agent", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def _records(path: Path):
    for raw in path.read_bytes().split(b"\n"):
        if raw.strip():
            yield orjson.loads(raw)


def _typed_prompts(path: Path):
    for r in _records(path):
        if r.get("type") != "user" or r.get("isMeta") or r.get("isCompactSummary") or r.get("isSidechain"):
            continue
        c = r["message"]["content"]
        if isinstance(c, str) and len(c.split()) >= 2:
            yield c


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from tests.conftest import REAL_FIXTURES

    if not REAL_FIXTURES.is_dir():
        pytest.skip(f"real transcripts not present at {REAL_FIXTURES}")
    home = tmp_path_factory.mktemp("cxhome")
    r = cx("import", "--root", str(REAL_FIXTURES), "--json", env_home=home)
    assert r.returncode == 0, r.stderr
    return home, json.loads(r.stdout)


def test_one_session_per_main_file_with_subagents_attached(imported, real_fixtures):
    home, summary = imported
    files = list(discover([real_fixtures]))
    mains = {f.session for f in files if f.kind == "main"}
    r = cx("sessions", "--json", env_home=home)
    sessions = json.loads(r.stdout)
    assert {s["session"] for s in sessions} == mains
    by_id = {s["session"]: s for s in sessions}
    subs = [f for f in files if f.kind == "subagent"]
    assert subs
    for f in subs:
        assert by_id[f.parent]["subagents"] >= 1
    assert summary["files"] == len(files) and summary["skipped_lines"] == 0


def test_merged_assistant_count_equals_distinct_message_ids(imported, real_fixtures):
    home, _ = imported
    ids = set()
    for f in discover([real_fixtures]):
        for r in _records(f.path):
            if r.get("type") == "assistant":
                ids.add(r["message"]["id"])
    import apsw

    conn = apsw.Connection(str(home / "data" / "cache.db"), flags=apsw.SQLITE_OPEN_READONLY)
    (n,) = conn.execute("SELECT count(*) FROM messages WHERE role='assistant'").fetchone()
    assert n == len(ids)


def test_every_typed_prompt_is_found_in_its_session(imported, real_fixtures):
    home, _ = imported
    checked = 0
    for f in discover([real_fixtures]):
        if f.kind != "main":
            continue
        for prompt in _typed_prompts(f.path):
            words = " ".join(prompt.split()[:8])
            r = cx("query", words, "--session", f.session, "--role", "user", "--limit", "50", "--json",
                   env_home=home)
            assert r.returncode == 0, r.stderr
            hits = json.loads(r.stdout)
            assert any(h["root_session"] == f.session for h in hits), (f.session, words)
            checked += 1
    assert checked >= 10


def test_second_import_adds_nothing(imported, real_fixtures):
    home, _ = imported
    r = cx("import", "--root", str(real_fixtures), "--json", env_home=home)
    again = json.loads(r.stdout)
    assert again["messages"] == 0 and again["sessions"] == 0 and again["records"] == 0


def test_show_prints_the_conversation_in_order(imported):
    home, _ = imported
    r = cx("show", "55604662", "--json", env_home=home)
    data = json.loads(r.stdout)
    times = [m["occurred_at"] for m in data["messages"]]
    assert times == sorted(times) and len(times) == data["session"]["messages"]
    assert data["session"]["project"] == "/home/marco/projects/spotter"
