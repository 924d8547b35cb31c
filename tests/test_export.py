"""Sessions back out of the cache: captured on machine A, synced through the embedded log to machine B, exported
byte for byte, resumed where B's Claude Code looks, restored after a deletion — with real agents running."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import apsw
import pytest

from tests import transcripts as T
from tests.conftest import REAL_FIXTURES
from tests.helpers import wait_until

TORN = b'{"type":"user","message":{"role":"user","content":"half a li'


class Machine:
    """One machine of the user: its own CXSYNC_HOME and Claude home, sharing one embedded log."""

    def __init__(self, tmp: Path, name: str, log: Path, paths: dict[str, str] | None = None) -> None:
        self.home = tmp / f"cx-{name}"
        self.home.mkdir()
        self.claude = tmp / f"claude-{name}"
        (self.claude / "projects").mkdir(parents=True)
        mapping = "".join(f"{json.dumps(k)} = {json.dumps(v)}\n" for k, v in (paths or {}).items())
        (self.home / "config.toml").write_text(
            f'[identity]\ntenant = "acme"\nuser = "bob"\nmachine = "{name}"\n'
            f'[transcripts]\nroots = [{json.dumps(str(self.claude))}]\n'
            f'[sync]\ntarget = "sqlite:{log}"\n[paths]\n{mapping}')
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("CXSYNC_", "CLAUDE_CONFIG_DIR"))}
        self.env.update(CXSYNC_HOME=str(self.home), HOME=str(tmp / f"userhome-{name}"),
                        CLAUDE_CONFIG_DIR=str(self.claude))
        self.proc: subprocess.Popen[str] | None = None

    def cx(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cxsync.agent", *args], capture_output=True, text=True,
                              env=self.env, timeout=120)

    def js(self, *args: str) -> Any:
        r = self.cx(*args, "--json")
        assert r.returncode in (0, 3), r.stderr
        return json.loads(r.stdout)

    def cx_bytes(self, *args: str) -> bytes:
        r = subprocess.run([sys.executable, "-m", "cxsync.agent", *args], capture_output=True, env=self.env,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def count(self, sql: str, *args: object) -> Any:
        conn = apsw.Connection(str(self.home / "data" / "cache.db"), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            return conn.execute(sql, args).fetchone()[0]
        finally:
            conn.close()

    def start(self) -> "Machine":
        self.proc = subprocess.Popen([sys.executable, "-m", "cxsync.agent", "run"], env=self.env, text=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.js("status")["state"] not in ("not-running", "starting"), 30, interval=0.2,
                   what="agent running")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)
        self.proc = None

    def settle(self, slug: str = "-marker") -> str:
        """Write a fresh transcript and wait until the running agent captured it: every file change made before
        it has been handled by then (the agent handles changes in order)."""
        sid = T.uid()
        T.write(T.session_file(self.claude, sid, slug), [T.user(sid, f"marker prompt {sid}")])
        wait_until(lambda: self.count("SELECT count(*) FROM sessions WHERE session_id=?", sid), 30, interval=0.1,
                   what="marker captured")
        return sid


def _complete_lines(path: Path) -> bytes:
    data = path.read_bytes()
    return data[:data.rfind(b"\n") + 1]


@pytest.fixture(scope="module")
def ab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Machine, Machine, Path]:
    """The real fixtures captured on A (one file with a torn last line), pushed, and pulled by B."""
    if not REAL_FIXTURES.is_dir():
        pytest.skip(f"real transcripts not present at {REAL_FIXTURES}")
    tmp = tmp_path_factory.mktemp("ab")
    log = tmp / "log.db"
    a = Machine(tmp, "laptop", log)
    b = Machine(tmp, "desktop", log, paths={"/home/marco/projects": str(tmp / "home" / "ada" / "code")})
    shutil.copytree(REAL_FIXTURES / "projects", a.claude / "projects", dirs_exist_ok=True)
    torn = a.claude / "projects" / "-home-marco-projects-spotter" / "55604662-cf2a-4331-851a-ec234028f8ca.jsonl"
    T.append_bytes(torn, TORN)
    assert a.js("import")["messages"] > 900
    assert a.js("sync", "--once")["outbox"] == 0
    assert b.js("sync", "--once")["pulled"]["u/bob"]["applied"] > 0
    return a, b, tmp


def _files(claude: Path) -> list[Path]:
    return sorted(p for p in (claude / "projects").rglob("*.jsonl"))


def test_jsonl_export_on_b_is_byte_identical_to_as_complete_lines(ab, tmp_path: Path) -> None:
    a, b, _ = ab
    out = tmp_path / "out"
    mains = [p for p in _files(a.claude) if p.parent.parent == a.claude / "projects"]
    assert len(mains) == 8
    for src in mains:
        r = b.cx("export", src.stem, "-o", f"{out}/")
        assert r.returncode == 0, r.stderr
        assert (out / src.name).read_bytes() == _complete_lines(src), src
        assert not TORN in (out / src.name).read_bytes()
    subagents = [p for p in _files(a.claude) if "subagents" in p.parts]
    assert len(subagents) == 2
    for src in subagents:
        rel = src.relative_to(src.parents[2])  # <session>/subagents/agent-<id>.jsonl
        assert (out / rel).read_bytes() == src.read_bytes(), rel


def test_jsonl_export_to_stdout_and_to_a_named_file(ab, tmp_path: Path) -> None:
    a, b, _ = ab
    src = next(p for p in _files(a.claude) if p.stem.startswith("ae4a77f8"))
    assert b.cx_bytes("export", "ae4a77f8") == src.read_bytes()
    r = b.cx("export", "ae4a77f8", "-o", str(tmp_path / "x.jsonl"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "x.jsonl").read_bytes() == src.read_bytes()
    sub = tmp_path / "x" / "subagents" / "agent-aac57f5.jsonl"
    assert sub.read_bytes() == (src.parent / src.stem / "subagents" / "agent-aac57f5.jsonl").read_bytes()
    assert oct((tmp_path / "x.jsonl").stat().st_mode & 0o777) == "0o600"


def test_export_of_an_unknown_session_is_a_clear_error(ab) -> None:
    _, b, _ = ab
    r = b.cx("export", "ffffffff-nope")
    assert r.returncode != 0 and "no session" in r.stderr and "Traceback" not in r.stderr


def _slug(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "-", path)


def test_resume_on_b_writes_where_claude_code_looks_and_the_running_agent_does_not_recapture(ab) -> None:
    a, b, tmp = ab
    sid = "d6e0bada-1959-4eec-a9d2-0bfade768d8f"
    src = a.claude / "projects" / "-home-marco-projects-spotter" / f"{sid}.jsonl"
    b.start()
    try:
        b.settle()
        events = b.count("SELECT count(*) FROM events")
        r = b.cx("resume", sid[:8])
        assert r.returncode == 0, r.stderr
        mapped = str(tmp / "home" / "ada" / "code" / "spotter")
        dest = b.claude / "projects" / _slug(mapped) / f"{sid}.jsonl"
        assert dest.read_bytes() == src.read_bytes()
        assert f"/home/marco/projects → {tmp / 'home' / 'ada' / 'code'}" in r.stdout  # which mapping, and why
        assert "[paths]" in r.stdout
        assert f"claude --resume {sid}" in r.stdout and f"cd {mapped}" in r.stdout

        b.settle()
        # the agent saw the new file and found it read to its end: no event, no re-read
        assert b.count("SELECT count(*) FROM events") == events + 2  # only the marker's session + message
        assert b.count("SELECT line_no FROM files WHERE path=?", str(dest)) == src.read_bytes().count(b"\n")
        assert b.count("SELECT offset FROM files WHERE path=?", str(dest)) == dest.stat().st_size
        again = b.cx("resume", sid)
        assert again.returncode == 0 and "already there, identical" in again.stdout

        # a session with subagents, into a folder given on the command line
        big = "ae4a77f8-aedd-4bc1-888f-c94edc91af04"
        here = tmp / "work" / "spotter-4te"
        here.mkdir(parents=True)
        events = b.count("SELECT count(*) FROM events")
        got = b.js("resume", big, "--project-dir", str(here))
        folder = b.claude / "projects" / _slug(str(here))
        original = next(a.claude.glob(f"projects/*/{big}.jsonl"))
        assert sorted(got["written"]) == sorted(str(folder / p.relative_to(original.parent))
                                                for p in [original, *original.with_suffix("").rglob("*.jsonl")])
        for p in [original, *original.with_suffix("").rglob("*.jsonl")]:
            assert (folder / p.relative_to(original.parent)).read_bytes() == p.read_bytes()
        b.settle()
        assert b.count("SELECT count(*) FROM events") == events + 2
    finally:
        b.stop()


def test_resume_never_overwrites_a_different_file_and_offers_a_copy(ab) -> None:
    a, b, tmp = ab
    sid = "491e126e-1e71-469c-ade2-fcc8af567c74"
    folder = b.claude / "projects" / _slug(str(tmp / "home" / "ada" / "code" / "spotter"))
    folder.mkdir(parents=True, exist_ok=True)
    theirs = folder / f"{sid}.jsonl"
    theirs.write_bytes(b'{"type":"user","note":"a different file of the same id"}\n')
    b.start()
    try:
        b.settle()
        events = b.count("SELECT count(*) FROM events")
        r = b.cx("resume", sid)
        assert r.returncode != 0 and "already at" in r.stderr and "--copy" in r.stderr
        assert theirs.read_bytes() == b'{"type":"user","note":"a different file of the same id"}\n'
        c = b.js("resume", sid, "--copy")
        new = c["session"]
        assert new != sid and c["copy_of"] == sid
        copy = folder / f"{new}.jsonl"
        original = (a.claude / "projects" / "-home-marco-projects-spotter" / f"{sid}.jsonl").read_bytes()
        assert copy.read_bytes() == original.replace(f'"sessionId":"{sid}"'.encode(), f'"sessionId":"{new}"'.encode())
        assert f'"sessionId":"{sid}"'.encode() not in copy.read_bytes()
        assert c["command"].endswith(f"claude --resume {new}")
        b.settle()
        # the copy is known as captured too: its records (even those keyed by file name) are not taken again
        assert b.count("SELECT count(*) FROM events") == events + 2
        assert b.count("SELECT count(*) FROM sessions WHERE session_id=?", new) == 0
    finally:
        b.stop()


def test_resume_maps_a_windows_project_to_a_non_ascii_folder_and_honours_project_dir(tmp_path: Path) -> None:
    log = tmp_path / "log.db"
    here = tmp_path / "hôme" / "ada" / "src"
    a = Machine(tmp_path, "win", log)
    b = Machine(tmp_path, "linux", log, paths={"C:\\Users\\Ada\\src": str(here)})
    del b.env["CLAUDE_CONFIG_DIR"]  # Claude Code's default home: ~/.claude
    claude_b = Path(b.env["HOME"]) / ".claude"
    sid = T.uid()
    cwd = "C:\\Users\\Ada\\src\\app 🚀"
    src = T.write(T.session_file(a.claude, sid, "C--Users-Ada-src-app---"),
                  [T.user(sid, "a prompt typed on windows", cwd=cwd),
                   *T.assistant_lines(sid, [T.text("an answer")], cwd=cwd)])
    a.js("import")
    a.js("sync", "--once")
    b.js("sync", "--once")
    got = b.js("resume", sid)
    expected = claude_b / "projects" / (_slug(str(tmp_path)) + "-h-me-ada-src-app---") / f"{sid}.jsonl"
    assert got["written"] == [str(expected)] and expected.read_bytes() == src.read_bytes()
    assert "C:\\Users\\Ada\\src →" in got["mapping"]
    other = tmp_path / "elsewhere" / "app"
    other.mkdir(parents=True)
    moved = b.js("resume", sid, "--project-dir", str(other))
    assert moved["written"] == [str(claude_b / "projects" / _slug(str(other)) / f"{sid}.jsonl")]
    assert "--project-dir" in moved["mapping"]


def test_restore_brings_back_deleted_transcripts_without_recapturing(tmp_path: Path, real_fixtures: Path) -> None:
    m = Machine(tmp_path, "solo", tmp_path / "log.db")
    shutil.copytree(real_fixtures / "projects", m.claude / "projects", dirs_exist_ok=True)
    main = next(p for p in _files(m.claude) if p.stem.startswith("ae4a77f8"))
    sub = main.parent / main.stem / "subagents" / "agent-aac57f5.jsonl"
    kept = {p: p.read_bytes() for p in (main, sub)}
    m.start()
    try:
        wait_until(lambda: m.count("SELECT count(*) FROM files WHERE status='active'") == 10, 60, interval=0.2,
                   what="fixtures captured")
        for p in kept:
            p.unlink()
        wait_until(lambda: m.count("SELECT count(*) FROM files WHERE status='deleted'") == 2, 30, interval=0.1,
                   what="deletions noticed")
        assert m.js("restore", "--deleted", "--since", "2999-01-01")["restored"] == []
        events = m.count("SELECT count(*) FROM events")
        dry = m.js("restore", "--deleted", "--dry-run")
        assert len(dry["restored"]) == 2 and dry["dry_run"] and not any(p.exists() for p in kept)
        got = m.js("restore", "--deleted", "--since", "1h")
        assert sorted(r["path"] for r in got["restored"]) == sorted(str(p) for p in kept)
        for p, data in kept.items():
            assert p.read_bytes() == data
        m.settle()
        assert m.count("SELECT count(*) FROM events") == events + 2
        assert m.count("SELECT count(*) FROM files WHERE status='deleted'") == 0
        assert m.js("restore", "--deleted") == {"restored": [], "skipped": [], "dry_run": False}
    finally:
        m.stop()


def test_a_session_continued_after_resume_exports_as_the_file_claude_code_grew(tmp_path: Path) -> None:
    log = tmp_path / "log.db"
    a, b = Machine(tmp_path, "laptop", log), Machine(tmp_path, "desktop", log)
    sid = T.uid()
    src = T.write(T.session_file(a.claude, sid), [T.user(sid, "started on the laptop"),
                                                  *T.assistant_lines(sid, [T.text("laptop answer")])])
    a.js("import")
    a.js("sync", "--once")
    b.js("sync", "--once")
    b.start()
    try:
        b.settle()
        dest = Path(b.js("resume", sid)["written"][0])
        more = [T.user(sid, "continued on the desktop"), *T.assistant_lines(sid, [T.text("desktop answer")])]
        T.write(dest, more, mode="ab")
        wait_until(lambda: b.count("SELECT count(*) FROM messages WHERE session_id=?", sid) == 4, 30,
                   interval=0.1, what="continuation captured")
        assert b.count("SELECT count(*) FROM messages WHERE session_id=? AND machine='desktop'", sid) == 2
        assert b.cx_bytes("export", sid) == dest.read_bytes()
        assert dest.read_bytes().startswith(src.read_bytes())
    finally:
        b.stop()
    b.js("sync", "--once")
    a.js("sync", "--once")
    assert a.cx_bytes("export", sid) == dest.read_bytes()  # the laptop holds the whole, grown file too


def test_resume_without_a_recorded_project_keeps_the_captured_folder(tmp_path: Path) -> None:
    log = tmp_path / "log.db"
    a, b = Machine(tmp_path, "laptop", log), Machine(tmp_path, "desktop", log)
    sid = T.uid()
    src = a.claude / "projects" / "-unknown" / f"{sid}.jsonl"
    src.parent.mkdir(parents=True)
    src.write_bytes(b'{"type":"summary","summary":"a title only","leafUuid":"x"}\n')
    a.js("import")
    a.js("sync", "--once")
    b.js("sync", "--once")
    got = b.js("resume", sid)
    assert got["written"] == [str(b.claude / "projects" / "-unknown" / f"{sid}.jsonl")]
    assert "not recorded" in got["mapping"] and got["command"] == f"claude --resume {sid}"


def test_lines_whose_secrets_were_redacted_before_upload_are_said_to_differ(tmp_path: Path) -> None:
    log = tmp_path / "log.db"
    a, b = Machine(tmp_path, "laptop", log), Machine(tmp_path, "desktop", log)
    sid = T.uid()
    key = "AKIA" + "Q3EGRIHDNWZ7XK2M"
    src = T.write(T.session_file(a.claude, sid), [T.user(sid, "plain prompt"),
                                                  T.user(sid, f"deploy with aws_access_key_id = {key}")])
    a.js("import")
    a.js("sync", "--once")
    b.js("sync", "--once")
    assert a.cx_bytes("export", sid) == src.read_bytes()  # this machine's own cache keeps the lines as they were
    r = subprocess.run([sys.executable, "-m", "cxsync.agent", "export", sid], capture_output=True, env=b.env,
                       timeout=60)
    first, second = r.stdout.split(b"\n")[:2]
    assert first + b"\n" == src.read_bytes().split(b"\n")[0] + b"\n"
    assert key.encode() not in r.stdout and b"[REDACTED:" in second
    assert b"1 line(s)" in r.stderr and b"secrets replaced" in r.stderr
