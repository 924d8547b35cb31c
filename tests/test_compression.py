"""The cache's compression dictionary: payloads sealed with it stay in the cache, decode everywhere the cache is
open, and never reach a log in that form."""

from __future__ import annotations

from pathlib import Path

import pytest

from cxsync.agent.ingest import Ingestor
from cxsync.cache import compress, open_cache
from cxsync.sync import events as ev
from cxsync.sync.engine import SyncEngine
from cxsync.sync.sqlite_log import SqliteEventLog
from tests import transcripts as T

ID = ev.Identity("acme", "bob", "m1")
STREAM = "u/bob"
VOCAB = ("cache sync query index token vector parser module handler refactor migration session compile deploy"
         " request response schema table column thread").split()


def _history(tmp_path: Path, sessions: int, per: int) -> Path:
    """A Claude home under ``tmp_path`` with ``sessions`` sessions of ``per`` prompts and answers; returns it."""
    home = tmp_path / "claude"
    (home / "projects").mkdir(parents=True)
    for s in range(sessions):
        sid = f"00000000-0000-4000-8000-{s:012d}"
        recs = []
        for i in range(per):
            words = " ".join(VOCAB[(s * 7 + i * 3 + j) % len(VOCAB)] for j in range(30))
            recs.append(T.user(sid, f"prompt {s}.{i}: {words}"))
            recs += T.assistant_lines(sid, [T.text(f"answer {s}.{i}: {words} {words}")])
        T.write(T.session_file(home, sid), recs)
    return home


def _versions(cache) -> dict[int, int]:
    return {int(v[0]): n for v, n in cache.conn.execute(
        "SELECT substr(payload, 1, 1), count(*) FROM events GROUP BY 1")}


def test_a_dictionary_is_trained_once_enough_events_are_stored_and_halves_them(tmp_path: Path,
                                                                                 monkeypatch) -> None:
    monkeypatch.setattr(compress, "MIN_EVENTS", 300)
    home = _history(tmp_path, 80, 12)
    cache = open_cache(tmp_path / "cache.db")
    Ingestor(cache, ID, [home]).import_all(readers=0)
    versions = _versions(cache)
    assert cache.dictionary() is not None
    assert versions.get(ev.CODEC_DICT, 0) > 2 * versions.get(ev.CODEC_VERSION, 0), versions
    # Each sealed payload is much smaller than the plain form of the same bytes.
    blobs = [bytes(r[0]) for r in cache.conn.execute(
        "SELECT payload FROM events WHERE substr(payload, 1, 1) = x'03' AND type = 'MessageIndexed'")]
    plain = sum(len(ev.seal(ev.serialized(b))) for b in blobs)
    assert sum(map(len, blobs)) < 0.7 * plain
    # Everything reads them: search (snippets from the stored text), show's records, a rebuild.
    hits = cache.search("refactor migration", limit=5)
    assert hits and all("\x02" in h.snippet for h in hits)
    before = [h.key for h in cache.search("answer 70.3", limit=3)]
    cache.close()
    from cxsync.cache.rebuild import rebuild_cache

    rebuild_cache(tmp_path / "cache.db", open_cache)
    for d in list(ev._dictionaries):  # a new process: only what the rebuilt cache holds
        ev._dictionaries.pop(d)
    ev._tls.dicts = {}
    cache = open_cache(tmp_path / "cache.db")
    assert [h.key for h in cache.search("answer 70.3", limit=3)] == before
    for (blob,) in cache.conn.execute("SELECT payload FROM events"):
        ev.decode(bytes(blob))
    cache.close()


def test_without_enough_events_there_is_no_dictionary(tmp_path: Path) -> None:
    home = _history(tmp_path, 2, 3)
    cache = open_cache(tmp_path / "cache.db")
    Ingestor(cache, ID, [home]).import_all(readers=0)
    assert cache.dictionary() is None and set(_versions(cache)) == {ev.CODEC_VERSION}


