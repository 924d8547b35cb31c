"""Ingest on the project's own fixtures: one test per quirk of claude-code-transcripts.md."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import apsw
import pytest

from cxsync.agent.ingest import Ingestor
from cxsync.cache import open_cache
from cxsync.sync import events as ev
from tests import transcripts as T

IDENT = ev.Identity("acme", "bob", "laptop")


@pytest.fixture
def cache(tmp_path: Path):
    c = open_cache(tmp_path / "cache.db", route=lambda e: ev.route(e, ["u/bob"]))
    yield c
    c.close()


def ingest(cache, home: Path):
    return Ingestor(cache, IDENT, [home]).import_all()


def msgs(cache, session=None):
    q = "SELECT key, role, cx_text(event_id), parts, session_id FROM messages"
    args = ()
    if session:
        q += " WHERE session_id=?"
        args = (session,)
    return cache.conn.execute(q + " ORDER BY occurred_at, source_line", args).fetchall()


def test_split_assistant_lines_merge_into_one_message_with_usage_counted_once(cache, claude_home):
    s = "s-merge"
    lines = T.assistant_lines(s, [T.thinking("pondering"), T.text("hello world"), T.tool_use("Bash", {"c": "ls"})])
    T.write(T.session_file(claude_home, s), [T.user(s, "hi there"), *lines])
    ingest(cache, claude_home)
    rows = cache.conn.execute("SELECT cx_text(event_id), parts, output_tokens FROM messages WHERE role='assistant'").fetchall()
    assert len(rows) == 1
    content, parts, out = rows[0]
    assert parts == 3 and out == 24  # the highest output_tokens of the three lines, not their sum
    assert content.index("pondering") < content.index("hello world") < content.index("[tool_use Bash]")
    assert cache.sessions()[0]["tokens"]["output"] == 24


def test_split_assistant_message_torn_across_two_reads_is_merged_not_duplicated(cache, claude_home):
    s = "s-torn"
    f = T.session_file(claude_home, s)
    a1, a2 = T.assistant_lines(s, [T.text("first part"), T.text("second part")])
    T.write(f, [T.user(s, "go"), a1])
    raw2 = T.line(a2)
    T.append_bytes(f, raw2[:20])  # torn tail
    ing = Ingestor(cache, IDENT, [claude_home])
    ing.import_all()
    assert [r[3] for r in msgs(cache) if r[1] == "assistant"] == [1]
    T.append_bytes(f, raw2[20:])
    ing.import_all()
    rows = [r for r in msgs(cache) if r[1] == "assistant"]
    assert len(rows) == 1 and rows[0][3] == 2
    assert "first part" in rows[0][2] and "second part" in rows[0][2]
    assert cache.search("second part")[0].key == rows[0][0]


def test_second_import_adds_nothing(cache, claude_home):
    s = "s-twice"
    T.write(T.session_file(claude_home, s), [T.user(s, "one"), *T.assistant_lines(s, [T.text("two")])])
    first = ingest(cache, claude_home)
    events = cache.counts()["events"]
    second = ingest(cache, claude_home)
    assert first.messages == 2 and second.messages == 0 and second.records == 0
    assert cache.counts()["events"] == events


def test_resume_copies_are_deduplicated_by_uuid_across_files(cache, claude_home):
    a, b = "s-orig", "s-resumed"
    u = T.user(a, "the original prompt")
    asst = T.assistant_lines(a, [T.text("original answer")])
    T.write(T.session_file(claude_home, a), [u, *asst])
    copy = [dict(u, sessionId=b), *[dict(x, sessionId=b) for x in asst], T.user(b, "a new prompt after resume")]
    T.write(T.session_file(claude_home, b), copy)
    ingest(cache, claude_home)
    assert len(msgs(cache, a)) == 2
    assert [r[2] for r in msgs(cache, b)] == ["a new prompt after resume"]


def test_glued_objects_on_one_line_are_recovered(cache, claude_home):
    s = "s-glued"
    f = T.session_file(claude_home, s)
    u1, u2 = T.user(s, "glued first"), T.user(s, "glued second")
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(json.dumps(u1).encode() + json.dumps(u2).encode() + b"\n")
    stats = ingest(cache, claude_home)
    assert {r[2] for r in msgs(cache)} == {"glued first", "glued second"}
    assert stats.skipped_lines == 0


def test_malformed_lines_are_counted_and_never_fatal(cache, claude_home, caplog):
    s = "s-bad"
    f = T.session_file(claude_home, s)
    T.write(f, [T.user(s, "before damage")])
    T.append_bytes(f, b"this is not json at all\n")
    T.append_bytes(f, b'{"type":"user", "broken": \n')
    T.write(f, [T.user(s, "after damage")], mode="ab")
    stats = ingest(cache, claude_home)
    assert stats.skipped_lines == 2
    assert [r[2] for r in msgs(cache)] == ["before damage", "after damage"]
    assert cache.file_state(str(f))["malformed"] == 2
    assert "unparseable" in caplog.text


def test_invalid_utf8_and_control_characters_are_decoded_leniently(cache, claude_home):
    s = "s-utf8"
    f = T.session_file(claude_home, s)
    rec = T.user(s, "PLACEHOLDER")
    raw = json.dumps(rec).encode().replace(b"PLACEHOLDER", b"caf\xc3\xa9 bad\xff\xfe byte and\x01ctl")
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_bytes(raw + b"\n")
    ingest(cache, claude_home)
    (content,) = [r[2] for r in msgs(cache)]
    assert content.startswith("café bad\ufffd\ufffd byte")
    assert cache.search("café")


def test_u2028_inside_a_message_keeps_it_whole(cache, claude_home):
    s = "s-2028"
    T.write(T.session_file(claude_home, s), [T.user(s, "line one\u2028line two\u2029end")])
    ingest(cache, claude_home)
    assert [r[2] for r in msgs(cache)] == ["line one\u2028line two\u2029end"]


def test_megabyte_line_with_base64_image_is_stored_as_a_reference(cache, claude_home):
    s = "s-image"
    data = base64.b64encode(os.urandom(3 << 20)).decode()
    rec = T.env(s) | {"type": "user", "message": {"role": "user", "content": [
        {"type": "text", "text": "look at this screenshot"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}]}}
    T.write(T.session_file(claude_home, s), [rec])
    ingest(cache, claude_home)
    (content,) = [r[2] for r in msgs(cache)]
    assert "[image image/png sha256:" in content and len(content) < 500
    # the verbatim record (with the image) is kept in the event, for writing the session back
    (payload,) = cache.conn.execute("SELECT payload FROM events WHERE type='MessageIndexed'").fetchone()
    assert data in ev.decode(payload).data["records"][0]


def test_tool_results_are_searchable_and_truncated(cache, claude_home):
    s = "s-tools"
    tu = T.tool_use("Bash", {"command": "pytest -q"}, tid="toolu_1")
    long_out = "needle_in_output " + "x" * 50_000
    T.write(T.session_file(claude_home, s), [T.user(s, "run tests"), *T.assistant_lines(s, [tu]),
                                             T.tool_result(s, "toolu_1", long_out)])
    ingest(cache, claude_home)
    hit = cache.search("needle_in_output")
    assert hit and hit[0].role == "tool"
    (length,) = cache.conn.execute("SELECT max(content_length) FROM messages WHERE role='tool'").fetchone()
    assert length < 2500
    assert cache.search("pytest")[0].role == "assistant"


def test_unknown_and_late_record_types_are_preserved_not_indexed(cache, claude_home):
    s = "s-new"
    recs = [T.user(s, "hello"),
            {"type": "atis-latch", "sessionId": s, "payload": {"zebra_unique_word": 1}},
            {"type": "pr-link", "sessionId": s, "url": "https://example.invalid/pr/1"},
            {"type": "file-history-delta", "sessionId": s, "delta": "zebra_unique_word"},
            {"type": "mode", "mode": "plan", "sessionId": s},
            {"type": "permission-mode", "permissionMode": "default", "sessionId": s},
            {"type": "last-prompt", "lastPrompt": "hello", "sessionId": s},
            {"type": "progress", "uuid": T.uid(), "data": {"type": "hook_progress"}, "sessionId": s},
            {"type": "attachment", "uuid": T.uid(), "attachment": {"type": "file"}, "sessionId": s},
            {"type": "totally-new-2027-type", "sessionId": s, "x": 1}]
    T.write(T.session_file(claude_home, s), recs)
    stats = ingest(cache, claude_home)
    assert stats.skipped_lines == 0
    types = {r["type"] for r in cache.session_records(s)}
    assert {"atis-latch", "pr-link", "file-history-delta", "mode", "permission-mode", "last-prompt", "progress",
            "attachment", "totally-new-2027-type"} <= types
    assert cache.search("zebra_unique_word") == []


def test_title_precedence_custom_over_agent_name_over_ai_title_over_summary(cache, claude_home):
    s = "s-title"
    f = T.session_file(claude_home, s)
    T.write(f, [T.user(s, "x"), {"type": "summary", "summary": "from summary", "leafUuid": "nowhere"},
                {"type": "ai-title", "aiTitle": "from ai", "sessionId": s}])
    ing = Ingestor(cache, IDENT, [claude_home])
    ing.import_all()
    assert cache.sessions()[0]["title"] == "from ai"
    T.write(f, [{"type": "custom-title", "customTitle": "from user", "sessionId": s},
                {"type": "agent-name", "agentName": "from agent", "sessionId": s}], mode="ab")
    ing.import_all()
    assert cache.sessions()[0]["title"] == "from user"


def test_subagent_folders_flat_agent_files_and_nesting_attach_to_parent(cache, claude_home):
    parent = "p-1111"
    T.write(T.session_file(claude_home, parent), [T.user(parent, "launch agents")])
    sub = claude_home / "projects" / "-home-dev-proj" / parent / "subagents"
    T.write(sub / "agent-a1.jsonl", [T.user(parent, "sub task", isSidechain=True, agentId="a1")])
    T.write(sub / "agent-a1" / "subagents" / "agent-a2.jsonl",
            [T.user(parent, "nested task", isSidechain=True, agentId="a2")])
    (sub / "agent-a1.meta.json").write_text("{}")
    T.write(claude_home / "projects" / "-home-dev-proj" / "agent-f1.jsonl",
            [T.user(parent, "flat agent task", isSidechain=True, agentId="f1")])
    ingest(cache, claude_home)
    top = cache.sessions()
    assert [t["session"] for t in top] == [parent]
    assert top[0]["subagents"] == 3
    ids = {r["session"] for r in cache.sessions(include_subagents=True)}
    assert {f"{parent}:agent-a1", f"{parent}:agent-a2", f"{parent}:agent-f1"} <= ids
    hit = cache.search("nested task")[0]
    assert hit.root_session == parent and hit.agent_id == "a2"
    assert cache.search("launch agents", session=parent)


def test_inline_sidechains_and_meta_lines_are_not_prompts(cache, claude_home):
    s = "s-side"
    T.write(T.session_file(claude_home, s), [
        T.user(s, "<local-command-caveat>meta</local-command-caveat>", isMeta=True),
        T.user(s, "typed by the person"),
        T.user(s, "sidechain prompt", isSidechain=True)])
    ingest(cache, claude_home)
    assert cache.sessions()[0]["first_prompt"] == "typed by the person"
    (n,) = cache.conn.execute("SELECT count(*) FROM messages WHERE is_prompt=1").fetchone()
    assert n == 1


def test_two_session_ids_in_one_file_stay_one_session(cache, claude_home):
    s = "s-file"
    T.write(T.session_file(claude_home, s), [T.user(s, "first id"), T.user("other-session-id", "second id")])
    ingest(cache, claude_home)
    assert [x["session"] for x in cache.sessions()] == [s]
    assert len(msgs(cache, s)) == 2


def test_non_transcript_files_are_skipped(cache, claude_home):
    s = "s-real"
    T.write(T.session_file(claude_home, s), [T.user(s, "real one")])
    proj = claude_home / "projects" / "-home-dev-proj"
    T.write(proj / "tool-results" / "x.jsonl", [T.user(s, "spilled output")])
    T.write(proj / "workflows" / "w" / "journal.jsonl", [T.user(s, "journal")])
    (proj / "sessions-index.json").write_text("{}")
    T.write(claude_home / "history.jsonl", [{"display": "typed prompt"}])
    stats = ingest(cache, claude_home)
    assert stats.files == 1
    assert [r[2] for r in msgs(cache)] == ["real one"]


def test_truncated_and_replaced_files_are_reread_without_duplicates(cache, claude_home):
    s = "s-rewrite"
    f = T.session_file(claude_home, s)
    u1, u2 = T.user(s, "kept one"), T.user(s, "kept two")
    T.write(f, [u1, u2])
    ing = Ingestor(cache, IDENT, [claude_home])
    ing.import_all()
    T.write(f, [u1])  # truncated
    st = ing.import_all()
    assert st.resets == 1
    tmp = f.with_suffix(".tmp")
    T.write(tmp, [u1, u2, T.user(s, "brand new")])
    os.replace(tmp, f)  # replaced (new inode)
    st = ing.import_all()
    assert st.resets == 1
    assert sorted(r[2] for r in msgs(cache)) == ["brand new", "kept one", "kept two"]


def test_deleted_file_keeps_everything_captured(cache, claude_home):
    s = "s-gone"
    f = T.session_file(claude_home, s)
    T.write(f, [T.user(s, "remember me")])
    ing = Ingestor(cache, IDENT, [claude_home])
    ing.import_all()
    f.unlink()
    from cxsync.agent.discovery import TranscriptFile

    ing.ingest_file(TranscriptFile(f, "main", s, None, None, "-home-dev-proj"))
    assert cache.file_state(str(f))["status"] == "deleted"
    assert cache.search("remember me")


def test_every_local_event_lands_in_the_outbox_with_the_offset(cache, claude_home):
    s = "s-outbox"
    f = T.session_file(claude_home, s)
    T.write(f, [T.user(s, "queued"), *T.assistant_lines(s, [T.text("answer")])])
    ingest(cache, claude_home)
    counts = cache.outbox_counts()
    assert counts["pending"] == cache.counts()["events"]
    assert cache.file_state(str(f))["offset"] == f.stat().st_size


def test_backfill_read_by_one_or_two_reader_processes_gives_the_same_cache(tmp_path, claude_home, real_fixtures):
    """Large backfills are read by reader processes: the result must equal reading in one process."""
    import shutil

    shutil.copytree(real_fixtures / "projects", claude_home / "projects", dirs_exist_ok=True)
    s = "s-extra"
    T.write(T.session_file(claude_home, s), [T.user(s, "torn across"), *T.assistant_lines(s, [T.text("a"), T.text("b")])])
    out = {}
    for readers in (0, 1, 2):
        c = open_cache(tmp_path / f"c{readers}.db", route=lambda e: ev.route(e, ["u/bob"]))
        stats = Ingestor(c, IDENT, [claude_home]).import_all(readers=readers)
        rows = c.conn.execute("SELECT key, hash, role, session_id, parts FROM messages ORDER BY key").fetchall()
        sessions = [(x["session"], x["messages"], x["title"], x["first_prompt"]) for x in c.sessions()]
        out[readers] = (stats.as_dict(), rows, sessions, c.counts(), c.outbox_counts())
        c.close()
    assert out[1] == out[0] and out[2] == out[0]


def test_a_backfill_lookup_forgets_what_is_committed_and_the_cache_answers_for_it(tmp_path, claude_home):
    """A reader keeps only what the writer has not committed: its memory does not grow with the history. What it
    holds (compactly: most messages and records by their session alone) answers as the cache does once committed."""
    from cxsync.agent.ingest import BackfillLookup, IngestStats

    for s in ("s-one", "s-two"):  # a whole message, one split over two lines, and a record of no message
        T.write(T.session_file(claude_home, s), [T.user(s, f"hello {s}"),
                                                 *T.assistant_lines(s, [T.text("a"), T.text("b")]),
                                                 {**T.env(s), "type": "system", "content": "compacted"}])
    cache = open_cache(tmp_path / "c.db")
    ing = Ingestor(cache, IDENT, [claude_home])
    files = sorted(ing.scan(), key=lambda f: str(f.path))
    lookup = BackfillLookup(cache)
    produced = []
    for tf in files:
        stats = IngestStats(files=1)
        slices = list(ing.produce(tf, stats, lookup))
        produced.append(slices)
        lookup.next_file()
    keys = {e.data["key"] for sl in produced[0] for e in sl.events if e.type == ev.MESSAGE_INDEXED}
    records = {r["key"] for sl in produced[0] for e in sl.events if e.type == ev.RECORDS_CAPTURED
               for r in e.data["records"]}
    assert keys and keys <= set(lookup.held) and "s-one" in lookup.sessions

    def answers():
        return ({k: (m.session, m.parts, m.origin) for k, m in lookup.messages(keys).items()},
                lookup.record_owners(records))

    held = answers()
    assert sorted(m[1] for m in held[0].values()) == [1, 2] and set(held[1]) == records
    assert all(m[2] == "s-one" for m in held[0].values()) and set(held[1].values()) == {("s-one", "s-one")}
    assert all(lookup.record_origin(k) == (True, "s-one") for k in records)
    for sl in produced[0]:  # the writer commits the first file only
        if sl.fstate is not None:
            cache.apply(sl.events, "local", files=[sl.fstate])
    lookup.forget(1)
    assert not keys & set(lookup.held) and "s-one" not in lookup.sessions
    assert answers() == held and lookup.session_known("s-one")  # from the cache now
    assert all(lookup.record_origin(k) == (False, None) for k in records)
    second = {e.data["key"] for sl in produced[1] for e in sl.events if e.type == ev.MESSAGE_INDEXED}
    assert second <= set(lookup.held) and "s-two" in lookup.sessions  # not committed: still held


def _segments(cache) -> int:
    return int(cache.conn.execute("SELECT count(DISTINCT segid) FROM messages_fts_idx").fetchone()[0])


def test_a_backfill_indexes_each_transactions_messages_in_rowid_order(tmp_path, monkeypatch):
    """FTS5 writes its pending terms out as a new segment, to be merged and merged again, whenever the rowids it is
    given stop ascending (and at every savepoint): each batch of a backfill starts over at older ids, so the new
    messages of a transaction are indexed in rowid order when it ends."""
    import contextlib

    from cxsync.agent.ingest import Batch
    from cxsync.cache import fts
    from cxsync.cache.store import Cache
    from tests.bench.history import generate

    generate(tmp_path / "claude", 3000, seed=3)
    monkeypatch.setattr(Batch, "EVENTS", 100)  # thirty batches
    monkeypatch.setattr(fts, "tiered", _merging_as(0, 2000))  # every segment written stays one
    monkeypatch.setattr(Cache, "finish_merging", lambda self: None)
    segments = []
    for name in ("as-is", "in batch order"):
        if name == "in batch order":
            monkeypatch.setattr(fts, "deferred", lambda conn: contextlib.nullcontext())
        cache = open_cache(tmp_path / f"{name}.db")
        Ingestor(cache, IDENT, [tmp_path / "claude"]).import_all(readers=0)
        assert cache.counts()["messages"] == 3000
        cache.conn.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 0)")
        segments.append(_segments(cache))
    assert segments[0] < segments[1] / 4, segments
    assert [h.key for h in cache.search("the", limit=10)] == [h.key for h in open_cache(
        tmp_path / "as-is.db").search("the", limit=10)]


def _merge_settings(cache) -> dict[str, int]:
    return dict(cache.conn.execute("SELECT k, v FROM messages_fts_config WHERE k IN ('automerge', 'crisismerge')"))


def _merging_as(automerge: int, crisismerge: int):
    """A stand-in for ``fts.tiered`` that merges as told (and, like it, sets FTS5's settings back)."""
    import contextlib

    from cxsync.cache import fts

    tiered = fts.tiered

    @contextlib.contextmanager
    def merging(conn):
        with tiered(conn):
            fts._merging(conn, automerge, crisismerge)
            yield

    return merging


def test_a_backfill_merges_its_index_sixteen_segments_at_a_time_and_leaves_fts5s_settings_as_they_were(
        tmp_path, monkeypatch):
    """Each merge rewrites what it merges: FTS5's own four segments at a time rewrite a backfill's index at every
    fourfold growth, merging nothing leaves every segment to be searched separately. Sixteen at a time rewrites it
    once up to 256 segments and leaves a few."""
    from cxsync.agent import ingest
    from cxsync.agent.ingest import Batch
    from cxsync.cache import fts
    from cxsync.cache.store import Cache
    from tests.bench.history import generate

    generate(tmp_path / "claude", 3000, seed=3)
    monkeypatch.setattr(Batch, "EVENTS", 100)
    monkeypatch.setattr(ingest, "COMMIT_EVENTS", 500)  # several transactions: settings set back between them
    pages, segments, settings, found = {}, {}, {}, {}
    for name in ("as-is", "FTS5's four", "unmerged"):
        if name != "as-is":
            monkeypatch.setattr(fts, "tiered", _merging_as(4, 16) if name == "FTS5's four" else _merging_as(0, 2000))
        if name == "unmerged":
            monkeypatch.setattr(Cache, "finish_merging", lambda self: None)
        cache = open_cache(tmp_path / f"{name}.db")
        with cache.conn:  # segments as small, here, as those of a million messages are to the whole
            cache.conn.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('hashsize', 131072)")
        written = [0]

        def hook(op, db, table, rowid, written=written):
            written[0] += table == "messages_fts_data" and op == apsw.SQLITE_INSERT

        cache.conn.set_update_hook(hook)
        Ingestor(cache, IDENT, [tmp_path / "claude"]).import_all(readers=0)
        cache.conn.set_update_hook(None)
        assert cache.counts()["messages"] == 3000
        cache.conn.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 0)")
        pages[name], segments[name], settings[name] = written[0], _segments(cache), _merge_settings(cache)
        found[name] = [h.key for h in cache.search("the", limit=10)]
    assert segments["unmerged"] > 4 * fts.BACKFILL_MERGE, segments  # the index is flushed often enough to merge
    assert segments["as-is"] < segments["unmerged"] / 4, segments
    # What merging rewrote, in index pages (about 140 segments of some 10 pages each here: merged, 19 left, and
    # FTS5's four left 11 but rewrote two and a half times as much)
    rewritten = {name: n - pages["unmerged"] for name, n in pages.items()}
    assert rewritten["as-is"] < pages["unmerged"] and rewritten["as-is"] < rewritten["FTS5's four"] / 2, pages
    assert settings["as-is"] == {"automerge": fts.FTS5_AUTOMERGE, "crisismerge": fts.FTS5_CRISISMERGE}, settings
    assert found["as-is"] == found["FTS5's four"] == found["unmerged"]


