"""`cxsync hook session-start` as Claude Code runs it: JSON on stdin, the context to inject as JSON on stdout, and
never a broken session — whatever goes wrong prints nothing, exits 0 and is logged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cxsync.cache.recall import estimate_tokens
from tests import transcripts as T

PROJECT = "/home/bob/orbit"
DECISION = ("Decision: keep the file offsets in the cache database, committed in the same transaction as the rows "
            "they cover, so a crash never loses or duplicates a line.")


def hook_input(cwd: str = PROJECT, session: str = "5e55101a-0000-4000-8000-00000000cafe", source: str = "startup"
               ) -> str:
    """What Claude Code writes on the hook's stdin (hooks reference, SessionStart input)."""
    return json.dumps({"session_id": session, "transcript_path": f"/home/bob/.claude/projects/x/{session}.jsonl",
                       "cwd": cwd, "permission_mode": "default", "hook_event_name": "SessionStart",
                       "source": source, "model": "claude-opus-4-5"})


class Machine:
    def __init__(self, tmp: Path, name: str, log: Path) -> None:
        self.name = name
        self.home = tmp / f"cx-{name}"
        self.home.mkdir()
        (self.home / "config.toml").write_text(
            f'[identity]\ntenant = "acme"\nuser = "bob"\nmachine = "{name}"\n[sync]\ntarget = "sqlite:{log}"\n')
        self.claude = tmp / f"claude-{name}"
        (self.claude / "projects").mkdir(parents=True)

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cxsync.agent", *args], capture_output=True, text=True,
                              input=stdin, env={**os.environ, "CXSYNC_HOME": str(self.home)}, timeout=120)

    def ok(self, *args: str) -> Any:
        r = self.run(*args, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def hook(self, stdin: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.run("hook", "session-start", *extra, stdin=stdin)


def decision_session(m: Machine) -> str:
    s = "0b17a1ed-0000-4000-8000-0000000000d1"
    T.write(T.session_file(m.claude, s, "-home-bob-orbit"), [
        T.user(s, "should the file offsets live in a side file or in the cache db?", cwd=PROJECT),
        *T.assistant_lines(s, [T.thinking("weighing crash safety"),
                               T.tool_use("Read", {"file_path": "cache/store.py"})], cwd=PROJECT),
        *T.assistant_lines(s, [T.text(DECISION)], cwd=PROJECT),
    ])
    other = "0b17a1ed-0000-4000-8000-0000000000d2"
    T.write(T.session_file(m.claude, other, "-home-bob-elsewhere"), [
        T.user(other, "unrelated work on the billing service", cwd="/home/bob/billing"),
        *T.assistant_lines(other, [T.text("Billing fixed.")], cwd="/home/bob/billing"),
    ])
    assert m.ok("import", "--root", str(m.claude))["messages"] == 5
    return s


@pytest.fixture
def synced(tmp_path: Path) -> tuple[Machine, Machine, str]:
    log = tmp_path / "shared-log.db"
    laptop, desktop = Machine(tmp_path, "laptop", log), Machine(tmp_path, "desktop", log)
    sid = decision_session(laptop)
    assert laptop.ok("sync", "--once")["pushed"] > 0
    assert desktop.ok("sync", "--once")["pulled"]["u/bob"]["applied"] > 0
    return laptop, desktop, sid


def test_a_new_session_on_another_machine_is_told_the_decision_made_on_the_first(synced) -> None:
    laptop, desktop, sid = synced
    r = desktop.hook(hook_input())
    assert r.returncode == 0 and r.stderr == ""
    out = json.loads(r.stdout)
    assert out["hookSpecificOutput"]["hookEventName"] == "SessionStart"
    context = out["hookSpecificOutput"]["additionalContext"]
    assert DECISION in context
    assert "should the file offsets live in a side file or in the cache db?" in context
    assert f"session {sid[:8]}" in context and "machine laptop" in context and f"project {PROJECT}" in context
    assert "billing" not in context.lower()  # another project's work stays out
    assert "[tool_use" not in context and "weighing crash safety" not in context  # what was said, not how


def test_the_project_is_the_folder_and_those_below_it_and_a_resumed_session_is_not_recalled_to_itself(synced
                                                                                                        ) -> None:
    _, desktop, sid = synced

    def context(cwd: str, session: str = "new") -> str:
        r = desktop.hook(hook_input(cwd=cwd, session=session))
        assert r.returncode == 0
        return str(json.loads(r.stdout)["hookSpecificOutput"]["additionalContext"]) if r.stdout else ""

    assert DECISION in context("/home/bob") and "Billing fixed." in context("/home/bob")  # both projects below
    assert context("/home/bo") == ""  # a name prefix is not a folder
    assert context(PROJECT + "/cache") == ""  # a folder inside the project holds no session
    assert "Billing fixed." in context("/home/bob", session=sid) and DECISION not in context("/home/bob", sid)


def test_the_block_keeps_to_its_budget(synced) -> None:
    _, desktop, _ = synced
    for budget in (120, 200, 400):
        small = desktop.hook(hook_input(cwd="/home/bob"), "--budget", str(budget))
        context = json.loads(small.stdout)["hookSpecificOutput"]["additionalContext"]
        assert estimate_tokens(context) <= budget and "machine laptop" in context


@pytest.mark.parametrize("stdin, why", [
    ("this is not json", "JSONDecodeError"),
    ("[1, 2, 3]", "not an object"),
    ('{"cwd": 42, "session_id": []}', None),
])
def test_bad_input_prints_nothing_exits_0_and_is_logged(tmp_path: Path, stdin: str, why: str | None) -> None:
    m = Machine(tmp_path, "laptop", tmp_path / "log.db")
    decision_session(m)
    r = m.hook(stdin)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    log = m.home / "logs" / "hook.log"
    if why:
        assert why in log.read_text()
        assert oct(log.stat().st_mode & 0o777) == "0o600"


def test_a_corrupt_cache_prints_nothing_exits_0_and_is_logged(tmp_path: Path) -> None:
    m = Machine(tmp_path, "laptop", tmp_path / "log.db")
    decision_session(m)
    db = m.home / "data" / "cache.db"
    for extra in ("-wal", "-shm"):
        Path(str(db) + extra).unlink(missing_ok=True)
    db.write_bytes(b"not a database at all" * 100)
    r = m.hook(hook_input())
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert "session-start failed" in (m.home / "logs" / "hook.log").read_text()


def test_no_cache_yet_is_silent(tmp_path: Path) -> None:
    m = Machine(tmp_path, "fresh", tmp_path / "log.db")
    r = m.hook(hook_input())
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert not (m.home / "logs" / "hook.log").exists()


def test_the_module_entry_point_answers_the_same(synced) -> None:
    """`python -m cxsync.agent.hook session-start`: the same answer without loading the CLI."""
    _, desktop, _ = synced
    r = subprocess.run([sys.executable, "-m", "cxsync.agent.hook", "session-start"], input=hook_input(),
                       capture_output=True, text=True, env={**os.environ, "CXSYNC_HOME": str(desktop.home)},
                       timeout=60)
    cli = desktop.hook(hook_input(), "--budget", "1500")
    assert r.returncode == 0 and r.stdout == cli.stdout != ""


def test_the_answer_comes_as_soon_as_the_input_is_complete_even_if_stdin_stays_open(synced) -> None:
    _, desktop, _ = synced
    p = subprocess.Popen([sys.executable, "-m", "cxsync.agent", "hook", "session-start"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "CXSYNC_HOME": str(desktop.home)})
    try:
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(hook_input())
        p.stdin.flush()  # and not closed
        import select

        assert select.select([p.stdout], [], [], 30)[0], "no answer while stdin stays open"
        assert DECISION in json.loads(p.stdout.readline())["hookSpecificOutput"]["additionalContext"]
        assert p.wait(timeout=30) == 0
    finally:
        p.kill()
        p.wait()


def test_the_decision_recorded_as_knowledge_on_one_machine_leads_the_block_on_the_other(tmp_path: Path) -> None:
    log = tmp_path / "shared-log.db"
    laptop, desktop = Machine(tmp_path, "laptop", log), Machine(tmp_path, "desktop", log)
    sid = decision_session(laptop)
    items = laptop.ok("knowledge")  # extraction (the agent runs it too) records the decision as an item
    assert [i["type"] for i in items] == ["decision"] and items[0]["session"] == sid
    laptop.ok("sync", "--once")
    desktop.ok("sync", "--once")
    context = json.loads(desktop.hook(hook_input()).stdout)["hookSpecificOutput"]["additionalContext"]
    first = context.split("### 1. ", 1)[1].split("### 2. ", 1)[0]
    assert first.startswith("Decision: ") and "machine laptop" in first and DECISION in first
    assert "Decisions and fixes recorded in this project" in context
    assert "### 2. should the file offsets live in a side file or in the cache db?" in context
