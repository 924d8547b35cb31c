"""Search: what a person accepts as relevant, code identifiers, stable answers, an index that follows the rows."""

from __future__ import annotations

import random
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import apsw
import pytest

from cxsync.agent.ingest import Ingestor
from cxsync.cache import open_cache
from cxsync.cache import search as search_mod
from cxsync.cache.schema import MIGRATIONS
from cxsync.sync import events as ev
from tests.bench.history import generate

ID = ev.Identity("acme", "bob", "m")
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def _at(i: int) -> str:
    return (T0 + timedelta(minutes=i)).isoformat().replace("+00:00", "Z")


def _msg(key: str, content: str, at: str, session: str = "s1", **kw):
    return ev.message_indexed(ID, {"session": session, "key": key, "hash": ev.make_event_id("h", "t", content),
                                   "content": content, "role": "user", "occurred_at": at, **kw})


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory):
    """A generated history (the benchmark's generator), imported the way `cxsync import` does."""
    root = tmp_path_factory.mktemp("history")
    generate(root / "claude", 3000, seed=11)
    cache = open_cache(root / "cache.db")
    Ingestor(cache, ID, [root / "claude"]).import_all(readers=0)
    yield cache
    cache.close()


def _texts(cache) -> dict[str, str]:
    return {k: t for k, t in cache.conn.execute("SELECT key, cx_text(event_id) FROM messages")}


def test_a_message_is_found_by_its_distinctive_words(history) -> None:
    """200 queries of three of a message's rarest words: the message is in the top 10 (recall@10 >= 0.95)."""
    texts = _texts(history)
    words = {k: set(re.findall(r"[a-z]{4,}", t.lower())) for k, t in texts.items()}
    df = Counter(w for ws in words.values() for w in ws)
    rng = random.Random(5)
    keys = rng.sample(sorted(k for k, ws in words.items() if len(ws) >= 6), 200)
    found = 0
    for key in keys:
        rare = sorted(words[key], key=lambda w: (df[w], w))[:3]
        rng.shuffle(rare)
        found += key in [h.key for h in history.search(" ".join(rare), limit=10)]
    assert found / len(keys) >= 0.95, found


def test_every_filter_narrows_and_keeps_the_best_first(history) -> None:
    texts = _texts(history)
    word = Counter(w for t in texts.values() for w in set(re.findall(r"[a-z]{3,}", t))).most_common(1)[0][0]
    row = history.conn.execute("SELECT root_session, project FROM messages LIMIT 1").fetchone()
    for filters in ({"role": "tool"}, {"project": row[1]}, {"session": row[0]}, {"since": "2026-06-01T03:00"}):
        hits = history.search(word, **filters)
        assert hits, filters
        for h in hits:
            assert filters.get("role", h.role) == h.role
            assert filters.get("project", h.project) == h.project
            assert filters.get("session", h.root_session) == h.root_session
            assert h.occurred_at >= filters.get("since", "")
        assert [h.rank for h in hits] == sorted(h.rank for h in hits)


def test_an_exact_phrase_comes_before_scattered_words(tmp_path: Path) -> None:
    c = open_cache(tmp_path / "c.db")
    scattered = [_msg(f"u:s{i}", "cache " * 3 + "in the middle, then a miss " * 3, _at(i)) for i in range(5)]
    exact = [_msg(f"u:e{i}", f"long text about other things {i} " * 8 + "and then a cache miss happened", _at(10 + i))
             for i in range(3)]
    c.apply(scattered + exact, "remote")
    hits = c.search("cache miss")
    assert len(hits) == 8
    assert {h.key for h in hits[:3]} == {e.data["key"] for e in exact}
    assert "\x02cache\x03 \x02miss\x03" in hits[0].snippet