def test_a_later_import_leaves_the_segments_an_earlier_one_merged(tmp_path, monkeypatch):
    """FTS5 merges a level whole: a small import that merged four segments at a time, as FTS5's own merging (or
    its ``merge`` command) would, would rewrite the large segments an earlier import left, to add a few messages."""
    from cxsync.cache import fts
    from tests.bench.history import generate

    generate(tmp_path / "first", 3000, seed=3)
    generate(tmp_path / "later", 250, seed=4)
    kept = {}
    merge = fts.merge
    for name in ("as-is", "merging as FTS5's merge command would"):
        cache = open_cache(tmp_path / f"{name}.db")
        with cache.conn:  # segments as small, here, as those of a million messages are to the whole
            cache.conn.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('hashsize', 131072)")
        Ingestor(cache, IDENT, [tmp_path / "first"]).import_all(readers=0)
        large = {r[0] for r in cache.conn.execute(  # merged ones: 80-110 pages against 10 (pgno is twice the page)
            "SELECT segid FROM messages_fts_idx GROUP BY segid HAVING max(pgno) > 40")}
        assert len(large) >= fts.FTS5_USERMERGE, large
        if name != "as-is":
            monkeypatch.setattr(fts, "merge", lambda conn, usermerge, pages: merge(conn, fts.FTS5_USERMERGE,
                                                                                    pages=pages))
        Ingestor(cache, IDENT, [tmp_path / "later"]).import_all(readers=0)
        assert cache.counts()["messages"] == 3250
        cache.conn.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 0)")
        kept[name] = large <= {r[0] for r in cache.conn.execute("SELECT DISTINCT segid FROM messages_fts_idx")}
    assert kept == {"as-is": True, "merging as FTS5's merge command would": False}, kept


