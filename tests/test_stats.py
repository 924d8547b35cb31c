"""`cxsync stats`: what a user with a large history wants to see."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import tests.transcripts as T


def cx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cxsync.agent", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)


def _history(claude_home: Path) -> None:
    a, b = "c0ffee00-0000-4000-8000-000000000001", "d00dfeed-0000-4000-8000-000000000002"
    T.write(T.session_file(claude_home, a, "-home-dev-webapp"), [
        T.user(a, "first prompt", cwd="/home/dev/webapp"),
        *T.assistant_lines(a, [T.text("an answer")], cwd="/home/dev/webapp"),
        T.user(a, "second prompt", cwd="/home/dev/webapp"),
    ])
    T.write(T.session_file(claude_home, b, "-home-dev-evil"), [
        T.user(b, "a prompt in a project with a hostile name", cwd="/home/dev/\x1b[31mevil"),
    ])
    assert cx("import", "--root", str(claude_home), "--json").returncode == 0


def test_stats_json_counts_tokens_projects_and_space(claude_home: Path) -> None:
    _history(claude_home)
    r = cx("stats", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert (s["messages"], s["sessions"], s["projects"]) == (4, 2, 2)
    assert s["messages_by_role"] == {"assistant": 1, "user": 3}
    (model, tokens), = s["tokens_by_model"].items()
    assert model and tokens["output"] > 0
    assert list(s["tokens_by_month"]) and all(len(m) == 7 for m in s["tokens_by_month"])
    assert s["top_projects"][0] == {**s["top_projects"][0], "project": "/home/dev/webapp", "messages": 3}
    parts = s["cache"]["by_part"]
    assert {"events", "messages", "messages_fts"} <= set(parts) and all(v > 0 for v in parts.values())
    assert s["cache"]["bytes"] >= sum(parts.values()) * 0.5


def test_stats_prints_project_names_as_data(claude_home: Path) -> None:
    _history(claude_home)
    r = cx("stats")
    assert r.returncode == 0, r.stderr
    assert "/home/dev/webapp" in r.stdout and "full-text index" in r.stdout
    assert "\x1b" not in r.stdout and "\\x1b[31mevil" in r.stdout
