"""`cxsync migrate --from context.db`: the seed's legacy database brought in as events, through the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import apsw
import pytest

from cxsync.agent.lock import InstanceLock
from cxsync.cache import fts
from cxsync.cache.legacy import content_hash, parse_time
from tests import transcripts as T
from tests.helpers import wait_until

SID = "5e55e55e-0000-4000-8000-000000000001"

# The seed's schema, verbatim (SEED.md, "SQLite Context Store").
SEED_SCHEMA = """
CREATE TABLE messages (
id INTEGER PRIMARY KEY,
hash TEXT UNIQUE NOT NULL,
content TEXT NOT NULL,
role TEXT NOT NULL,
source_type TEXT,
source_file TEXT,
created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', content_rowid='id');
CREATE TABLE knowledge (
id INTEGER PRIMARY KEY,
message_id INTEGER REFERENCES messages(id),
knowledge_type TEXT,
extracted_data JSON,
created_at TIMESTAMP
);
"""

# Older scripts created the table without constraints: NULLs everywhere are possible there.
LOOSE_SCHEMA = SEED_SCHEMA.replace(" UNIQUE NOT NULL", "").replace(" NOT NULL", "")


def legacy_db(path: Path, rows: list[tuple[Any, ...]], knowledge: list[tuple[Any, ...]] = (),  # type: ignore[assignment]
              schema: str = SEED_SCHEMA) -> Path:
    conn = apsw.Connection(str(path))
    conn.execute(schema)
    with conn:
        for i, (content, role, source_file, created_at) in enumerate(rows, 1):
            conn.execute("INSERT INTO messages(id, hash, content, role, source_type, source_file, created_at)"
                         " VALUES (?,?,?,?,?,?,?)", (i, f"legacyhash{i}", content, role, "jsonl", source_file,
                                                     created_at))
        for k in knowledge:
            conn.execute("INSERT INTO knowledge(id, message_id, knowledge_type, extracted_data, created_at)"
                         " VALUES (?,?,?,?,?)", k)
    conn.close()
    return path


class Home:
    def __init__(self, root: Path, name: str = "m1", log: Path | None = None) -> None:
        self.home = root / f"cx-{name}"
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "config.toml").write_text(
            f'[identity]\ntenant = "acme"\nuser = "ada"\nmachine = "{name}"\n'
            f'[sync]\ntarget = "{f"sqlite:{log}" if log else "none"}"\n')
        self.env = {**os.environ, "CXSYNC_HOME": str(self.home)}

    def cx(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cxsync.agent", *args], env=self.env, text=True,
                              capture_output=True, timeout=300)

    def js(self, *args: str) -> Any:
        r = self.cx(*args, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    @property
    def db_path(self) -> Path:
        return self.home / "data" / "cache.db"

    def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        c = apsw.Connection(str(self.db_path), flags=apsw.SQLITE_OPEN_READONLY)
        fts.register(c)  # cx_text(event_id): a message's text lives in its stored event
        try:
            return [tuple(r) for r in c.execute(sql, args)]
        finally:
            c.close()

    def hits(self, word: str) -> int:
        return len(self.js("query", word, "--limit", "50"))


def _tok(i: int) -> str:
    return f"legacytok{i:04d}"


@pytest.fixture
def world(tmp_path: Path, claude_home: Path) -> tuple[Home, Path, dict[str, Any]]:
    """A home that already captured one transcript, and a legacy database with every kind of row."""
    T.write(T.session_file(claude_home, SID), [
        T.user(SID, "transcript prompt about zeppelins"),
        *T.assistant_lines(SID, [T.text("transcript answer about airships")]),
    ])
    home = Home(tmp_path)
    assert home.js("import", "--root", str(claude_home))["messages"] == 2
    good = [(f"{_tok(i)} legacy message number {i}", "user" if i % 2 else "assistant",
             f"/home/ada/.claude/projects/-src-app/{SID[:-1]}{i % 3}.jsonl", "2025-06-01 10:00:%02d" % i)
            for i in range(1, 21)]
    rows: list[tuple[Any, ...]] = [
        *good,
        (good[0][0], "user", None, None),                                # same content, another legacy row
        ("transcript prompt about zeppelins", "user", None, None),        # the transcripts already hold it
        (f"{_tok(101)} a time in ISO", "ASSISTANT ", None, "2025-06-02T08:00:00Z"),
        (f"{_tok(102)} an epoch in seconds", "user", None, 1748851200),
        (f"{_tok(103)} an epoch in ms", "user", None, 1748851200123),
        (f"{_tok(104)} not a time", "user", None, "last tuesday"),
        (f"{_tok(105)} an impossible date", "user", None, "2024-13-45 99:99:99"),
        (f"{_tok(106)} before computers", "system", None, "1970-01-01 00:00:00"),
        ("   ", "user", None, None),                                     # empty
        (f"{_tok(107)} nobody said this", "narrator", None, None),        # unknown role
        (b"\xff\xfe not utf-8", "user", None, None),                      # bytes that are not text
    ]
    knowledge = [
        (1, 1, "decision", json.dumps({"title": "Use SQLite for the cache", "rationale": "offline"}), "2025-06-01"),
        (2, 2, "pattern", json.dumps({"name": "retry with jitter"}), None),
        (3, 999, "error_solution", json.dumps({"error_signature": "EADDRINUSE", "solution": "kill it"}), None),
        (4, 1, "decision", "{not json", None),
        (5, 1, "opinion", json.dumps({"x": 1}), None),
        (6, 1, "pattern", None, None),
        (7, 3, "decision", json.dumps({"title": "Use SQLite for the cache", "rationale": "offline"}), None),
    ]
    path = legacy_db(home.home.parent / "context.db", rows, knowledge)
    expect = {"good_tokens": [_tok(i) for i in (*range(1, 21), 101, 102, 103, 104, 105, 106)]}
    return home, path, expect


def test_every_legacy_message_is_found_exactly_once(world: tuple[Home, Path, dict[str, Any]]) -> None:
    home, path, expect = world
    r = home.js("migrate", "--from", str(path))
    m = r["messages"]
    assert m == {"total": 31, "new": 26, "already_present": 1, "already_migrated": 0, "duplicates": 1,
                 "refused": 3}
    for tok in expect["good_tokens"]:
        assert home.hits(tok) == 1, tok
    assert home.hits("zeppelins") == 1  # held by the transcript and the legacy db: once
    # every message in the cache exactly once per content hash
    dup = home.rows("SELECT hash, count(*) FROM messages GROUP BY hash HAVING count(*) > 1")
    assert dup == []
    # a session named by its transcript file is that session; the others are stable pseudo-sessions
    sessions = {s for (s,) in home.rows("SELECT DISTINCT session_id FROM messages WHERE key LIKE 'legacy:%'")}
    assert f"{SID[:-1]}1" in sessions and any(s.startswith("legacy-") for s in sessions)


def test_bad_rows_are_reported_with_their_reason_never_dropped_silently(
        world: tuple[Home, Path, dict[str, Any]]) -> None:
    home, path, _ = world
    r = home.js("migrate", "--from", str(path))
    reasons = {(x["table"], x["id"]): x["reason"] for x in r["refused"]}
    assert reasons[("messages", 29)] == "content is empty"
    assert "role 'narrator'" in reasons[("messages", 30)]
    assert "not UTF-8" in reasons[("messages", 31)]
    assert "not valid JSON" in reasons[("knowledge", 4)]
    assert "knowledge_type 'opinion'" in reasons[("knowledge", 5)]
    assert reasons[("knowledge", 6)] == "extracted_data is NULL"
    bad_times = r["warnings"]["messages: created_at is not a valid time: kept without a time"]
    assert sorted(bad_times) == [26, 27, 28]
    assert r["warnings"]["knowledge: message 999 is not in the legacy database (or was refused): kept without a "
                         "source message"] == [3]
    assert r["knowledge"] == {"total": 7, "new": 3, "already_present": 0, "already_migrated": 0, "duplicates": 1,
                              "refused": 3}
    # kept without a time: found, with no time
    assert home.rows("SELECT occurred_at FROM messages WHERE cx_text(event_id) LIKE ?", f"{_tok(104)}%") == [(None,)]
    assert home.rows("SELECT occurred_at FROM messages WHERE cx_text(event_id) LIKE ?", f"{_tok(103)}%") == [
        ("2025-06-02T08:00:00.123Z",)]
    # the human report says the same, on stdout, without a traceback
    out = home.cx("migrate", "--from", str(path), "--dry-run")
    assert out.returncode == 0 and "Traceback" not in out.stderr
    assert "refused messages row 29: content is empty" in out.stdout


def test_knowledge_rows_arrive_with_their_source_message(world: tuple[Home, Path, dict[str, Any]]) -> None:
    home, path, _ = world
    home.js("migrate", "--from", str(path))
    rows = home.rows("SELECT knowledge_type, extracted_data, source_hashes FROM knowledge ORDER BY knowledge_type")
    types = [t for t, _, _ in rows]
    assert types == ["decision", "error_solution", "pattern"]
    decision = json.loads(rows[0][1])
    assert decision["title"] == "Use SQLite for the cache" and decision["data"]["rationale"] == "offline"
    assert json.loads(rows[0][2]) == [content_hash(f"{_tok(1)} legacy message number 1")]
    assert json.loads(rows[1][2]) == []  # its message 999 does not exist


def test_second_run_adds_nothing(world: tuple[Home, Path, dict[str, Any]]) -> None:
    home, path, _ = world
    first = home.js("migrate", "--from", str(path))
    before = home.rows("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM messages),"
                       " (SELECT count(*) FROM outbox), (SELECT count(*) FROM knowledge)")
    again = home.js("migrate", "--from", str(path))
    assert again["messages"]["new"] == 0 and again["knowledge"]["new"] == 0
    assert again["messages"]["already_migrated"] == first["messages"]["new"]
    assert again["knowledge"]["already_migrated"] == first["knowledge"]["new"]
    assert home.rows("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM messages),"
                     " (SELECT count(*) FROM outbox), (SELECT count(*) FROM knowledge)") == before


def test_dry_run_changes_nothing_and_reports_what_a_run_would_do(world: tuple[Home, Path, dict[str, Any]]) -> None:
    home, path, _ = world
    before = home.db_path.read_bytes()
    dry = home.js("migrate", "--from", str(path), "--dry-run")
    assert home.db_path.read_bytes() == before
    assert dry["dry_run"] is True
    real = home.js("migrate", "--from", str(path))
    assert dry["messages"] == real["messages"] and dry["knowledge"] == real["knowledge"]


def test_loose_legacy_schema_with_nulls(tmp_path: Path) -> None:
    home = Home(tmp_path)
    path = legacy_db(tmp_path / "old.db", [
        (None, "user", None, None),
        (f"{_tok(1)} fine", None, None, None),
        (f"{_tok(2)} fine too", "user", None, None),
        (12345, "user", None, None),  # TEXT affinity stores it as the text '12345': a message like any other
    ], schema=LOOSE_SCHEMA)
    r = home.js("migrate", "--from", str(path))
    reasons = {x["id"]: x["reason"] for x in r["refused"]}
    assert reasons[1] == "content is NULL"
    assert reasons[2].startswith("role None")
    assert r["messages"]["new"] == 2 and home.hits(_tok(2)) == 1 and home.hits("12345") == 1


@pytest.mark.parametrize("make, title", [
    (lambda p: p.write_text("not a database at all, just text" * 100), "not a readable SQLite database"),
    (lambda p: apsw.Connection(str(p)).execute("CREATE TABLE other(x)"), "has no messages table"),
    (lambda p: apsw.Connection(str(p)).execute("CREATE TABLE messages(id INTEGER PRIMARY KEY, body TEXT)"),
     "lacks the column(s) content, role"),
    (lambda p: None, "no legacy database at"),
])
def test_a_file_that_is_not_a_legacy_database_is_a_clear_error(tmp_path: Path, make: Any, title: str) -> None:
    home = Home(tmp_path)
    path = tmp_path / "context.db"
    make(path)
    r = home.cx("migrate", "--from", str(path))
    assert r.returncode == 1, r.stderr
    assert title in r.stderr and "Traceback" not in r.stderr


def test_migrate_refuses_while_the_agent_runs(world: tuple[Home, Path, dict[str, Any]]) -> None:
    home, path, _ = world
    lock = InstanceLock(home.home / "run" / "agent.lock")
    assert lock.acquire()
    try:
        r = home.cx("migrate", "--from", str(path))
    finally:
        lock.release()
    assert r.returncode == 1 and "while the agent is running" in r.stderr and "cxsync stop" in r.stderr
    assert home.hits(_tok(1)) == 0


def test_a_run_killed_midway_and_restarted_ends_like_an_uninterrupted_one(tmp_path: Path) -> None:
    n = 12_000
    rows = [(f"{_tok(i)} bulk message {i} " + "filler words " * 20, "user" if i % 2 else "assistant",
             f"/p/{i % 40}.jsonl", "2025-06-01 10:00:00") for i in range(n)]
    path = legacy_db(tmp_path / "big.db", rows)
    ref, killed = Home(tmp_path, "ref"), Home(tmp_path, "killed")
    assert ref.js("migrate", "--from", str(path))["messages"]["new"] == n

    def migrated() -> int:
        try:
            return int(killed.rows("SELECT value FROM counters WHERE name='messages'")[0][0])
        except (apsw.Error, IndexError):
            return 0

    proc = subprocess.Popen([sys.executable, "-m", "cxsync.agent", "migrate", "--from", str(path)],
                            env=killed.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: migrated() > 0, 60, interval=0.002, what="the first batch committed")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert 0 < migrated() < n, "the kill should land midway"
    second = killed.js("migrate", "--from", str(path))
    assert second["messages"]["already_migrated"] + second["messages"]["new"] == n
    q = "SELECT key, hash, session_id, cx_text(event_id) FROM messages ORDER BY key"
    assert killed.rows(q) == ref.rows(q)
    assert killed.rows("SELECT event_id FROM events ORDER BY event_id") == ref.rows(
        "SELECT event_id FROM events ORDER BY event_id")
    assert killed.rows("SELECT count(*) FROM outbox") == ref.rows("SELECT count(*) FROM outbox")


def test_migrated_messages_reach_the_users_other_machines(tmp_path: Path) -> None:
    log = tmp_path / "log.db"
    a, b = Home(tmp_path, "laptop", log), Home(tmp_path, "desktop", log)
    path = legacy_db(tmp_path / "context.db", [(f"{_tok(7)} from the old days", "user", None, None)])
    a.js("migrate", "--from", str(path))
    assert a.js("sync", "--once")["pushed"] >= 1
    b.js("sync", "--once")
    assert b.hits(_tok(7)) == 1


@pytest.mark.parametrize("value, expected", [
    ("2025-06-01 10:00:00", "2025-06-01T10:00:00.000Z"),
    ("2025-06-01T10:00:00+02:00", "2025-06-01T08:00:00.000Z"),
    ("2025-06-01T10:00:00.5Z", "2025-06-01T10:00:00.500Z"),
    (1748772000, "2025-06-01T10:00:00.000Z"),
    (1748772000500, "2025-06-01T10:00:00.500Z"),
    ("yesterday", None), ("", None), (None, None), (True, None), (10**30, None), (1.5e300, None),
    ("1970-01-01 00:00:00", None), ("2999-01-01", None), (b"2025", None),
])
def test_legacy_times_are_parsed_or_refused(value: Any, expected: str | None) -> None:
    assert parse_time(value) == expected