def test_an_imports_end_finishes_the_merge_automatic_merging_began(tmp_path):
    """Automatic merging works a little after each write: a backfill can end with a level half merged, its old and
    new segments both searched. ``finish_merging`` ends it, and begins none on a level of fewer than sixteen."""
    from cxsync.cache import fts

    cache = open_cache(tmp_path / "c.db")
    with cache.conn:
        cache.conn.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('automerge', 0)")
        cache.conn.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('crisismerge', 2000)")

    def segments(n: int) -> None:
        for _ in range(n):  # a segment per transaction
            with cache.conn:
                first = int(cache.conn.execute("SELECT coalesce(max(rowid), 0) + 1 FROM messages_fts").fetchone()[0])
                cache.conn.executemany("INSERT INTO messages_fts(rowid, content, idents) VALUES (?, ?, '')",
                                       [(first + j, f"word{j} common text {first}") for j in range(300)])

    segments(fts.BACKFILL_MERGE + 2)
    assert _segments(cache) == fts.BACKFILL_MERGE + 2
    with cache.conn:  # a merge of the level begun, a page of it written
        assert fts.merge(cache.conn, fts.BACKFILL_MERGE, pages=1)
    assert _segments(cache) == fts.BACKFILL_MERGE + 3  # the inputs all still there, and the output begun
    cache.finish_merging()
    assert _segments(cache) == 1
    segments(fts.BACKFILL_MERGE - 1)
    cache.finish_merging()
    assert _segments(cache) == fts.BACKFILL_MERGE
    cache.conn.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 0)")
    assert dict(cache.conn.execute("SELECT k, v FROM messages_fts_config WHERE k = 'usermerge'")) in (
        {}, {"usermerge": fts.FTS5_USERMERGE})
    assert cache.conn.execute("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'common'").fetchone()[0] \
        == 300 * (2 * fts.BACKFILL_MERGE + 1)


