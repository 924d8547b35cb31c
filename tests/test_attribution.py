"""Records copied between transcripts (resume, continue and fork copy them with their uuids) belong to one session
decided by the records alone: every machine, whatever order it reads the files in, and whatever order synced
events reach it, holds the same rows."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from cxsync.agent.discovery import discover
from cxsync.agent.ingest import Ingestor
from cxsync.cache import open_cache
from cxsync.sync import events as ev
from tests import transcripts as T

S1 = "5e551000-0000-4000-8000-000000000001"  # the original conversation
S2 = "0e552000-0000-4000-8000-000000000002"  # resumed from S1: its id sorts first, so "smallest id" would be wrong
S3 = "3e553000-0000-4000-8000-000000000003"  # forked from S2: copies of S1's and of S2's records


def _files(home: Path, *, rewrite_ids: bool) -> dict[str, Path]:
    """S1 with 5 messages and a system record; S2 copies them and adds 3; S3 copies S2 whole and adds 2.

    Copies keep the ``sessionId`` they were born with, as Claude Code writes them; with ``rewrite_ids`` they name
    the file they were copied into instead (every copy then looks native, and only the tie-break decides)."""
    t = itertools.count(1)
    s1 = [T.user(S1, "original prompt", t=next(t)),
          *T.assistant_lines(S1, [T.thinking("hmm"), T.text("original answer")], t=next(t)),
          {**T.env(S1, t=next(t)), "type": "system", "subtype": "informational", "content": "a system note"},
          T.user(S1, "second prompt", t=next(t)),
          *T.assistant_lines(S1, [T.text("second answer")], t=next(t)),
          T.user(S1, "third prompt", t=next(t))]

    def copy(recs: list[dict[str, Any]], into: str) -> list[dict[str, Any]]:
        return [dict(r, sessionId=into) if rewrite_ids else dict(r) for r in recs]

    s2 = copy(s1, S2) + [T.user(S2, "resumed prompt", t=next(t)),
                         *T.assistant_lines(S2, [T.text("resumed answer")], t=next(t)),
                         T.user(S2, "resumed follow-up", t=next(t))]
    s3 = copy(s2, S3) + [T.user(S3, "forked prompt", t=next(t)), *T.assistant_lines(S3, [T.text("fork")], t=next(t))]
    return {s: T.write(T.session_file(home, s), recs) for s, recs in ((S1, s1), (S2, s2), (S3, s3))}


def _snapshot(cache: Any) -> dict[str, Any]:
    c = cache.conn
    return {
        "counts": dict(c.execute("SELECT session_id, message_count FROM sessions ORDER BY session_id").fetchall()),
        "messages": c.execute("SELECT key, session_id, root_session, cx_text(event_id), role, parts, source_file, source_line,"
                              " occurred_at, event_id, input_tokens, output_tokens FROM messages ORDER BY key"
                              ).fetchall(),
        "sessions": c.execute("SELECT session_id, message_count, input_tokens, output_tokens, cache_read_tokens,"
                              " first_prompt, first_prompt_at, first_at, last_at, models FROM sessions"
                              " ORDER BY session_id").fetchall(),
        "records": c.execute("SELECT key, session_id, type, line FROM records ORDER BY key").fetchall(),
        "fts": c.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'original' ORDER BY rowid"
                         ).fetchall() == c.execute("SELECT id FROM messages WHERE cx_text(event_id) LIKE '%original%'"
                                                   " ORDER BY id").fetchall(),
    }


def _import_in_order(db: Path, home: Path, order: list[str]) -> Any:
    cache = open_cache(db, route=lambda e: ev.route(e, ["u/bob"]))
    ing = Ingestor(cache, ev.Identity("acme", "bob", db.stem), [home])
    by_session = {tf.session: tf for tf in discover([home])}
    for s in order:
        ing.ingest_file(by_session[s])
    return cache


@pytest.mark.parametrize("rewrite_ids", [False, True], ids=["copies-keep-their-session", "copies-renamed"])
def test_copied_records_are_attributed_alike_whatever_order_the_files_are_read(tmp_path: Path, claude_home: Path,
                                                                                rewrite_ids: bool) -> None:
    _files(claude_home, rewrite_ids=rewrite_ids)
    snapshots = []
    for i, order in enumerate(itertools.permutations([S1, S2, S3])):
        cache = _import_in_order(tmp_path / f"home{i}.db", claude_home, list(order))
        snapshots.append(_snapshot(cache))
        cache.close()
    assert all(s == snapshots[0] for s in snapshots[1:])
    counts = snapshots[0]["counts"]
    if not rewrite_ids:  # each message belongs to the conversation it was born in
        assert counts == {S1: 5, S2: 3, S3: 2}
        assert {r[1] for r in snapshots[0]["records"]} == {S1}
    assert sum(counts.values()) == 10 and snapshots[0]["fts"]


def test_backfill_in_one_or_two_processes_attributes_like_live_capture(tmp_path: Path, claude_home: Path) -> None:
    _files(claude_home, rewrite_ids=False)
    live = _import_in_order(tmp_path / "live.db", claude_home, [S3, S2, S1])
    expected = _snapshot(live)
    live.close()
    for readers in (0, 1, 2):
        cache = open_cache(tmp_path / f"backfill-{readers}.db", route=lambda e: ev.route(e, ["u/bob"]))
        Ingestor(cache, ev.Identity("acme", "bob", "live"), [claude_home]).import_all(readers=readers)
        got = _snapshot(cache)
        # The owner's copies move rows indexed in the same transaction: the index holds each message once.
        cache.conn.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 0)")
        cache.close()
        assert got["fts"] and expected["fts"]
        assert got["counts"] == expected["counts"] == {S1: 5, S2: 3, S3: 2}
        assert [m[:8] for m in got["messages"]] == [m[:8] for m in expected["messages"]]
        assert got["records"] == expected["records"]


def _events(cache: Any) -> list[ev.ContextEvent]:
    return [ev.decode(p) for batch in cache.iter_events() for _, p in batch]


def test_two_machines_that_read_in_opposite_orders_agree_once_synced(tmp_path: Path, claude_home: Path) -> None:
    _files(claude_home, rewrite_ids=False)
    a = _import_in_order(tmp_path / "a.db", claude_home, [S1, S2, S3])
    b = _import_in_order(tmp_path / "b.db", claude_home, [S3, S2, S1])
    from_a, from_b = _events(a), _events(b)
    for e in from_b:  # one event at a time, in the order the other machine stored them
        a.apply([e], "remote")
    for e in reversed(from_a):  # and the other way round, backwards
        b.apply([e], "remote")
    assert _snapshot(a) == _snapshot(b)
    assert _snapshot(a)["counts"] == {S1: 5, S2: 3, S3: 2}
    a.close()
    b.close()


@pytest.mark.parametrize("how", ["one event at a time", "one backfill transaction"])
def test_a_copy_that_stores_none_of_its_records_leaves_its_sessions_title_alone(tmp_path: Path, how: str) -> None:
    """A title record copied into a resumed file is held by the session that owns it: the copy's event stores
    nothing, and sets no title either (whether applied alone or among a backfill's events)."""
    from cxsync.cache import apply

    ident = ev.Identity("acme", "bob", "laptop")
    line = '{"type":"custom-title","customTitle":"the original","sessionId":"%s","uuid":"t-1"}' % S1
    title = {"key": "r:t-1", "type": "custom-title", "line": 1, "raw": line, "title_rank": 4,
             "title": "the original"}
    own = ev.records_captured(ident, S1, [title])
    copy = ev.records_captured(ident, S2, [dict(title, line=7)])
    other = ev.records_captured(ident, S2, [{"key": "r:o-1", "type": "summary", "line": 8,
                                             "raw": '{"type":"summary","sessionId":"%s"}' % S2}])
    cache = open_cache(tmp_path / "c.db")
    if how == "one event at a time":
        for e in (own, copy, other):
            cache.apply([e])
    else:
        with cache.transaction(flat=True) as conn, apply.records_deferred(conn):
            for e in (own, copy, other):
                apply.apply_in_tx(conn, [e], "local", None)
            assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 0  # held until the block ends
    titles = dict(cache.conn.execute("SELECT session_id, title FROM sessions").fetchall())
    records = cache.conn.execute("SELECT key, session_id, line FROM records ORDER BY key").fetchall()
    cache.close()
    assert titles == {S1: "the original", S2: None}
    assert records == [("r:o-1", S2, 8), ("r:t-1", S1, 1)]


@pytest.mark.parametrize("readers", [0, 2])
def test_a_backfill_into_an_empty_cache_finds_copies_without_asking_it_about_new_keys(
        tmp_path: Path, claude_home: Path, monkeypatch: pytest.MonkeyPatch, readers: int) -> None:
    """Into an empty cache a reader looks up only the keys it produced before (ingest.BackfillLookup): a resumed
    file's copies are still found, also once what they copy is committed and forgotten by the reader, and the
    same events are stored as when every key is looked up."""
    from cxsync.agent import ingest
    from cxsync.cache.store import Cache

    _files(claude_home, rewrite_ids=False)
    for i in range(60):  # read between S2 and S3 (files are read in path order): commits come between them
        s = f"1f{i:06d}-0000-4000-8000-000000000000"
        T.write(T.session_file(claude_home, s), [T.user(s, f"filler {i}"), *T.assistant_lines(s, [T.text("ok")])])
    monkeypatch.setattr(ingest, "COMMIT_EVENTS", 1)  # a commit at every flush, every 20 files
    got = []
    for asks in (False, True):
        if asks:  # as if the cache had held something: every key is looked up
            monkeypatch.setattr(Cache, "holds_transcripts", lambda self: True)
        cache = open_cache(tmp_path / f"asks-{asks}.db", route=lambda e: ev.route(e, ["u/bob"]))
        Ingestor(cache, ev.Identity("acme", "bob", "live"), [claude_home]).import_all(readers=readers)
        got.append((sorted(e.event_id for e in _events(cache)), _snapshot(cache)))
        cache.close()
    assert got[0] == got[1]
    assert {k: v for k, v in got[0][1]["counts"].items() if k in (S1, S2, S3)} == {S1: 5, S2: 3, S3: 2}