def test_what_leaves_the_cache_is_the_plain_wire_form_and_another_cache_reads_it(tmp_path: Path,
                                                                                   monkeypatch) -> None:
    monkeypatch.setattr(compress, "MIN_EVENTS", 100)
    home = _history(tmp_path, 30, 10)
    log = SqliteEventLog(tmp_path / "log.db", "acme")
    a = open_cache(tmp_path / "a.db", route=lambda e: ev.route(e, [STREAM]))
    Ingestor(a, ID, [home]).import_all(readers=0)
    assert _versions(a).get(ev.CODEC_DICT)
    SyncEngine(a, log, tenant="acme", subscribe=[STREAM]).push_all()
    in_log = log.read(STREAM, None, 10_000)
    assert in_log and {e.payload[0] for e in in_log} == {ev.CODEC_VERSION}
    b = open_cache(tmp_path / "b.db")
    SyncEngine(b, log, tenant="acme", subscribe=[STREAM]).sync_once()
    keys = "SELECT key, hash FROM messages ORDER BY key"
    assert b.conn.execute(keys).fetchall() == a.conn.execute(keys).fetchall()
    assert b.search("answer 3.4", limit=1)[0].key == a.search("answer 3.4", limit=1)[0].key


def test_a_reader_opened_before_the_dictionary_was_trained_still_reads_what_it_sealed(tmp_path: Path,
                                                                                        monkeypatch) -> None:
    monkeypatch.setattr(compress, "MIN_EVENTS", 100)
    home = _history(tmp_path, 30, 10)
    writer = open_cache(tmp_path / "cache.db")
    reader = open_cache(tmp_path / "cache.db", readonly=True)  # before any dictionary exists
    Ingestor(writer, ID, [home]).import_all(readers=0)
    dict_id = writer.dictionary()
    assert dict_id is not None
    ev._dictionaries.pop(dict_id)  # as if the writer were another process
    for tls in ("dicts",):
        getattr(ev._tls, tls, {}).pop(dict_id, None)
    writer.close()
    assert reader.search("answer 7.2", limit=1)
    blob = reader.conn.execute("SELECT payload FROM events WHERE substr(payload, 1, 1) = x'03' LIMIT 1").fetchone()[0]
    assert ev.decode(bytes(blob)).event_id


def test_a_dictionary_payload_decodes_to_an_event_whose_wire_form_is_plain() -> None:
    e = ev.message_indexed(ID, {"session": "s", "key": "u:1", "hash": "h", "content": "hello " * 40,
                                "records": ['{"type":"user"}']})
    samples = [ev.serialize(ev.message_indexed(ID, {"session": "s", "key": f"u:{i}", "hash": str(i),
                                                    "content": f"hello {i} " * 40, "records": ['{"a":1}']}))
               for i in range(400)]
    dict_id = ev.register_dictionary(ev.train_dictionary(samples, size=16 << 10))
    sealed = ev.seal(ev.serialize(e), dict_id)
    assert sealed[0] == ev.CODEC_DICT
    back = ev.decode(sealed)
    assert back == e
    assert back.wire is not None and back.wire[0] == ev.CODEC_VERSION and ev.decode(back.wire) == e
    assert ev.encode(back) == back.wire
    assert ev.wire_form(sealed) == back.wire and ev.wire_form(back.wire) == back.wire


def test_a_payload_naming_an_unknown_dictionary_is_a_clear_codec_error() -> None:
    samples = [ev.serialize(ev.session_started(ID, {"session": f"s{i}", "project": f"/p/{i}"})) for i in range(300)]
    data = ev.train_dictionary(samples, size=8 << 10)
    import zstandard

    d = zstandard.ZstdCompressionDict(data)
    blob = bytes([ev.CODEC_DICT]) + zstandard.ZstdCompressor(dict_data=d).compress(samples[0])
    with pytest.raises(ev.CodecError, match="dictionary"):
        ev.decode(blob)


def test_rebuild_seals_the_events_of_a_cache_made_before_dictionaries(tmp_path: Path, monkeypatch) -> None:
    home = _history(tmp_path, 30, 10)
    monkeypatch.setattr(compress, "MIN_EVENTS", 10**9)  # as an older cxsync made it: no dictionary
    cache = open_cache(tmp_path / "cache.db")
    Ingestor(cache, ID, [home]).import_all(readers=0)
    assert cache.dictionary() is None
    before = [h.key for h in cache.search("answer 12.3", limit=3)]
    size = sum(len(r[0]) for r in cache.conn.execute("SELECT payload FROM events"))
    cache.close()
    monkeypatch.setattr(compress, "MIN_EVENTS", 100)
    from cxsync.cache.rebuild import rebuild_cache

    rebuild_cache(tmp_path / "cache.db", open_cache)
    cache = open_cache(tmp_path / "cache.db")
    assert set(_versions(cache)) == {ev.CODEC_DICT}
    assert sum(len(r[0]) for r in cache.conn.execute("SELECT payload FROM events")) < 0.7 * size
    assert [h.key for h in cache.search("answer 12.3", limit=3)] == before