def test_a_backfills_batches_open_no_savepoints(tmp_path, monkeypatch):
    """Inside a backfill's transaction a batch's writes open no savepoint of their own: SQLite would copy every
    page they change into a sub-journal, to undo the batch alone, which a resumable import never needs."""
    import apsw

    from cxsync.agent.ingest import Batch
    from cxsync.cache.store import Cache
    from tests.bench.history import generate

    generate(tmp_path / "claude", 1000, seed=3)
    monkeypatch.setattr(Batch, "EVENTS", 100)
    real = Cache.transaction
    counts = []
    for name in ("as-is", "nested"):
        if name == "nested":
            monkeypatch.setattr(Cache, "transaction", lambda self, **kw: real(self))
        cache = open_cache(tmp_path / f"{name}.db")
        savepoints = []
        cache.conn.trace_v2(apsw.SQLITE_TRACE_STMT, lambda t: savepoints.append(1)
                            if str(t.get("sql", "")).lstrip().upper().startswith("SAVEPOINT") else None)
        Ingestor(cache, IDENT, [tmp_path / "claude"]).import_all(readers=0)
        assert cache.counts()["messages"] == 1000
        counts.append(len(savepoints))
    assert counts[0] == 0 and counts[1] >= 5, counts


def test_a_backfill_writes_each_transactions_records_in_key_order(tmp_path, monkeypatch):
    """Record keys are uuids: written as they come, each lands on a page of its own in a large ``records`` tree,
    read and written again for that one row. A backfill writes a transaction's records in key order when it ends,
    ``DEFERRED_RECORDS`` at a time, and stores the same rows whatever that is."""
    from cxsync.agent.ingest import Batch
    from cxsync.cache import apply
    from tests.bench.history import generate

    generate(tmp_path / "claude", 2000, seed=5)
    monkeypatch.setattr(Batch, "EVENTS", 100)  # many batches, one transaction
    runs, stored = [], []
    for name, held in (("one pass", apply.DEFERRED_RECORDS), ("passes of 300", 300)):
        monkeypatch.setattr(apply, "DEFERRED_RECORDS", held)
        cache = open_cache(tmp_path / f"{name}.db")
        written: list[str] = []

        def trace(cursor, sql, bindings, written=written):
            if sql.startswith("INSERT OR IGNORE INTO records"):
                written.append(bindings[0])
            return True

        cache.conn.set_exec_trace(trace)
        Ingestor(cache, IDENT, [tmp_path / "claude"]).import_all(readers=0)
        cache.conn.set_exec_trace(None)
        rows = cache.conn.execute("SELECT key, session_id, type, line FROM records ORDER BY key").fetchall()
        assert len(written) == len(rows) > 1000
        runs.append(1 + sum(a > b for a, b in zip(written, written[1:])))  # ascending runs of keys
        stored.append(rows)
        cache.close()
    assert runs[0] == 1, runs  # the whole import is one transaction: one pass
    assert len(stored[0]) / 500 <= runs[1] <= len(stored[0]) / 300 + 1, runs  # no pass holds much more than 300
    assert stored[0] == stored[1]


