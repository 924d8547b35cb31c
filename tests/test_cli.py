"""The CLI as a user drives it: real processes, real files, exit codes, JSON on stdout, errors on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import transcripts as T


def cx(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cxsync.agent", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120, input=input)


@pytest.fixture
def populated(claude_home: Path) -> Path:
    s = "c0ffee00-0000-4000-8000-000000000001"
    T.write(T.session_file(claude_home, s, "-home-dev-webapp"), [
        T.user(s, "how do I configure the flux capacitor", cwd="/home/dev/webapp"),
        *T.assistant_lines(s, [T.text("Set the flux capacitor to 1.21 gigawatts.")], cwd="/home/dev/webapp"),
    ])
    s2 = "d00dfeed-0000-4000-8000-000000000002"
    T.write(T.session_file(claude_home, s2, "-home-dev-api"), [
        T.user(s2, "flux question in another project", cwd="/home/dev/api")])
    r = cx("import", "--root", str(claude_home), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) | {} and json.loads(r.stdout)["messages"] == 3
    return claude_home


def test_import_json_reports_the_counts(claude_home: Path) -> None:
    s = "s1"
    T.write(T.session_file(claude_home, s), [T.user(s, "hello"), {"type": "x"}])
    T.append_bytes(T.session_file(claude_home, s), b"garbage\n")
    out = json.loads(cx("import", "--root", str(claude_home), "--json").stdout)
    assert {k: out[k] for k in ("files", "records", "messages", "sessions", "skipped_lines")} == \
        {"files": 1, "records": 2, "messages": 1, "sessions": 1, "skipped_lines": 1}


def test_query_filters_by_project_session_role_and_since(populated: Path) -> None:
    hits = json.loads(cx("query", "flux", "--json").stdout)
    assert len(hits) == 3
    assert all("**" in h["snippet"] for h in hits)
    web = json.loads(cx("query", "flux", "--project", "webapp", "--json").stdout)
    assert {h["project"] for h in web} == {"/home/dev/webapp"}
    asst = json.loads(cx("query", "flux", "--role", "assistant", "--json").stdout)
    assert [h["role"] for h in asst] == ["assistant"]
    sess = json.loads(cx("query", "flux", "--session", "d00dfeed", "--json").stdout)
    assert len(sess) == 1
    assert json.loads(cx("query", "flux", "--since", "2099-01-01", "--json").stdout) == []
    assert len(json.loads(cx("query", "flux", "--since", "2026-01-01", "--json").stdout)) == 3


def test_plain_text_with_fts_operators_is_quoted_safely(populated: Path) -> None:
    r = cx("query", 'flux AND ("capacitor', "--json")
    assert r.returncode == 0, r.stderr


def test_bad_fts_query_is_a_clear_usage_error(populated: Path) -> None:
    r = cx("query", "--fts", "flux AND (")
    assert r.returncode == 2
    assert "bad full-text query" in r.stderr and "Traceback" not in r.stderr


def test_fts_syntax_passes_through(populated: Path) -> None:
    hits = json.loads(cx("query", "--fts", "capac*", "--json").stdout)
    assert len(hits) == 2


def test_sessions_and_show(populated: Path) -> None:
    rows = json.loads(cx("sessions", "--json").stdout)
    assert len(rows) == 2
    web = next(r for r in rows if r["project"] == "/home/dev/webapp")
    assert web["first_prompt"] == "how do I configure the flux capacitor" and web["messages"] == 2
    shown = json.loads(cx("show", web["session"][:12], "--json").stdout)
    assert [m["role"] for m in shown["messages"]] == ["user", "assistant"]
    text = cx("show", web["session"]).stdout
    assert "1.21 gigawatts" in text


def test_show_unknown_session_is_an_error(populated: Path) -> None:
    r = cx("show", "nope")
    assert r.returncode == 1 and "no session" in r.stderr


def test_query_without_cache_says_to_import_first() -> None:
    r = cx("query", "anything")
    assert r.returncode == 1 and "cxsync import" in r.stderr


def test_paths_json_lists_every_path(cxhome: Path) -> None:
    data = json.loads(cx("paths", "--json").stdout)
    assert data["config_file"] == str(cxhome / "config.toml")
    assert data["cache_db"].startswith(str(cxhome))
    assert data["transcript_roots"]


def test_bad_config_names_the_key(cxhome: Path) -> None:
    cxhome.mkdir(parents=True)
    (cxhome / "config.toml").write_text('[identity]\ntenant="acme"\nuser="bob"\nmachine="m"\n'
                                        '[sync]\ntarget = "ftp://x"\n')
    r = cx("paths")
    assert r.returncode == 2 and "sync.target" in r.stderr
    (cxhome / "config.toml").write_text("this is [not toml")
    r = cx("paths")
    assert r.returncode == 2 and "not valid TOML" in r.stderr


def test_no_transcripts_is_a_clear_error(tmp_path: Path) -> None:
    r = cx("import", "--root", str(tmp_path / "missing"))
    assert r.returncode == 1 and "no transcript folder" in r.stderr


def test_status_with_agent_stopped_exits_3(populated: Path) -> None:
    r = cx("status", "--json")
    assert r.returncode == 3
    s = json.loads(r.stdout)
    assert s["state"] == "not-running" and s["messages"] == 3 and s["sessions"] == 2


def test_rebuild_gives_identical_query_results(populated: Path) -> None:
    before = cx("query", "flux", "--json").stdout
    sessions_before = json.loads(cx("sessions", "--json").stdout)
    r = cx("rebuild", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["messages"] == 3
    assert cx("query", "flux", "--json").stdout == before
    assert json.loads(cx("sessions", "--json").stdout) == sessions_before
    again = json.loads(cx("import", "--root", str(populated), "--json").stdout)
    assert again["messages"] == 0  # offsets survived the rebuild


def test_files_are_private(populated: Path, cxhome: Path) -> None:
    assert (cxhome / "data").stat().st_mode & 0o077 == 0
    assert (cxhome / "data" / "cache.db").stat().st_mode & 0o077 == 0
    assert (cxhome / "config.toml").stat().st_mode & 0o077 == 0