def test_a_frequent_word_returns_recent_matches_among_the_top(tmp_path: Path, monkeypatch) -> None:
    """More matches than the search scores: it ranks the most recent of them, so old short messages (which bm25
    alone would prefer) do not bury this week's."""
    monkeypatch.setattr(search_mod, "CANDIDATES", 40)
    c = open_cache(tmp_path / "c.db")
    old = [_msg(f"u:old{i}", "deploy", _at(i)) for i in range(100)]
    new = [_msg(f"u:new{i}", f"we deploy the service again, attempt {i}, with some more words", _at(1000 + i))
           for i in range(100)]
    c.apply(new + old, "remote")
    hits = c.search("deploy")
    assert len(hits) == 10 and all(h.key.startswith("u:new") for h in hits)
    assert min(h.occurred_at for h in hits) >= _at(1060)


def test_code_identifiers_are_found_by_their_parts_and_whole(tmp_path: Path) -> None:
    c = open_cache(tmp_path / "c.db")
    c.apply([_msg("u:1", "call getUserName() from src/cache/search_index.py; os.path.join fails with E0425"
                  " and ERR_CONNECTION_REFUSED in HTTPServer", _at(1)),
             _msg("u:2", "nothing to see here", _at(2))], "remote")
    for q in ("getUserName", "user name", "User", "search_index", "search_index.py", "index", "src/cache",
              "os.path.join", "path", "E0425", "ERR_CONNECTION_REFUSED", "connection refused", "HTTPServer",
              "http server", "server"):
        assert [h.key for h in c.search(q)] == ["u:1"], q



def test_the_parts_of_identifiers_are_those_of_ascii_words_with_a_hump() -> None:
    from cxsync.cache.fts import idents

    assert idents("call getUserName() and HTTPServer, IOError, v2Parser") == \
        "get User Name HTTP Server IO Error v 2 Parser"
    assert idents("load_userName then userName again") == "user Name"  # underscores separate; parts once
    assert idents("naïveCase éfooBar") == ""  # words with other characters are not identifiers
    assert idents("plain words, snake_case and a/path.py") == ""
    assert idents("") == idents(None) == ""


def test_equal_ranks_are_ordered_by_key_so_identical_caches_answer_identically(tmp_path: Path) -> None:
    events = [_msg(f"u:{i:02d}", "same words exactly", _at(0)) for i in range(20)]
    answers = []
    for name, order in (("a", events), ("b", events[::-1])):
        c = open_cache(tmp_path / f"{name}.db")
        for e in order:
            c.apply([e], "remote")
        answers.append([h.key for h in c.search("same words", limit=20)])
        c.close()
    assert answers[0] == answers[1] == sorted(answers[0])


def test_the_index_follows_rows_that_change_or_go(tmp_path: Path) -> None:
    """Triggers keep the index: a message that grows is re-indexed, a row deleted by hand leaves the index."""
    c = open_cache(tmp_path / "c.db")
    small = _msg("m:1", "first half", _at(1), parts=1)
    big = ev.message_indexed(ID, {**small.data, "content": "first half and the second half", "hash": "h2",
                                  "parts": 2})
    c.apply([small], "remote")
    c.apply([big], "remote")
    assert [h.key for h in c.search("second")] == ["m:1"]
    assert "\x02second\x03" in c.search("second")[0].snippet
    with c.conn:
        c.conn.execute("DELETE FROM messages WHERE key='m:1'")
    assert c.search("first") == []
    assert c.conn.execute("SELECT count(*) FROM messages_fts").fetchone()[0] == 0


