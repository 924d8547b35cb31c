"""No input stops capture: the hostile corpus (tests/hostile_corpus.py) imported and watched by a real agent.

Every good record of every good file is captured, each bad record is counted, nothing prints a traceback,
nothing hangs (every subprocess has a deadline), and the agent is ``idle`` afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import apsw
import pytest

from cxsync.agent.ingest import Ingestor
from cxsync.cache import open_cache
from cxsync.sync import events as ev
from cxsync.sync.errors import CxError
from tests import hostile_corpus as H
from tests import transcripts as T
from tests.helpers import wait_until

IDENT = ev.Identity("acme", "bob", "laptop")
MIXED = "b0000000-0000-4000-8000-000000000002.jsonl"


def _privilege_drop() -> list[str] | None:
    """The command prefix under which a folder of mode 000 is really unreadable: none for an ordinary user;
    for root, setpriv without the capabilities that bypass file permissions; None when neither is possible."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        return None
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", "--"]


@pytest.fixture
def corpus(claude_home: Path) -> Iterator[H.Corpus]:
    c = H.build(claude_home)
    yield c
    H.cleanup(c)


def _captured(db: Path, marker: str) -> bool:
    try:
        with open_cache(db, readonly=True) as cache:
            return bool(cache.search(marker))
    except CxError:  # not created yet
        return False


def _missing(db: Path, markers: list[str]) -> list[str]:
    return [m for m in markers if not _captured(db, m)]