def test_a_backfill_into_an_empty_cache_asks_it_only_about_keys_it_produced(tmp_path, monkeypatch):
    """Into an empty cache, whatever the cache holds a reader produced: the keys it never produced (almost all of
    them, in a first import) are not looked up. Into a cache that held a transcript already, every key is."""
    from cxsync.cache.store import Cache
    from tests.bench.history import generate

    generate(tmp_path / "claude", 2000, seed=4)
    asked: list[str] = []

    def counted(real):
        def ask(self, keys):
            keys = list(keys)
            asked.extend(keys)
            return real(self, keys)
        return ask

    for name in ("known_messages", "record_owners"):
        monkeypatch.setattr(Cache, name, counted(getattr(Cache, name)))
    counts = {}
    for name in ("empty", "held a transcript"):
        asked.clear()
        cache = open_cache(tmp_path / f"{name}.db")
        if name == "held a transcript":
            other = tmp_path / "other"
            T.write(T.session_file(other, "s-before"), [T.user("s-before", "an earlier session")])
            Ingestor(cache, IDENT, [other]).import_all(readers=0)
            asked.clear()
        Ingestor(cache, IDENT, [tmp_path / "claude"]).import_all(readers=0)
        keys = cache.conn.execute("SELECT (SELECT count(*) FROM messages) + (SELECT count(*) FROM records)"
                                  ).fetchone()[0]
        counts[name] = (len(asked), keys)
        cache.close()
    (empty, keys), (held, keys_held) = counts["empty"], counts["held a transcript"]
    assert keys > 2000 and held >= keys_held - 2, counts  # every key asked about, but the earlier session's
    assert empty <= keys / 10, counts  # the filter's false positives only


