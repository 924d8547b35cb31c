"""Queries cannot hang the machine (issue 9, item 4), through the real CLI: a 100 KB query, 10,000 repeated
terms, a 10,000-term OR or NEAR are refused at once with a clear message (exit 2); huge ``--since`` and
``--limit`` values are usage errors, not an OverflowError; a long ``--project`` is blamed, not the search text.

Each command has a deadline: without the bounds, 10,000 repeated words keep FTS5 busy for minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import transcripts as T

DEADLINE = 30  # seconds; a bounded query is refused in well under one


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("bounds")
    claude, home = base / "claude", base / "cxhome"
    for i in range(30):
        T.write(T.session_file(claude, f"s{i}"), [T.user(f"s{i}", "hello world alpha beta " * 20 + str(j))
                                                  for j in range(20)])
    r = cx(home, "import", "--root", str(claude))
    assert r.returncode == 0, r.stderr
    return home


def cx(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CXSYNC_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "cxsync.agent", *args], env=env, capture_output=True, text=True,
                          timeout=DEADLINE)


def assert_usage_error(r: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-500:])
    assert "Traceback" not in r.stderr and "unexpected error" not in r.stderr
    assert "OverflowError" not in r.stderr
    for p in phrases:
        assert p in r.stderr, (p, r.stderr[-500:])


@pytest.mark.parametrize("fts", [False, True])
def test_a_100_kb_query_is_refused_quickly(home: Path, fts: bool) -> None:
    r = cx(home, "query", *(["--fts"] if fts else []), "x" * 100_000)
    assert_usage_error(r, "too long")


@pytest.mark.parametrize("fts", [False, True])
def test_10000_repeated_terms_are_refused_quickly(home: Path, fts: bool) -> None:
    r = cx(home, "query", *(["--fts"] if fts else []), " ".join(["hello"] * 10_000))
    assert_usage_error(r)
    assert "too many terms" in r.stderr or "too long" in r.stderr


@pytest.mark.parametrize("fts", [False, True])
def test_too_many_short_terms_are_refused(home: Path, fts: bool) -> None:
    assert_usage_error(cx(home, "query", *(["--fts"] if fts else []), " ".join(["a"] * 500)), "too many terms")


@pytest.mark.parametrize("query", [" OR ".join(f"w{i}" for i in range(10_000)),
                                   "NEAR(" + " ".join(f"w{i}" for i in range(10_000)) + ")"])
def test_10000_term_or_and_near_queries_are_refused_quickly(home: Path, query: str) -> None:
    assert_usage_error(cx(home, "query", "--fts", query))


@pytest.mark.parametrize("since", ["99999999999d", "10000000000000000000000w", "9" * 400 + "s"])
def test_a_huge_since_is_a_usage_error(home: Path, since: str) -> None:
    assert_usage_error(cx(home, "query", "--since", since, "hello"), "since")


@pytest.mark.parametrize("command", [["query", "hello"], ["sessions"]])
def test_a_huge_limit_is_a_usage_error(home: Path, command: list[str]) -> None:
    assert_usage_error(cx(home, *command, "--limit", "1" + "0" * 30), "limit")


def test_a_long_project_is_blamed_not_the_search_text(home: Path) -> None:
    r = cx(home, "query", "--project", "p" * 100_000, "hello")
    assert_usage_error(r, "project")
    assert "full-text query" not in r.stderr and "search text" not in r.stderr
