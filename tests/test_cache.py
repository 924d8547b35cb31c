"""The cache database itself: migrations, the message counter, private files, apply's idempotency."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from cxsync.cache import CacheError, fts, open_cache
from cxsync.cache.schema import MIGRATIONS
from cxsync.sync import events as ev

ID = ev.Identity("acme", "bob", "m")


def _msg(i: int, session: str = "s1", **kw):
    return ev.message_indexed(ID, {"session": session, "key": f"u:{i}", "hash": f"h{i}", "content": f"text {i}",
                                   "role": "user", "occurred_at": f"2026-01-01T00:00:{i:02d}Z", **kw})


def test_migrations_are_numbered_and_recorded(tmp_path: Path) -> None:
    c = open_cache(tmp_path / "c.db")
    rows = c.conn.execute("SELECT version, name FROM migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == [m[0] for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    c.close()


def test_migration_2_counts_messages_already_there(tmp_path: Path) -> None:
    """A cache made by schema 1 gets its counter from the rows it holds."""
    conn = apsw.Connection(str(tmp_path / "old.db"))
    conn.execute("CREATE TABLE migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
    with conn:
        conn.execute(MIGRATIONS[0][2])
        conn.execute("INSERT INTO migrations VALUES (1, 'initial schema', 'then')")
        for i in range(3):
            conn.execute("INSERT INTO messages(key, hash, content, role, session_id, root_session, tenant, user_id,"
                         " event_id) VALUES (?, 'h', 'c', 'user', 's', 's', 't', 'u', ?)", (f"k{i}", f"e{i}"))
    conn.close()
    c = open_cache(tmp_path / "old.db")
    assert c.counts()["messages"] == 3
    c.apply([_msg(9)], "remote")
    assert c.counts()["messages"] == 4
    c.close()


def test_a_cache_of_schema_6_loses_its_insert_trigger_and_still_indexes_what_apply_writes(tmp_path: Path) -> None:
    """An insert trigger would make every message insert keep a statement journal (migration 7): apply indexes."""
    conn = apsw.Connection(str(tmp_path / "six.db"))
    fts.register(conn)
    conn.execute("CREATE TABLE migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
    with conn:
        for version, name, sql in MIGRATIONS[:6]:
            conn.execute(sql)
            conn.execute("INSERT INTO migrations VALUES (?, ?, 'then')", (version, name))
    conn.close()
    c = open_cache(tmp_path / "six.db")
    triggers = {r[0] for r in c.conn.execute("SELECT name FROM sqlite_schema WHERE type = 'trigger'")}
    assert triggers == {"messages_fts_update", "messages_fts_delete"}
    c.apply([_msg(1, content="a getUserName call")], "remote")
    assert [h.key for h in c.search("user name")] == [h.key for h in c.search("getUserName")] == ["u:1"]
    c.close()


def test_a_newer_schema_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    c = open_cache(tmp_path / "c.db")
    c.conn.execute("INSERT INTO migrations VALUES (999, 'future', 'later')")
    c.close()
    with pytest.raises(CacheError, match="newer than this cxsync"):
        open_cache(tmp_path / "c.db")


def test_apply_is_idempotent_and_the_counter_exact(tmp_path: Path) -> None:
    c = open_cache(tmp_path / "c.db", route=lambda e: ["u/bob"])
    events = [_msg(i) for i in range(5)]
    first = c.apply(events + events[:2])  # a second copy in the same batch is a replay too
    again = c.apply(events, "remote")
    assert (first.applied, first.skipped, first.outboxed, again.applied, again.skipped) == (5, 2, 5, 0, 5)
    assert c.conn.execute("SELECT seq FROM events ORDER BY seq").fetchall() == [(i,) for i in range(1, 6)]
    (n,) = c.conn.execute("SELECT count(*) FROM messages").fetchone()
    assert n == c.counts()["messages"] == 5
    assert c.outbox_counts()["pending"] == 5  # remote replays add nothing to the outbox
    c.close()


def test_a_grown_message_replaces_the_older_version_in_any_order(tmp_path: Path) -> None:
    small = _msg(1, parts=1)
    big = ev.message_indexed(ID, {**small.data, "content": "text 1 and more", "hash": "hh", "parts": 2})
    for order in ([small, big], [big, small]):
        c = open_cache(tmp_path / f"c{order[0] is big}.db")
        for e in order:
            c.apply([e], "remote")
        assert c.conn.execute("SELECT cx_text(event_id), parts FROM messages").fetchall() == [("text 1 and more", 2)]
        assert [h.key for h in c.search("more")] == ["u:1"] and c.counts()["messages"] == 1
        c.close()


def test_a_message_that_grows_while_its_index_row_is_held_back_is_indexed_once_as_it_is_now(tmp_path: Path) -> None:
    """In a backfill's transaction the index rows of new messages wait for its end (``fts.deferred``); a later
    version of one of them replaces what is held, not what the index holds already."""
    small = _msg(1, content="first words", parts=1)
    big = ev.message_indexed(ID, {**small.data, "content": "second words", "hash": "hh", "parts": 2})
    c = open_cache(tmp_path / "c.db")
    with c.transaction(flat=True) as conn, fts.deferred(conn):
        c.apply([small, _msg(2, content="other words")])
        c.apply([big])
    assert [h.key for h in c.search("second")] == ["u:1"]
    assert c.search("first") == [] and sorted(h.key for h in c.search("words")) == ["u:1", "u:2"]
    c.close()


def test_cache_files_are_private(tmp_path: Path) -> None:
    c = open_cache(tmp_path / "c.db")
    c.apply([_msg(1)])
    for f in tmp_path.glob("c.db*"):
        assert f.stat().st_mode & 0o077 == 0, f
    c.close()
