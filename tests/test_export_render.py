"""Markdown and HTML exports: every prompt and answer of the real fixtures, opened in a real headless browser;
transcript text stays text (no markup, no script, no terminal control)."""

from __future__ import annotations

import html
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests import transcripts as T
from tests.conftest import REAL_FIXTURES

CHROMIUM = "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                                    reason=f"no headless browser: {CHROMIUM} is not installed (apt install chromium)")


def cx(home: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXSYNC_")}
    env["CXSYNC_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "cxsync.agent", *args], capture_output=True, env=env, timeout=120)


def browser(tmp: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    profile = tmp / f"chromium-profile-{len(list(tmp.glob('chromium-profile-*')))}"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", *args],
        capture_output=True, timeout=120)


def words(text: str) -> str:
    return " ".join(re.findall(r"[A-Za-z0-9]+", text))


def rendered_lines(markdown: str) -> Iterator[str]:
    """The words of each line a reader sees once Markdown is rendered: block markers (quotes, bullets, list
    numbers, heading hashes) and fence lines are not text, and link targets vanish."""
    for line in markdown.split("\n"):
        if re.match(r"^\s*(```|~~~)", line):
            continue
        line = re.sub(r"^(\s*(>|[-*+](?=\s)|\d+[.)](?=\s)|#{1,6}(?=\s)))+", "", line)
        line = re.sub(r"\]\([^)\s]*\)", "]", line)
        if words(line):
            yield words(line)


class _Text(html.parser.HTMLParser):
    """The text a reader sees in a DOM: everything outside <head>, <style> and <script>."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.tags.append(tag)
        if tag in ("head", "style", "script"):
            self.skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("head", "style", "script"):
            self.skip -= 1

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def dom_text(dom: str) -> tuple[str, list[str]]:
    p = _Text()
    p.feed(dom)
    return "".join(p.parts), p.tags


def said(path: Path) -> Iterator[tuple[str, str]]:
    """(role, text) of every prompt a person typed and every answer text, read straight from the file."""
    for raw in path.read_bytes().split(b"\n"):
        if not raw.strip():
            continue
        r = json.loads(raw)
        if r.get("type") not in ("user", "assistant") or r.get("isMeta") or r.get("isCompactSummary"):
            continue
        content = r["message"]["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for b in blocks:
            if isinstance(b, dict) and b.get("type") == "text" and b["text"].strip():
                yield r["type"], b["text"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not REAL_FIXTURES.is_dir():
        pytest.skip(f"real transcripts not present at {REAL_FIXTURES}")
    h = tmp_path_factory.mktemp("cx")
    r = cx(h, "import", "--root", str(REAL_FIXTURES))
    assert r.returncode == 0, r.stderr
    return h


def _mains() -> list[Path]:
    return sorted(p for p in (REAL_FIXTURES / "projects").glob("*/*.jsonl"))


def test_markdown_has_every_prompt_and_answer(home: Path) -> None:
    checked = 0
    for src in _mains():
        r = cx(home, "export", src.stem, "--format", "markdown")
        assert r.returncode == 0, r.stderr
        page = words(html.unescape(r.stdout.decode()))  # the export writes a prompt's "<" as "&lt;"
        for role, text in said(src):
            assert words(text) in page, (src.stem, role, text[:80])
            checked += 1
    assert checked > 250


@needs_chromium
def test_html_opens_in_a_real_browser_with_every_prompt_and_answer(home: Path, tmp_path: Path) -> None:
    checked = 0
    for src in _mains():
        out = tmp_path / f"{src.stem}.html"
        r = cx(home, "export", src.stem, "--format", "html", "-o", str(out))
        assert r.returncode == 0, r.stderr
        shown = browser(tmp_path, "--dump-dom", out.as_uri())
        assert shown.returncode == 0, shown.stderr[-2000:]
        text, _ = dom_text(shown.stdout.decode())
        page = words(text)
        for role, said_text in said(src):
            if role == "user":  # a prompt is shown exactly as typed
                assert words(said_text) in page, (src.stem, role, said_text[:80])
            for line in rendered_lines(said_text) if role == "assistant" else ():
                assert line in page, (src.stem, role, line[:80])
            checked += 1
    assert checked > 250


def rgb(img: Any) -> list[bytes]:
    data = img.tobytes()
    return [data[i:i + 3] for i in range(0, len(data), 3)]


@needs_chromium
def test_screenshot_shows_the_conversation(home: Path, tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "s.html"
    assert cx(home, "export", "55604662", "--format", "html", "-o", str(out)).returncode == 0
    shot = tmp_path / "s.png"
    r = browser(tmp_path, f"--screenshot={shot}", "--window-size=1000,800", "--hide-scrollbars", out.as_uri())
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    img = Image.open(shot).convert("RGB")
    assert img.size == (1000, 800)
    pixels = rgb(img)
    ink = sum(1 for p in pixels if sum(p) < 600) / len(pixels)  # text and borders
    prompt_blue = sum(1 for p in pixels if p[2] > 230 and p[0] < 235 and p[2] - p[0] > 20) / len(pixels)
    assert ink > 0.01, f"the page looks blank ({ink:.2%} dark pixels)"
    assert prompt_blue > 0.01, "no user prompt box is visible"
    blank = browser(tmp_path, f"--screenshot={tmp_path / 'blank.png'}", "--window-size=1000,800", "about:blank")
    assert blank.returncode == 0
    assert sum(1 for p in rgb(Image.open(tmp_path / "blank.png").convert("RGB")) if sum(p) < 600) == 0


HOSTILE = ("<script>document.title='pwned'</script> <img src=x onerror=\"document.title='pwned'\">"
           " [click](javascript:alert(1)) \x1b[31mred\x1b[0m & <b>bold?</b>")


@pytest.fixture
def hostile_home(tmp_path: Path, claude_home: Path) -> Path:
    sid = "5a5a5a5a-0000-4000-8000-000000000001"
    tid = "toolu_hostile"
    T.write(T.session_file(claude_home, sid), [
        T.user(sid, HOSTILE),
        *T.assistant_lines(sid, [T.text("answer: " + HOSTILE + "\n\n```python\nprint('<script>')\n```"),
                                 T.tool_use("Bash", {"command": "echo '</pre><script>x</script>'"}, tid)]),
        T.tool_result(sid, tid, "</details><script>document.title='pwned'</script>\x1b]0;title\x07"),
    ])
    # a raw (invalid, but seen in real files) control character inside a JSON string
    raw = T.line(T.user(sid, "raw \x1b[2J escape")).replace(b"\\u001b", b"\x1b")
    T.append_bytes(T.session_file(claude_home, sid), raw)
    h = tmp_path / "cxh"
    assert cx(h, "import", "--root", str(claude_home)).returncode == 0
    return h


@needs_chromium
def test_transcript_markup_is_shown_as_text_never_run(hostile_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "h.html"
    assert cx(hostile_home, "export", "5a5a5a5a", "--format", "html", "-o", str(out)).returncode == 0
    page = out.read_text()
    assert "\x1b" not in page and "\x07" not in page
    shown = browser(tmp_path, "--dump-dom", out.as_uri())
    dom = shown.stdout.decode()
    text, tags = dom_text(dom)
    assert "script" not in tags and "img" not in tags and "b" not in tags
    assert "javascript:" not in re.sub(r">[^<]*<", "><", dom)  # in no attribute: no link to it
    assert "<title>pwned" not in dom
    assert text.count("<script>document.title='pwned'</script>") >= 3  # prompt, answer, tool result as text
    assert "print('<script>')" in text and "echo '</pre><script>x</script>'" in text
    assert "\u241b[31mred" in text  # the escape character is shown as a visible symbol


def test_markdown_neutralises_html_and_control_characters(hostile_home: Path) -> None:
    r = cx(hostile_home, "export", "5a5a5a5a", "--format", "markdown")
    md = r.stdout.decode()
    prose = re.sub(r"^(`{3,})[^\n]*\n.*?^\1$", "", md, flags=re.M | re.S)  # fenced code shows as code anyway
    assert "print('<script>')" not in prose and "<script>" not in prose and "<img" not in prose
    assert "&lt;script>document.title='pwned'&lt;/script>" in md
    assert "print('<script>')" in md  # code stays code
    assert "\x1b" not in md and "\u241b[31mred" in md
    assert "<details><summary>Tool: Bash</summary>" in md


def test_jsonl_to_a_terminal_never_carries_control_sequences(hostile_home: Path) -> None:
    import pty

    env = {k: v for k, v in os.environ.items() if not k.startswith("CXSYNC_")}
    env["CXSYNC_HOME"] = str(hostile_home)
    pid, fd = pty.fork()
    if pid == 0:  # the child: cxsync writing to a terminal
        os.execve(sys.executable, [sys.executable, "-m", "cxsync.agent", "export", "5a5a5a5a"], env)
    got = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        got += chunk
    os.waitpid(pid, 0)
    assert b"answer:" in got and b"\x1b" not in got and b"\x07" not in got
    assert "raw \u241b[2J escape".encode() in got
    piped = cx(hostile_home, "export", "5a5a5a5a")
    assert b"raw \x1b[2J escape" in piped.stdout  # to a pipe or a file: the bytes as captured


@needs_chromium
def test_pasted_images_show_and_nothing_else_passes_for_one(tmp_path: Path, claude_home: Path) -> None:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (300, 150), (220, 20, 20)).save(buf, "PNG")
    png = base64.b64encode(buf.getvalue()).decode()
    sid = "5a5a5a5a-0000-4000-8000-000000000002"
    blocks = [{"type": "text", "text": "what is in this picture"},
              {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
              {"type": "image", "source": {"type": "base64", "media_type": "text/html",
                                           "data": base64.b64encode(b"<script>alert(1)</script>").decode()}},
              {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "x\" onerror=\"y"}}]
    T.write(T.session_file(claude_home, sid), [{**T.env(sid), "type": "user",
                                                "message": {"role": "user", "content": blocks}}])
    h = tmp_path / "cxh"
    assert cx(h, "import", "--root", str(claude_home)).returncode == 0
    out = tmp_path / "i.html"
    assert cx(h, "export", sid, "--format", "html", "-o", str(out)).returncode == 0
    dom = browser(tmp_path, "--dump-dom", out.as_uri()).stdout.decode()
    assert dom.count("<img") == 1 and 'src="data:image/png;base64,' in dom and "onerror" not in dom
    assert dom.count("[unsupported image]") == 2
    shot = tmp_path / "i.png"
    assert browser(tmp_path, f"--screenshot={shot}", "--window-size=1000,800", out.as_uri()).returncode == 0
    red = sum(1 for p in rgb(Image.open(shot).convert("RGB")) if p[0] > 200 and p[1] < 60 and p[2] < 60)
    assert red > 300 * 150 * 0.8  # the picture itself is on the page
    md = cx(h, "export", sid, "--format", "markdown").stdout.decode()
    assert "*[image/png," in md and png not in md
