"""jsonl export of the layouts and damage the real fixtures do not cover: 2.0.x flat agent files, nested
subagent folders, blank and unreadable lines, U+2028 inside strings, a subagent given instead of its parent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests import transcripts as T

SID = "c0c0c0c0-0000-4000-8000-00000000c0c0"


def cx(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXSYNC_")}
    env["CXSYNC_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "cxsync.agent", *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_flat_and_nested_subagent_files_keep_their_layout(tmp_path: Path, claude_home: Path) -> None:
    main = T.write(T.session_file(claude_home, SID), [T.user(SID, "parent prompt \u2028 with a line separator"),
                                                      *T.assistant_lines(SID, [T.text("parent answer")])])
    folder = main.parent
    flat = T.write(folder / "agent-f1a7.jsonl", [T.user(SID, "flat 2.0 agent prompt", isSidechain=True,
                                                        agentId="f1a7")])
    nested = T.write(folder / SID / "subagents" / "deep" / "agent-ne57.jsonl",
                     [T.user(SID, "nested agent prompt", isSidechain=True, agentId="ne57")])
    home = tmp_path / "cx"
    assert cx(home, "import", "--root", str(claude_home)).returncode == 0
    out = tmp_path / "out"
    r = cx(home, "export", SID, "-o", f"{out}/")
    assert r.returncode == 0, r.stderr
    assert (out / main.name).read_bytes() == main.read_bytes()
    assert (out / "agent-f1a7.jsonl").read_bytes() == flat.read_bytes()
    assert (out / SID / "subagents" / "deep" / "agent-ne57.jsonl").read_bytes() == nested.read_bytes()
    sub = cx(home, "export", f"{SID}:agent-ne57")
    assert sub.returncode == 2 and f"use the parent session: {SID}" in sub.stderr


def test_lines_not_held_are_left_out_and_counted(tmp_path: Path, claude_home: Path) -> None:
    path = T.session_file(claude_home, SID)
    good = [T.line(T.user(SID, "first")), b"\n", b"this is not json\n", T.line(T.user(SID, "last"))]
    path.parent.mkdir(parents=True)
    path.write_bytes(b"".join(good))
    home = tmp_path / "cx"
    assert cx(home, "import", "--root", str(claude_home)).returncode == 0
    r = subprocess.run([sys.executable, "-m", "cxsync.agent", "export", SID], capture_output=True,
                       env={**os.environ, "CXSYNC_HOME": str(home)}, timeout=60)
    assert r.stdout == good[0] + good[3]
    assert b"2 line(s)" in r.stderr and b"not held" in r.stderr


def test_markdown_and_html_to_a_folder(tmp_path: Path, claude_home: Path) -> None:
    T.write(T.session_file(claude_home, SID), [T.user(SID, "what is a monad"),
                                               *T.assistant_lines(SID, [T.text("a monoid in **endofunctors**")])])
    home = tmp_path / "cx"
    assert cx(home, "import", "--root", str(claude_home)).returncode == 0
    for fmt, ext, marker in (("markdown", "md", "a monoid in **endofunctors**"),
                             ("html", "html", "a monoid in <strong>endofunctors</strong>")):
        r = cx(home, "export", SID[:8], "--format", fmt, "-o", f"{tmp_path}/")
        assert r.returncode == 0, r.stderr
        page = (tmp_path / f"{SID}.{ext}").read_text()
        assert "what is a monad" in page and marker in page


def test_names_from_other_machines_never_climb_out_of_the_folder() -> None:
    from cxsync.cache.records import _relpath, safe_name

    assert safe_name("ae4a77f8-aedd-4bc1-888f-c94edc91af04.jsonl") and safe_name("agent-é🚀.jsonl")
    for bad in ("..", ".", "", "a/b", "a\\b", "C:", "x\x1b[2J", "n" * 300):
        assert not safe_name(bad), bad
    root = "s1"
    assert _relpath(root, "s1:agent-x", "x", "/h/p/s1/subagents/agent-x.jsonl") == (
        ("s1", "subagents", "agent-x.jsonl"), "subagent")
    rel, kind = _relpath(root, "s1:agent-x", "x", "/h/p/s1/../../../etc/agent-x.jsonl")
    assert ".." not in rel and rel[0] in ("s1", "agent-x.jsonl")
    rel, _ = _relpath(root, "s1:agent-../../x", "../../x", None)
    assert rel[:2] == ("s1", "subagents") and safe_name(rel[2])


def test_an_unclosed_code_fence_in_an_answer_stays_inside_it() -> None:
    from markdown_it import MarkdownIt

    from cxsync.agent.export_render import Conversation, Item, to_markdown

    conv = Conversation("t", "s", None, [Item("answer", "look:\n```python\nx = 1"), Item("prompt", "next <b>q</b>")])
    html = MarkdownIt("commonmark").render(to_markdown(conv))
    assert "<h2>User" in html and "next &lt;b&gt;q&lt;/b&gt;" in html  # a heading again, the tag as text