def test_a_cache_of_schema_2_is_migrated_and_still_found(tmp_path: Path) -> None:
    conn = apsw.Connection(str(tmp_path / "old.db"))
    conn.execute("CREATE TABLE migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
    with conn:
        for version, name, sql in MIGRATIONS[:2]:
            conn.execute(sql)
            conn.execute("INSERT INTO migrations VALUES (?, ?, 'then')", (version, name))
        conn.execute("INSERT INTO messages(key, hash, content, role, session_id, root_session, tenant, user_id,"
                     " event_id, occurred_at) VALUES ('u:old', 'h', 'getUserName was here', 'user', 's', 's', 't',"
                     " 'u', 'e0', '2026-01-01T00:00:00Z')")
        conn.execute("INSERT INTO messages_fts(rowid, content) SELECT id, content FROM messages")
    conn.close()
    c = open_cache(tmp_path / "old.db")
    assert [h.key for h in c.search("user")] == ["u:old"]  # re-indexed, identifiers' parts included
    assert [h.key for h in c.search("getusername", since="2025-12-31")] == ["u:old"]  # an id of the old scheme
    c.apply([_msg("u:new", "getUserName again", _at(1))], "remote")
    assert {h.key for h in c.search("getUserName")} == {"u:new", "u:old"}


def test_an_import_killed_midway_resumes_with_nothing_lost_or_doubled(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from tests.helpers import wait_until

    gen = generate(tmp_path / "claude", 6000, seed=3)
    env = {**os.environ, "CXSYNC_HOME": str(tmp_path / "cxhome")}
    cmd = [sys.executable, "-m", "cxsync.agent", "import", "--root", str(tmp_path / "claude"), "--json"]
    db = tmp_path / "cxhome" / "data" / "cache.db"

    def held() -> int:
        try:
            c = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
            try:
                return int(c.execute("SELECT value FROM counters WHERE name='messages'").fetchone()[0])
            finally:
                c.close()
        except apsw.Error:
            return 0

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: held() > 0, 60, what="a first batch committed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < held() < gen["messages"]
    c = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    merging = dict(c.execute("SELECT k, v FROM messages_fts_config WHERE k IN ('automerge', 'crisismerge')"))
    c.close()
    assert merging in ({}, {"automerge": 4, "crisismerge": 16})  # FTS5's own: what a backfill turns off never commits
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=300).returncode == 0
    c = open_cache(db, readonly=True)
    n, distinct, indexed = c.conn.execute(
        "SELECT count(*), count(DISTINCT key), (SELECT count(*) FROM messages_fts) FROM messages").fetchone()
    assert n == distinct == indexed == gen["messages"] == c.counts()["messages"]
    c.close()


def test_common_ends_of_code_words_are_trimmed_and_the_exact_phrase_still_comes_first(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    """``src`` and ``py`` held by most messages are dropped from the ends of a path (they cost the most and weigh
    nothing); the message holding the path is still found, and "<path> <word>" side by side ranks first."""
    monkeypatch.setattr(search_mod, "COMMON_MIN", 20)
    monkeypatch.setattr(search_mod, "COMMON_SHARE", 0.3)
    c = open_cache(tmp_path / "c.db")
    noise = [_msg(f"u:n{i}", f"edit src/mod{i}/file{i}.py and run the tests {i}", _at(i)) for i in range(60)]
    exact = _msg("u:exact", "the fix: src/auth/token_store.py expires tokens early", _at(100))
    apart = _msg("u:apart", "expires is wrong in src/auth/token_store.py, see above", _at(200))
    other = _msg("u:other", "lib/auth/token_store.rs has the same bug", _at(150))
    c.apply([*noise, exact, apart, other], "remote")
    words, phrase, steps = c._trim_common(["src/auth/token_store.py", "expires"])
    assert words == ["auth/token_store", "expires"] and steps == [4]  # auth token store, py, then expires
    assert phrase[0] == "auth/token_store.py" and phrase[-1] == "expires"
    assert {h.key for h in c.search("src/auth/token_store.py")} >= {"u:exact", "u:apart"}
    hits = [h.key for h in c.search("src/auth/token_store.py expires")]
    assert hits[:2] == ["u:exact", "u:apart"], hits
    monkeypatch.setattr(search_mod, "COMMON_MIN", 10**9)  # nothing common: the words as typed
    assert c._trim_common(["src/auth/token_store.py", "expires"])[0] == ["src/auth/token_store.py", "expires"]
    assert [h.key for h in c.search("src/auth/token_store.py expires")][:2] == ["u:exact", "u:apart"]