def test_readers_are_sent_more_files_while_the_importer_commits(tmp_path, monkeypatch):
    """The importer receives nothing while it commits, and readers that have read all the files they were sent
    wait: before each commit they are sent ``COMMIT_AHEAD`` more, taken back from the files sent after it."""
    from cxsync.agent import backfill, ingest

    n = T.history(tmp_path / "claude", "c0mm17ed", sessions=80, messages=1)
    monkeypatch.setattr(ingest, "COMMIT_EVENTS", 1)  # a commit every 20 files
    monkeypatch.setattr(backfill, "IN_FLIGHT", 2)
    monkeypatch.setattr(backfill, "COMMIT_AHEAD", 3)
    ahead: list[int] = []
    real = backfill._Reader.send_next

    def send_next(self):
        real(self)
        ahead.append(self.sent - self.received)  # files sent and not yet received back

    monkeypatch.setattr(backfill._Reader, "send_next", send_next)
    cache = open_cache(tmp_path / "c.db")
    stats = Ingestor(cache, IDENT, [tmp_path / "claude"]).import_all(readers=2)
    assert stats.files == 80 and cache.counts()["messages"] == n
    assert max(ahead) == 2 + 3 and ahead.count(5) >= 2, ahead  # at the three commits before the last
    cache.close()
