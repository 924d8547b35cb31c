"""Recall as a specification: exchanges (a prompt and what came of it), ranked, deduplicated, newest first among
equals, cut to a token budget without breaking a code block, printed as data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cxsync.cache import open_cache
from cxsync.cache.recall import blocks, clip, estimate_tokens, recall, recent_work
from tests import transcripts as T

CODE = "```python\ndef offsets():\n    return 'committed with the rows'\n```"


def cx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cxsync.agent", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)


def imported(claude_home: Path) -> Path:
    r = cx("import", "--root", str(claude_home), "--json")
    assert r.returncode == 0, r.stderr
    return Path(os.environ["CXSYNC_HOME"]) / "data" / "cache.db"


def turn(s: str, prompt: str, *replies: list[dict[str, Any]], cwd: str = "/home/dev/proj", t: int) -> list[Any]:
    out: list[Any] = [T.user(s, prompt, cwd=cwd, t=t)]
    for i, blocks_ in enumerate(replies):
        out += T.assistant_lines(s, blocks_, cwd=cwd, t=t + 1 + i)
    return out


def fences(text: str) -> int:
    return len(re.findall(r"^ {0,3}```", text, re.M))


# ---- budget and code blocks ---------------------------------------------------------------------------------


def test_clip_keeps_code_blocks_whole_or_leaves_them_out() -> None:
    text = "First the plan, in words. " * 8 + "\n\n" + CODE + "\n\nThen the reasoning after it. " * 6
    for budget in range(5, estimate_tokens(text) + 5):
        out = clip(text, budget)
        assert estimate_tokens(out) <= budget
        assert fences(out) in (0, 2), out
        if fences(out) == 2:
            assert CODE in out
    assert clip(text, 10_000) == text.strip()


def test_an_unterminated_fence_is_closed() -> None:
    runs = blocks("intro\n```sh\nrm -rf build\nmake")
    assert runs == [(False, "intro"), (True, "```sh\nrm -rf build\nmake\n```")]


def test_the_estimate_errs_high_for_text_that_is_not_ascii() -> None:
    assert estimate_tokens("a" * 35) == 10
    assert estimate_tokens("日本語のテキスト") == 8  # one token a character


# ---- exchanges --------------------------------------------------------------------------------------------------


def test_an_exchange_is_the_prompt_with_its_outcome_not_the_tool_calls_between(claude_home: Path) -> None:
    s = "e0000000-0000-4000-8000-000000000001"
    T.write(T.session_file(claude_home, s), [
        *turn(s, "the sync test is flaky on CI, why?",
              [T.text("Let me look."), T.tool_use("Bash", {"command": "pytest -x tests/test_sync.py"})], t=10),
        T.tool_result(s, "toolu_x", "FAILED test_sync.py::test_pull - TimeoutError: cursor never advanced", t=13),
        *T.assistant_lines(s, [T.text("Fixed: the pull loop now waits on the stop event, not a bare sleep."),
                               T.tool_use("Bash", {"command": "git commit -am 'wait on stop'"})], t=14),
        *turn(s, "thanks, now update the README", [T.text("README updated.")], t=20),
    ])
    with open_cache(imported(claude_home), readonly=True) as cache:
        block = recall(cache, "cursor never advanced")
    [item] = block.items
    assert [label for label, _ in item.parts] == ["Prompt", "Matched", "Outcome"]
    assert dict(item.parts)["Prompt"] == "the sync test is flaky on CI, why?"
    assert "cursor never advanced" in dict(item.parts)["Matched"]
    assert dict(item.parts)["Outcome"] == "Fixed: the pull loop now waits on the stop event, not a bare sleep."
    assert "README" not in block.markdown and "[tool_use" not in block.markdown
    assert f"session {s[:8]}" in block.markdown and "project /home/dev/proj" in block.markdown
    assert "2026-11-01" in block.markdown


def test_the_same_exchange_twice_is_shown_once_the_newest(claude_home: Path) -> None:
    a, b = "d0000000-0000-4000-8000-00000000000a", "d0000000-0000-4000-8000-00000000000b"
    for s, t in ((a, 10), (b, 5000)):
        T.write(T.session_file(claude_home, s), turn(s, "how do we rotate the signing key?",
                                                     [T.text("Run `cxsync keys rotate` then restart.")], t=t))
    with open_cache(imported(claude_home), readonly=True) as cache:
        block = recall(cache, "rotate signing key")
    assert [i.session for i in block.items] == [b]


def test_newest_first_among_equals_but_relevance_first(claude_home: Path) -> None:
    old, new, weak = ("f0000000-0000-4000-8000-00000000000%d" % i for i in (1, 2, 3))
    T.write(T.session_file(claude_home, old), turn(old, "quaternion drift in the gimbal solver, seen in run one",
                                                   [T.text("Normalise after each step (run one).")], t=10))
    T.write(T.session_file(claude_home, new), turn(new, "quaternion drift in the gimbal solver, seen in run two",
                                                   [T.text("Normalise after each step (run two).")], t=900))
    T.write(T.session_file(claude_home, weak), turn(
        weak, "a long and mostly unrelated planning note that mentions quaternion once among many other words "
              "about budgets, schedules, hiring, travel, offsites, the roadmap and what the team will do in spring",
        [T.text("Noted.")], t=5000))
    with open_cache(imported(claude_home), readonly=True) as cache:
        block = recall(cache, "quaternion drift")
        assert [i.session for i in block.items][:2] == [new, old]
        block = recall(cache, "quaternion")
    assert [i.session for i in block.items] == [new, old, weak]


def test_the_block_never_exceeds_its_budget_on_the_real_transcripts(real_fixtures: Path) -> None:
    with open_cache(imported(real_fixtures), readonly=True) as cache:
        for topic in ("phoenix server", "TODO app localStorage", "opentelemetry tracing", "xterm scrolling"):
            sizes = []
            for budget in (60, 100, 250, 600, 1200, 2000, 5000):
                block = recall(cache, topic, budget=budget)
                assert block.tokens <= budget and fences(block.markdown) % 2 == 0
                sizes.append(len(block.items))
            assert sizes[-1] >= 1 and sizes == sorted(sizes)  # more room, never fewer items
        for budget in (60, 300, 2000):
            assert recent_work(cache.conn, "spotter", budget=budget).tokens <= budget


def test_transcript_text_reaches_the_terminal_as_data(claude_home: Path) -> None:
    s = "a0000000-0000-4000-8000-0000000000c1"
    T.write(T.session_file(claude_home, s), turn(s, "colour test \x1b[31mred\x1b[0m and a bell \x07 here",
                                                 [T.text("**bold** stays Markdown; \x1b]0;title\x07 gone")], t=1))
    imported(claude_home)
    r = cx("recall", "colour", "test")
    assert r.returncode == 0
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout.replace("\\x07", "")
    assert "colour test red and a bell \\x07 here" in r.stdout and "**bold** stays Markdown;  gone" in r.stdout


# ---- the command ----------------------------------------------------------------------------------------------


def test_recall_command_json_and_project_summary(claude_home: Path) -> None:
    s = "b0000000-0000-4000-8000-0000000000b1"
    T.write(T.session_file(claude_home, s, "-home-dev-webapp"), [
        *turn(s, "choose a date library", [T.text("Decision: use the standard library's zoneinfo.")],
              cwd="/home/dev/webapp", t=1),
        *turn(s, "and the last step?", [T.text("Shipped in v2.")], cwd="/home/dev/webapp", t=9)])
    imported(claude_home)
    data = json.loads(cx("recall", "date", "library", "--json").stdout)
    assert data["tokens"] <= data["budget"] == 2000 and data["items"][0]["kind"] == "exchange"
    assert data["items"][0]["parts"][-1] == {"label": "Outcome", "text": "Decision: use the standard library's "
                                                                          "zoneinfo."}
    summary = cx("recall", "--project", "webapp").stdout
    assert summary.startswith("## Recent work on webapp")
    assert "**Started with:** choose a date library" in summary and "**Last outcome:** Shipped in v2." in summary
    assert "**Last asked:** and the last step?" in summary
    r = cx("recall")
    assert r.returncode == 2 and "nothing to recall" in r.stderr
    assert cx("recall", "nothing-matches-this-xyzzy").stderr.strip() == "Nothing recalled."
    assert cx("recall", "x", "--budget", "10").returncode == 2


def test_a_passing_mention_in_tool_output_does_not_crowd_out_the_exchange_about_the_topic(claude_home: Path) -> None:
    about, passing = "c1000000-0000-4000-8000-0000000000a1", "c1000000-0000-4000-8000-0000000000a2"
    T.write(T.session_file(claude_home, about), turn(about, "why does the gimbal solver drift after an hour?",
                                                     [T.text("The gimbal solver drift came from float32; fixed.")],
                                                     t=10))
    log = " ".join(f"step {i} ok" for i in range(30)) + " gimbal " + " ".join(f"tick {i}" for i in range(300))
    T.write(T.session_file(claude_home, passing), [
        *turn(passing, "run the nightly job", [T.tool_use("Bash", {"command": "make nightly"}, tid="toolu_n")],
              t=50),
        T.tool_result(passing, "toolu_n", log, t=52),
        *T.assistant_lines(passing, [T.text("Nightly passed.")], t=53)])
    with open_cache(imported(claude_home), readonly=True) as cache:
        assert [i.session for i in recall(cache, "gimbal solver drift").items] == [about]


def test_an_exchange_about_all_of_the_topic_beats_one_repeating_a_single_word(claude_home: Path) -> None:
    one, all_ = "c2000000-0000-4000-8000-0000000000b1", "c2000000-0000-4000-8000-0000000000b2"
    T.write(T.session_file(claude_home, one), turn(one, "flux? flux! flux, flux, flux and flux again",
                                                   [T.text("Yes.")], t=10))
    filler = " ".join(f"note{i}" for i in range(60))
    T.write(T.session_file(claude_home, all_), turn(all_, "what next?", [T.text(
        f"{filler} the capacitor calibration for the flux sensor is done {filler}")], t=20))
    for n in range(12):  # other work, so that the topic's words are rare as in a real history
        s = f"c2000000-0000-4000-8000-0000000001{n:02d}"
        T.write(T.session_file(claude_home, s), turn(s, f"unrelated task {n}", [T.text(f"done {n}")], t=30 + n))
    with open_cache(imported(claude_home), readonly=True) as cache:
        assert [i.session for i in recall(cache, "flux capacitor calibration").items][0] == all_


def test_a_message_of_parallel_subagents_in_one_file_is_not_credited_to_a_guessed_task(claude_home: Path) -> None:
    """Older transcripts keep parallel Task subagents (sidechains) in the session's file, prompts written at the
    same instant: which one a sidechain reply answers is unknown, so it stands alone."""
    s = "c3000000-0000-4000-8000-0000000000c1"
    T.write(T.session_file(claude_home, s), [
        *turn(s, "build the app", [T.text("Starting two tasks.")], t=1),
        T.user(s, "write the parser", t=5, isSidechain=True),
        T.user(s, "write the renderer", t=5, isSidechain=True),
        *T.assistant_lines(s, [T.text("Renderer uses a zebra-stripe table.")], t=8, isSidechain=True)])
    with open_cache(imported(claude_home), readonly=True) as cache:
        [item] = recall(cache, "zebra-stripe table").items
    assert [label for label, _ in item.parts] == ["Matched"] and "zebra" in dict(item.parts)["Matched"]


def test_what_was_asked_weighs_more_than_what_a_tool_printed(claude_home: Path) -> None:
    asked, printed = "c4000000-0000-4000-8000-0000000000d1", "c4000000-0000-4000-8000-0000000000d2"
    T.write(T.session_file(claude_home, asked), turn(asked, "segfault in the tessellator when the mesh is large",
                                                     [T.text("Fixed.")], t=10))
    T.write(T.session_file(claude_home, printed), [  # newer, shorter: plain bm25 would rank it first
        *turn(printed, "run it", [T.tool_use("Bash", {"command": "./run"}, tid="toolu_r")], t=100),
        T.tool_result(printed, "toolu_r", "segfault in the tessellator", t=102)])
    with open_cache(imported(claude_home), readonly=True) as cache:
        assert [i.session for i in recall(cache, "segfault tessellator").items][0] == asked


def test_knowledge_items_about_the_topic_come_first(claude_home: Path) -> None:
    s = "c5000000-0000-4000-8000-0000000000e1"
    T.write(T.session_file(claude_home, s), [
        *turn(s, "which date library for the scheduler?",
              [T.text("We decided to use zoneinfo from the standard library because it needs no dependency.")],
              t=1),
        *turn(s, "and the queue?", [T.text("We will go with a plain SQLite table for the queue.")], t=9)])
    imported(claude_home)
    assert len(json.loads(cx("knowledge", "--json").stdout)) == 2
    data = json.loads(cx("recall", "date", "library", "--json").stdout)
    kinds = [i["kind"] for i in data["items"]]
    assert kinds[0] == "knowledge" and "exchange" in kinds
    first = data["items"][0]
    assert first["title"].startswith("Decision: We decided to use zoneinfo")
    assert {"label": "Why", "text": "because it needs no dependency."} in first["parts"]
    assert data["markdown"].index("Decision: We decided") < data["markdown"].index("which date library")
    assert "plain SQLite table" not in data["markdown"].split("### 2.")[0]  # the other decision is not about it


def test_a_cache_not_yet_migrated_for_knowledge_still_recalls(claude_home: Path) -> None:
    """Readers never migrate: until the agent (the writer) upgrades the cache, recall works without knowledge."""
    import apsw

    s = "c6000000-0000-4000-8000-0000000000f1"
    T.write(T.session_file(claude_home, s), turn(s, "tune the bloom filter", [T.text("Bloom tuned.")], t=1))
    db = imported(claude_home)
    conn = apsw.Connection(str(db))
    conn.execute("DROP TABLE knowledge_shares")
    conn.close()
    r = cx("recall", "bloom", "filter")
    assert r.returncode == 0 and "Bloom tuned." in r.stdout
