"""One way of reading for live capture and backfill: a split response's open lines merge from memory, a session
whose file fell quiet is announced as ended (through the cache, once), and both modes give the same cache."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from cxsync.agent import ingest as ingest_mod
from cxsync.agent.discovery import discover
from cxsync.agent.ingest import Ingestor
from cxsync.cache import open_cache
from cxsync.sync import events as ev
from tests import transcripts as T

IDENT = ev.Identity("acme", "bob", "laptop")
SID = "0be10000-0000-4000-8000-000000000001"


@pytest.fixture
def cache(tmp_path: Path) -> Any:
    c = open_cache(tmp_path / "cache.db", route=lambda e: ev.route(e, ["u/bob"]))
    yield c
    c.close()


def _split_file(claude_home: Path) -> tuple[Path, list[bytes]]:
    f = T.session_file(claude_home, SID)
    lines = [T.line(r) for r in [T.user(SID, "prompt"), *T.assistant_lines(
        SID, [T.thinking("thinking first"), T.text("first part"), T.text("second part"), T.text("third part")])]]
    return f, lines


def _assistant(cache: Any) -> list[tuple[Any, ...]]:
    return cache.conn.execute("SELECT cx_text(event_id), parts FROM messages WHERE role='assistant'").fetchall()


def test_an_open_split_response_is_merged_from_memory_not_from_the_stored_event(cache: Any, claude_home: Path,
                                                                                   monkeypatch: Any) -> None:
    f, lines = _split_file(claude_home)
    f.parent.mkdir(parents=True)
    T.append_bytes(f, b"".join(lines[:3]))
    ing = Ingestor(cache, IDENT, [claude_home])
    (tf,) = discover([claude_home])
    ing.ingest_file(tf)
    assert _assistant(cache) == [("thinking first\n\nfirst part", 2)]

    def no_decoding(*a: Any, **k: Any) -> Any:
        raise AssertionError("ingest decoded a stored event to merge the lines of the open message")

    monkeypatch.setattr(ev, "decode", no_decoding)
    T.append_bytes(f, b"".join(lines[3:]))
    ing.ingest_file(tf)
    assert _assistant(cache) == [("thinking first\n\nfirst part\n\nsecond part\n\nthird part", 4)]


def test_after_a_restart_the_open_response_still_merges_whole(cache: Any, claude_home: Path) -> None:
    f, lines = _split_file(claude_home)
    f.parent.mkdir(parents=True)
    T.append_bytes(f, b"".join(lines[:3]))
    (tf,) = discover([claude_home])
    Ingestor(cache, IDENT, [claude_home]).ingest_file(tf)
    T.append_bytes(f, b"".join(lines[3:]))
    Ingestor(cache, IDENT, [claude_home]).ingest_file(tf)  # a new process: nothing in memory
    assert _assistant(cache) == [("thinking first\n\nfirst part\n\nsecond part\n\nthird part", 4)]


@pytest.mark.parametrize("backfill", [False, True], ids=["live", "backfill"])
def test_a_quiet_session_is_announced_ended_once(cache: Any, claude_home: Path, backfill: bool) -> None:
    f = T.write(T.session_file(claude_home, SID), [T.user(SID, "hello"), *T.assistant_lines(SID, [T.text("hi")])])
    ing = Ingestor(cache, IDENT, [claude_home])

    def read() -> None:
        if backfill:
            ing.import_all(readers=0)
        else:
            for tf in ing.scan():
                ing.ingest_file(tf)

    read()  # just written: not ended
    assert cache.conn.execute("SELECT ended_at FROM sessions WHERE session_id=?", (SID,)).fetchone() == (None,)
    quiet = time.time() - ingest_mod.SESSION_IDLE_END - 60
    os.utime(f, (quiet, quiet))  # nothing new in the file, which has been quiet for longer than the limit
    read()
    row = cache.conn.execute("SELECT ended_at, ended_count FROM sessions WHERE session_id=?", (SID,)).fetchone()
    assert row[0] is not None and row[1] == 2
    ended = cache.conn.execute("SELECT count(*) FROM events WHERE type=?", (ev.SESSION_ENDED,)).fetchone()[0]
    read()
    assert cache.conn.execute("SELECT count(*) FROM events WHERE type=?", (ev.SESSION_ENDED,)).fetchone()[0] == ended == 1


def _exploding(event: Any) -> Any:  # at the top level: a reader process imports it by name
    raise ValueError("boom in the reader")


def test_a_reader_that_fails_stops_the_import_with_its_traceback_and_writes_nothing(tmp_path: Path,
                                                                                     claude_home: Path) -> None:
    from cxsync.agent.backfill import ReaderFailed

    T.write(T.session_file(claude_home, SID), [T.user(SID, "a prompt"), *T.assistant_lines(SID, [T.text("answer")])])
    cache = open_cache(tmp_path / "cache.db", transform=_exploding)
    with pytest.raises(ReaderFailed, match="boom in the reader"):
        Ingestor(cache, IDENT, [claude_home]).import_all(readers=1)
    assert cache.counts()["messages"] == 0
    cache.close()
    cache = open_cache(tmp_path / "cache.db")  # the same import without the failing step goes through
    Ingestor(cache, IDENT, [claude_home]).import_all(readers=1)
    assert cache.counts()["messages"] == 2
    cache.close()