def test_import_captures_every_good_record_and_counts_each_bad_one(tmp_path: Path, corpus: H.Corpus,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    H.unlock(corpus)  # root reads it anyway: this test is about the files
    caplog.set_level(logging.WARNING, "cxsync")
    with open_cache(tmp_path / "cache.db", route=lambda e: ev.route(e, ["u/bob"])) as cache:
        stats = Ingestor(cache, IDENT, [corpus.root]).import_all(readers=0)
        missing = [m for m in corpus.markers + corpus.late_markers if not cache.search(m)]
        files = {Path(f["path"]).name: f for f in cache.files()}
        torn = cache.search("never completed")
    assert missing == []
    assert files[MIXED]["malformed"] == corpus.bad_lines
    assert files["b0000000-0000-4000-8000-000000000006.jsonl"]["malformed"] == 0  # BOM, CRLF, NULs: no damage
    assert any("loop.jsonl" in e for e in stats.errors)  # a symlink loop is reported, not followed
    assert stats.repaired == corpus.repaired + 1  # and the subagent's list-valued gitBranch
    assert torn == []  # the partial last line waits for its end
    for name in ("fifo.jsonl", "zero.jsonl", "null.jsonl", "urandom.jsonl"):
        assert any(name in e and "not a regular file" in e for e in stats.errors), (name, stats.errors)
    assert any("not valid UTF-8" in e and "\\xff\\xfe" in e for e in stats.errors)
    assert corpus.binary is not None
    binary_warnings = [r for r in caplog.records if corpus.binary.name in r.getMessage()]
    assert len(binary_warnings) == 1, [r.getMessage() for r in binary_warnings]
    assert len([r for r in caplog.records if MIXED in r.getMessage() and "unparseable" in r.getMessage()]) == 1


def test_a_wrong_typed_field_is_ignored_and_the_rest_of_the_record_kept(tmp_path: Path, claude_home: Path) -> None:
    s = "c1000000-0000-4000-8000-000000000001"
    a = T.assistant_lines(s, [T.text("answer with odd fields")])[0]
    a["message"]["model"] = ["not", "a", "string"]
    a["message"]["usage"]["output_tokens"] = "12"
    a["gitBranch"] = {"name": "main"}
    a["version"] = ["2"]
    T.write(T.session_file(claude_home, s), [T.user(s, "hello", branch="feature"), a])
    with open_cache(tmp_path / "cache.db") as cache:
        stats = Ingestor(cache, IDENT, [claude_home]).import_all(readers=0)
        row = cache.conn.execute("SELECT model, output_tokens, input_tokens FROM messages WHERE role='assistant'"
                                 ).fetchone()
        session = cache.sessions()[0]
    assert stats.repaired == 1 and stats.skipped_lines == 0
    assert row == (None, 0, 10)  # the bad figures dropped, the good one kept
    assert session["branch"] == "feature" and session["messages"] == 2


def _run(cmd: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_hostile_corpus_through_the_cli_and_a_running_agent(tmp_path: Path, corpus: H.Corpus) -> None:
    drop = _privilege_drop()
    if drop is None:
        pytest.skip("running as root without setpriv: a folder of mode 000 cannot be made unreadable")
    home = tmp_path / "cxhome"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[identity]\ntenant = "acme"\nuser = "bob"\nmachine = "m1"\n'
        f'[transcripts]\nroots = ["{corpus.root}"]\n[sync]\ntarget = "none"\n', encoding="utf-8")
    env = {**os.environ, "CXSYNC_HOME": str(home)}
    cx = [*drop, sys.executable, "-m", "cxsync.agent"]
    db = home / "data" / "cache.db"
    assert corpus.unreadable is not None

    # 1. import: every good record, the bad ones counted, the locked folder reported.
    r = _run([*cx, "import", "--json"], env)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    out = json.loads(r.stdout)
    assert any(f"cannot read folder {corpus.unreadable}" in e for e in out["errors"]), out["errors"]
    assert out["unreadable_folders"] == [str(corpus.unreadable)]
    assert out["repaired"] == corpus.repaired + 1
    assert out["skipped_lines"] >= corpus.bad_lines
    assert _missing(db, corpus.markers) == []
    assert _missing(db, corpus.late_markers) == corpus.late_markers  # locked away for now
    assert sum(1 for ln in r.stderr.splitlines() if corpus.binary.name in ln) == 1  # type: ignore[union-attr]

    # 2. the agent: starts on the same corpus, reports the locked folder, goes idle.
    agent = subprocess.Popen([*cx, "run"], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def status() -> dict:  # type: ignore[type-arg]
            s = _run([*cx, "status", "--json"], env, timeout=30)
            assert "Traceback" not in s.stderr
            return json.loads(s.stdout) if s.stdout else {}

        wait_until(lambda: status().get("state") == "idle", 60, 0.2, "agent idle after its start-up scan")
        assert status()["unreadable_folders"] == [str(corpus.unreadable)]

        # 3. new hostile and good lines while it watches, and a project folder created after start.
        proj = corpus.projects / H.SLUG
        mark = H._Marks(corpus, "w")
        lines, bad, _ = H.mixed_lines("b0000000-0000-4000-8000-000000000002", mark)
        with open(proj / MIXED, "ab") as fh:
            fh.write(b"".join(lines))
        os.mkfifo(proj / "fifo-while-watched.jsonl")  # hostile files appearing under a running agent
        os.symlink("/dev/zero", proj / "zero-while-watched.jsonl")
        assert corpus.binary is not None
        (proj / "c0000000-0000-4000-8000-0000000b1a52.jsonl").write_bytes(corpus.binary.read_bytes())
        s5 = "b0000000-0000-4000-8000-000000000005"
        T.write(corpus.projects / "-home-dev-created-later" / f"{s5}.jsonl", [T.user(s5, f"late project {mark()}")])
        wait_until(lambda: not _missing(db, corpus.markers), 30, 0.2,
                   "appended and new-folder records captured")

        # 4. the locked folder becomes readable: captured without a restart, and no longer reported.
        H.unlock(corpus)
        wait_until(lambda: not _missing(db, corpus.late_markers), 40, 0.2, "the unlocked folder captured")
        wait_until(lambda: status().get("unreadable_folders") == [], 20, 0.2, "status no longer reports it")
        s4 = "b0000000-0000-4000-8000-000000000004"
        T.write(corpus.unreadable / f"{s4}.jsonl", [T.user(s4, f"appended once unlocked {mark()}")], mode="ab")
        wait_until(lambda: not _missing(db, corpus.markers), 20, 0.2, "the unlocked folder is watched")
        wait_until(lambda: status().get("state") == "idle", 30, 0.2, "agent idle afterwards")
        final = status()
        assert final["last_error"] is None, final["last_error"]
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
        rc = agent.wait(30)
        _, err = agent.communicate()
    assert rc == 0, err
    assert "Traceback" not in err
    log = (home / "logs" / "agent.log") if (home / "logs" / "agent.log").exists() else None
    if log is not None:
        assert "Traceback" not in log.read_text(encoding="utf-8", errors="replace")
    # Each bad line was counted once per time it was read: the import's and the agent's appended ones.
    c = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        malformed = c.execute("SELECT malformed FROM files WHERE path LIKE ?", (f"%{MIXED}",)).fetchone()[0]
    finally:
        c.close()
    assert malformed == corpus.bad_lines + bad


def test_a_refused_file_is_warned_about_once_however_often_it_is_scanned(tmp_path: Path, claude_home: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    proj = claude_home / "projects" / "p"
    proj.mkdir()
    os.mkfifo(proj / "fifo.jsonl")
    caplog.set_level(logging.WARNING, "cxsync")
    with open_cache(tmp_path / "cache.db") as cache:
        ing = Ingestor(cache, IDENT, [claude_home])
        reports = [ing.import_all(readers=0).errors for _ in range(3)]
    assert all(any("fifo.jsonl" in e for e in r) for r in reports)  # every import reports it
    assert len([r for r in caplog.records if "fifo.jsonl" in r.getMessage()]) == 1  # the log hears it once


def test_status_text_lists_each_unreadable_folder_as_data() -> None:
    from cxsync.agent.status_text import format_status

    text = format_status({"state": "idle", "unreadable_folders": ["/home/dev/.claude/projects/-locked",
                                                                  "/home/dev/.claude/projects/\x1b[31mred"]})
    lines = [ln for ln in text.splitlines() if ln.startswith("unreadable")]
    assert len(lines) == 2 and lines[0].endswith("-locked (captured once readable)")
    assert "\x1b" not in text  # a folder name never reaches the terminal as a control sequence
