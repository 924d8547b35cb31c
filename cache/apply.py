"""``apply``: the only writer of the materialised tables.

Local and remote events go through the same code, in one SQLite transaction together with what they cover (the
file offsets for local ingest, the stream cursor for a pull), so every cache that has seen the same events holds
the same rows and a replay of anything is a no-op.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, cast

import apsw
import orjson

from cxsync.cache import compress, fts
from cxsync.cache.db import now_iso, one_row, scalar
from cxsync.sync import events as ev

Router = Callable[[ev.ContextEvent], Sequence[str]]


@dataclass
class ApplyResult:
    applied: int = 0  # new events stored
    skipped: int = 0  # already known (replays, own events coming back)
    messages: int = 0  # message rows inserted or replaced
    outboxed: int = 0
    undecodable: int = 0  # pulled events kept aside: not decodable or not materialisable by this version
    event_ids: list[str] = field(default_factory=list)


def _message_row(e: ev.ContextEvent) -> dict[str, Any]:
    d = e.data
    md = d.get("metadata") or {}
    prov = d.get("provenance") or {}
    usage = d.get("usage") or {}
    return {
        "key": d["key"],
        "hash": d["hash"],
        "content": d.get("content", ""),
        "role": d.get("role", "user"),
        "source_type": prov.get("source_type", "claude-code"),
        "source_file": prov.get("source_file"),
        "source_line": prov.get("source_line"),
        "created_at": d.get("indexed_at"),
        "occurred_at": d.get("occurred_at"),
        "session_id": d["session"],
        "root_session": d.get("root_session") or d["session"],
        "agent_id": d.get("agent_id"),
        "project": d.get("project"),
        "tenant": e.tenant,
        "user_id": e.user,
        "machine": e.machine,
        "content_length": md.get("content_length", len(d.get("content", ""))),
        "has_code": int(bool(md.get("has_code"))),
        "has_markdown": int(bool(md.get("has_markdown"))),
        "language_hints": orjson.dumps(md.get("language_hints") or []).decode(),
        "model": d.get("model"),
        "input_tokens": int(usage.get("input_tokens") or 0),
        "output_tokens": int(usage.get("output_tokens") or 0),
        "cache_read_tokens": int(usage.get("cache_read_input_tokens") or 0),
        "cache_creation_tokens": int(usage.get("cache_creation_input_tokens") or 0),
        "parts": int(d.get("parts") or 1),
        "is_sidechain": int(bool(d.get("is_sidechain"))),
        "is_meta": int(bool(d.get("is_meta"))),
        "is_prompt": int(bool(d.get("is_prompt"))),
        "kinds": orjson.dumps(d.get("kinds") or []).decode(),
        "event_id": e.event_id,
    }


_MSG_COLS = ["key", "hash", "role", "source_type", "source_file", "source_line", "created_at",
             "occurred_at", "session_id", "root_session", "agent_id", "project", "tenant", "user_id", "machine",
             "content_length", "has_code", "has_markdown", "language_hints", "model", "input_tokens",
             "output_tokens", "cache_read_tokens", "cache_creation_tokens", "parts", "is_sidechain", "is_meta",
             "is_prompt", "kinds", "event_id"]
_UPDATE_MSG = ("UPDATE messages SET " + ", ".join(f"{c}=:{c}" for c in _MSG_COLS if c != "key")
               + " WHERE id=:id")
_TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens")


def _ensure_session(conn: apsw.Connection, e: ev.ContextEvent, session: str, root: str | None) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO sessions(session_id, root_session, tenant, user_id, machine) VALUES (?,?,?,?,?)",
        (session, root or session, e.tenant, e.user, e.machine))


def _newer(a: tuple[int, str], b: tuple[int, str]) -> bool:
    """Deterministic winner between two versions of one message: more parts, then the larger hash."""
    return a > b


# ---- copies: which session owns a record found in several files ------------------------------------------------
#
# Resume, continue and fork copy a conversation's records (same uuids) into a new file.  Which session owns such a
# record must not depend on which file a machine happened to read first, or caches that saw the same files
# disagree for good.  The owner is a pure function of the copies: the session the record itself names (its
# ``sessionId``: copies keep the one they were born in; a subagent's names its parent), else the smallest
# session id.  ``apply`` keeps the best copy whatever order they arrive in; ingest skips only copies that lose.


def origin_of_raw(raw: Any) -> str | None:
    """The ``sessionId`` a verbatim transcript line names, if any."""
    if not isinstance(raw, str):
        return None
    try:
        rec = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    sid = rec.get("sessionId") if isinstance(rec, dict) else None
    return sid if isinstance(sid, str) else None


def message_origin(data: Mapping[str, Any]) -> str | None:
    """The session a message's records name (events from before the ``origin`` field: read from its lines)."""
    origin = data.get("origin")
    if isinstance(origin, str):
        return origin
    records = data.get("records")
    return origin_of_raw(records[0]) if isinstance(records, list) and records else None


def owner_rank(session: str, origin: str | None) -> tuple[int, str]:
    """Smaller ranks own: a copy in the session its record names (or a subagent of it) before any other."""
    native = origin is not None and (session == origin or session.startswith(origin + ":"))
    return (0 if native else 1, session)


class _SessionAgg:
    """Per-transaction session aggregates: one UPDATE per session per apply, not one per message."""

    def __init__(self) -> None:
        self.s: dict[str, dict[str, Any]] = {}
        self.new_messages = 0
        self.recount: set[str] = set()  # sessions a message moved out of: their figures are recomputed

    def add(self, e: ev.ContextEvent, row: dict[str, Any], count: int, delta: list[int]) -> None:
        sid = row["session_id"]
        a = self.s.get(sid)
        if a is None:
            a = self.s[sid] = {"e": e, "root": row["root_session"], "count": 0, "tok": [0, 0, 0, 0],
                               "first": None, "last": None, "fp": None, "fpat": None, "models": set(),
                               "project": None, "branch": None}
        a["count"] += count
        self.new_messages += count
        a["tok"] = [x + d for x, d in zip(a["tok"], delta)]
        at = row["occurred_at"]
        if at:
            if a["first"] is None or at < a["first"]:
                a["first"] = at
            if a["last"] is None or at > a["last"]:
                a["last"] = at
            if row["is_prompt"] and (a["fpat"] is None or at < a["fpat"]):
                a["fp"], a["fpat"] = row["content"][:500], at
        if row["model"] and row["model"] != "<synthetic>":
            a["models"].add(row["model"])
        a["project"] = a["project"] or row["project"]
        a["branch"] = a["branch"] or e.data.get("branch")

    def flush(self, conn: apsw.Connection) -> None:
        for sid, a in self.s.items():
            _ensure_session(conn, a["e"], sid, a["root"])
            if a["root"] != sid:
                _ensure_session(conn, a["e"], a["root"], None)
            current = one_row(conn, "SELECT first_prompt_at, models FROM sessions WHERE session_id=?", (sid,))
            assert current is not None  # ensured just above
            fp_at, models = current
            ml = set(orjson.loads(models)) | a["models"]
            use_fp = a["fpat"] is not None and (fp_at is None or a["fpat"] < fp_at)
            conn.execute(
                "UPDATE sessions SET message_count = message_count + :count,"
                " input_tokens = input_tokens + :t0, output_tokens = output_tokens + :t1,"
                " cache_read_tokens = cache_read_tokens + :t2, cache_creation_tokens = cache_creation_tokens + :t3,"
                " project = coalesce(project, :project), branch = coalesce(branch, :branch),"
                " first_at = CASE WHEN first_at IS NULL OR :first < first_at THEN coalesce(:first, first_at)"
                "   ELSE first_at END,"
                " last_at = CASE WHEN last_at IS NULL OR :last > last_at THEN coalesce(:last, last_at)"
                "   ELSE last_at END,"
                " first_prompt = CASE WHEN :use_fp THEN :fp ELSE first_prompt END,"
                " first_prompt_at = CASE WHEN :use_fp THEN :fpat ELSE first_prompt_at END,"
                " models = :models WHERE session_id = :sid",
                {"sid": sid, "count": a["count"], "t0": a["tok"][0], "t1": a["tok"][1], "t2": a["tok"][2],
                 "t3": a["tok"][3], "project": a["project"], "branch": a["branch"], "first": a["first"],
                 "last": a["last"], "use_fp": int(use_fp), "fp": a["fp"], "fpat": a["fpat"],
                 "models": orjson.dumps(sorted(ml)).decode()})
        self.s.clear()
        for sid in sorted(self.recount):
            _recount(conn, sid)
        self.recount.clear()


def _recount(conn: apsw.Connection, sid: str) -> None:
    """Recompute what a session's figures owe to its messages, from the rows it holds now."""
    count, t0, t1, t2, t3, last = one_row(
        conn, "SELECT count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),"
        " coalesce(sum(cache_read_tokens), 0), coalesce(sum(cache_creation_tokens), 0), max(occurred_at)"
        " FROM messages WHERE session_id = ?", (sid,)) or (0, 0, 0, 0, 0, None)
    prompt = one_row(conn, "SELECT substr(cx_text(event_id), 1, 500), occurred_at FROM messages WHERE session_id = ?"
                     " AND is_prompt = 1 AND occurred_at IS NOT NULL ORDER BY occurred_at, key LIMIT 1", (sid,))
    models = [r[0] for r in conn.execute("SELECT DISTINCT model FROM messages WHERE session_id = ? AND model IS NOT"
                                         " NULL AND model != '<synthetic>' ORDER BY model", (sid,))]
    conn.execute(
        "UPDATE sessions SET message_count = ?, input_tokens = ?, output_tokens = ?, cache_read_tokens = ?,"
        " cache_creation_tokens = ?, last_at = ?, first_prompt = ?, first_prompt_at = ?, models = ?"
        " WHERE session_id = ?",
        (count, t0, t1, t2, t3, last, prompt[0] if prompt else None, prompt[1] if prompt else None,
         orjson.dumps(models).decode(), sid))


def _apply_message(conn: apsw.Connection, e: ev.ContextEvent, seq: int, agg: _SessionAgg) -> bool:
    """A message whose key is already held: a copy (kept as first captured) or a version with more parts."""
    row = _message_row(e)
    old = one_row(
        conn, "SELECT id, parts, hash, input_tokens, output_tokens, cache_read_tokens,"
        " cache_creation_tokens, session_id FROM messages WHERE key=?", (row["key"],))
    if old is None:
        _insert_new(conn, _new_rows(conn, [(e, row)]), {e.event_id: str(row["content"])}, {})
        agg.add(e, row, 1, [row[t] for t in _TOKENS])
        return True
    oid, oparts, ohash, *otok = old[:7]
    osession = old[7]
    if osession == row["session_id"]:
        if not _newer((row["parts"], row["hash"]), (oparts, ohash)):
            return False  # an older version of the message held
    elif owner_rank(row["session_id"], message_origin(e.data)) > owner_rank(osession, _stored_origin(conn, oid)):
        return False  # a copy (resume/fork) that does not own the record: the owner's stays
    row["id"] = oid
    conn.execute(_UPDATE_MSG, row)  # the event id changes: the index trigger replaces the row's tokens
    if osession == row["session_id"]:
        agg.add(e, row, 0, [row[t] - o for t, o in zip(_TOKENS, otok)])
    else:  # moved to its owner: counted there now, and the session it left is recounted from its rows
        agg.add(e, row, 1, [row[t] for t in _TOKENS])
        agg.new_messages -= 1
        agg.recount.add(osession)
    return True


def _stored_origin(conn: apsw.Connection, message_id: int) -> str | None:
    hit = conn.execute("SELECT e.payload FROM messages m JOIN events e ON e.event_id = m.event_id WHERE m.id = ?",
                       (message_id,)).fetchone()
    return message_origin(ev.decode(hit[0]).data) if hit else None


def _new_rows(conn: apsw.Connection, items: list[tuple[ev.ContextEvent, dict[str, Any]]]) -> list[tuple[Any, ...]]:
    """Insert tuples for new messages, with time-ordered ids, sorted by id.

    The id is the second the message occurred times ``fts.SLOTS`` plus a slot chosen by its key; a taken slot
    moves to the next free one. Sorted, because FTS5 flushes its pending terms whenever a transaction's rowids
    stop ascending.
    """
    want = [fts.preferred_id(row["occurred_at"], e.timestamp, row["key"]) for e, row in items]
    queried = set(want)
    taken = {int(i) for i in _existing(conn, "SELECT id FROM messages WHERE id IN (%s)", want)}

    def free(i: int) -> bool:
        if i in taken:
            return False
        if i not in queried:  # a probe past the preferred slots: ask the table
            queried.add(i)
            if conn.execute("SELECT 1 FROM messages WHERE id=?", (i,)).fetchone():
                taken.add(i)
                return False
        return True

    out = []
    for (e, row), i in zip(items, want):
        while not free(i):
            i += 1
        taken.add(i)
        out.append((i, *[row[c] for c in _MSG_COLS]))
    out.sort(key=lambda r: int(r[0]))
    return out


def _apply_session_started(conn: apsw.Connection, e: ev.ContextEvent, seq: int, agg: _SessionAgg) -> None:
    d = e.data
    sid = d["session"]
    _ensure_session(conn, e, sid, d.get("root_session"))
    conn.execute(
        "UPDATE sessions SET parent_session = coalesce(parent_session, :parent),"
        " agent_id = coalesce(agent_id, :agent), project = coalesce(project, :project),"
        " branch = coalesce(branch, :branch), source_file = coalesce(source_file, :src),"
        " version = coalesce(version, :version),"
        " first_at = CASE WHEN first_at IS NULL OR :started < first_at THEN :started ELSE first_at END"
        " WHERE session_id = :sid",
        {"sid": sid, "parent": d.get("parent_session"), "agent": d.get("agent_id"), "project": d.get("project"),
         "branch": d.get("branch"), "src": d.get("source_file"), "version": d.get("version"),
         "started": d.get("started_at")})


def _apply_session_ended(conn: apsw.Connection, e: ev.ContextEvent, seq: int, agg: _SessionAgg) -> None:
    d = e.data
    _ensure_session(conn, e, d["session"], None)
    conn.execute("UPDATE sessions SET ended_at = :at, ended_count = :n WHERE session_id = :sid"
                 " AND (ended_at IS NULL OR ended_at <= :at)",
                 {"sid": d["session"], "at": d.get("ended_at"), "n": d.get("message_count")})


# A record row as ``_write_records`` takes it: (key, event seq, session, type, line, origin), where the origin is the
# session the record's line names, or the record itself when that is still to be read from its line (only a
# copy of a record held already needs it).
_RecordRow = tuple[str, int, str, Any, Any, Any]
DEFERRED_RECORDS = 25_000  # rows held by ``records_deferred`` before they are written (about 6 MB)


class _Records:
    def __init__(self) -> None:
        self.rows: list[_RecordRow] = []
        self.titles: list[tuple[int, str, list[Mapping[str, Any]]]] = []  # (seq, session, titled records)


_deferred: dict[int, _Records] = {}  # by id() of a connection inside ``records_deferred``


@contextlib.contextmanager
def records_deferred(conn: apsw.Connection) -> Iterator[None]:
    """``with records_deferred(conn):`` inside a transaction, the records of RecordsCaptured events are written in
    key order, ``DEFERRED_RECORDS`` at a time and all of them before the block ends (so before the transaction
    commits).

    Record keys are uuids: written as they come, each lands on a page of its own in the 130 MB ``records`` tree
    of a million messages, which the page cache has evicted since, so every row cost a page read and a page
    write. In key order, each page is read and written once per pass. The titles the records set are written then
    too, so a summary finds its leaf among all the messages the transaction wrote before. An exception leaves
    what is held unwritten: the transaction it was part of is rolled back."""
    if id(conn) in _deferred:
        raise RuntimeError("records are deferred already on this connection")
    held = _deferred[id(conn)] = _Records()
    try:
        yield
        _write_records(conn, held)
    finally:
        del _deferred[id(conn)]


def _apply_records(conn: apsw.Connection, e: ev.ContextEvent, seq: int, agg: _SessionAgg) -> None:
    sid = e.data["session"]
    _ensure_session(conn, e, sid, e.data.get("root_session"))
    held = _deferred.get(id(conn))
    batch = held if held is not None else _Records()
    records = e.data.get("records", [])
    # A backfill's reader has read each record's origin already (backfill._light); a record with its line keeps it.
    batch.rows.extend((r["key"], seq, sid, _interned(r.get("type")), r.get("line"),
                       r["origin"] if "origin" in r else r) for r in records)
    titled = [r for r in records if r.get("title") and int(r.get("title_rank") or 0)]
    if titled:
        batch.titles.append((seq, sid, titled))
    if held is None or len(held.rows) >= DEFERRED_RECORDS:
        _write_records(conn, batch)


def _interned(rtype: Any) -> Any:
    # A few types among thousands of held rows: one string each, not one per row.
    return sys.intern(rtype) if type(rtype) is str else rtype


def _write_records(conn: apsw.Connection, batch: _Records) -> None:
    """Store the records of some RecordsCaptured events (``batch``, in event order) as applying each event in turn
    would: a key held already (by an earlier event, or a copy in another file) stays with the session that owns
    it (``owner_rank``); an event that stored or moved none of its records sets no session title."""
    rows, titles = batch.rows, batch.titles
    batch.rows, batch.titles = [], []
    before = conn.total_changes()
    # Sorted by key, then event: of the copies in the batch, the earliest event's is inserted, as in event order.
    conn.executemany("INSERT OR IGNORE INTO records(key, session_id, type, line, event_seq) VALUES (?,?,?,?,?)",
                     ((k, sid, t, line, seq) for k, seq, sid, t, line, _ in sorted(rows, key=itemgetter(0, 1))))
    changed: set[int] | None = None  # events that stored or moved a record; None: every event (nothing was held)
    if conn.total_changes() - before < len(rows):  # some keys were held: who holds each, one query per 900
        held: dict[str, tuple[int, str]] = {}
        keys = list({r[0] for r in rows})
        for i in range(0, len(keys), 900):
            chunk = keys[i:i + 900]
            held.update((k, (oseq, osid)) for k, oseq, osid in conn.execute(
                "SELECT key, event_seq, session_id FROM records WHERE key IN (%s)" % ",".join("?" * len(chunk)),
                chunk))
        copies = [r for r in rows if held[r[0]][0] != r[1]]  # what the batch's own events did not store
        changed = {r[1] for r in rows if held[r[0]][0] == r[1]}
        for key, seq, sid, rtype, line, origin in copies:  # in event order: kept by the session that owns them
            oseq, osid = held[key]
            if isinstance(origin, dict):
                origin = origin_of_raw(origin.get("raw"))
            if osid != sid and owner_rank(sid, origin) < owner_rank(osid, _stored_record_origin(conn, oseq, key)):
                conn.execute("UPDATE records SET session_id = ?, type = ?, line = ?, event_seq = ? WHERE key = ?",
                             (sid, rtype, line, seq, key))
                held[key] = (seq, sid)
                changed.add(seq)
    for seq, sid, titled in titles:
        if changed is not None and seq not in changed:
            continue
        for r in titled:
            target = sid
            leaf = r.get("leaf_uuid")
            if leaf:  # a summary names the conversation its leaf belongs to, possibly another file's
                hit = conn.execute("SELECT session_id FROM messages WHERE key=?", ("u:" + leaf,)).fetchone()
                if hit:
                    target = hit[0]
            conn.execute("UPDATE sessions SET title = :t, title_rank = :r WHERE session_id = :sid"
                         " AND title_rank <= :r", {"t": r["title"], "r": int(r["title_rank"]), "sid": target})


def _stored_record_origin(conn: apsw.Connection, seq: int, key: str) -> str | None:
    hit = conn.execute("SELECT payload FROM events WHERE seq = ?", (seq,)).fetchone()
    if hit is None:
        return None
    raw = next((r.get("raw") for r in ev.decode(hit[0]).data.get("records", []) if r.get("key") == key), None)
    return origin_of_raw(raw)


def _insert_item(conn: apsw.Connection, e: ev.ContextEvent, k: Mapping[str, Any], hashes: Sequence[str]) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO knowledge(knowledge_id, knowledge_type, extracted_data, source_hashes, project,"
        " created_at, user_id, session_id, title, occurred_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (str(k["id"]), k.get("type"), orjson.dumps(k).decode(), orjson.dumps(list(hashes)).decode(),
         k.get("project"), e.timestamp, e.user, k.get("session"), k.get("title"), k.get("occurred_at")))


def _apply_knowledge(conn: apsw.Connection, e: ev.ContextEvent, seq: int, agg: _SessionAgg) -> None:
    if e.type == ev.KNOWLEDGE_EXTRACTED:
        _insert_item(conn, e, e.data["knowledge"], e.data.get("source_message_hashes") or [])
        return
    d = e.data
    item = d.get("knowledge")
    if isinstance(item, Mapping) and item.get("id") == d.get("knowledge_id"):
        _insert_item(conn, e, item, item.get("sources") or [])  # a teammate's item arrives with its share
    conn.execute(
        "INSERT INTO knowledge_shares(knowledge_id, scope, project, shared, user_id, at, event_id)"
        " VALUES (:k, :scope, :project, :shared, :user, :at, :eid) ON CONFLICT(knowledge_id, scope, project)"
        " DO UPDATE SET shared = excluded.shared, user_id = excluded.user_id, at = excluded.at,"
        " event_id = excluded.event_id WHERE (excluded.at, excluded.event_id) > (knowledge_shares.at,"
        " knowledge_shares.event_id)",
        {"k": d.get("knowledge_id"), "scope": d.get("scope"), "project": d.get("project") or "",
         "shared": int(d.get("shared", True)), "user": e.user, "at": e.timestamp, "eid": e.event_id})


_HANDLERS: dict[str, Callable[[apsw.Connection, ev.ContextEvent, int, _SessionAgg], Any]] = {
    ev.SESSION_STARTED: _apply_session_started,
    ev.SESSION_ENDED: _apply_session_ended,
    ev.RECORDS_CAPTURED: _apply_records,
    ev.KNOWLEDGE_EXTRACTED: _apply_knowledge,
    ev.KNOWLEDGE_SHARED: _apply_knowledge,
}


def _existing(conn: apsw.Connection, sql: str, values: Sequence[Any]) -> set[Any]:
    out: set[Any] = set()
    for i in range(0, len(values), 900):  # SQLite's bound-parameter limit, with room to spare
        chunk = values[i:i + 900]
        out.update(r[0] for r in conn.execute(sql % ",".join("?" * len(chunk)), chunk))
    return out


_INSERT_MSG_WITH_ID = (f"INSERT INTO messages(id, {', '.join(_MSG_COLS)})"
                       f" VALUES ({', '.join('?' * (len(_MSG_COLS) + 1))})")
_EVENT_ID = 1 + _MSG_COLS.index("event_id")


def _insert_new(conn: apsw.Connection, rows: list[tuple[Any, ...]], texts: Mapping[str, str],
                idents: Mapping[str, str]) -> None:
    """Insert new message rows (``_new_rows``) and index their texts: the rows keep no text, and the index has no
    insert trigger (schema migration 7). ``idents``: identifier parts already split, by event id."""
    conn.executemany(_INSERT_MSG_WITH_ID, rows)
    fts.index(conn, [(r[0], texts[r[_EVENT_ID]], idents[r[_EVENT_ID]] if r[_EVENT_ID] in idents
                      else fts.idents(texts[r[_EVENT_ID]])) for r in rows])


def apply_in_tx(conn: apsw.Connection, events: Iterable[ev.ContextEvent], origin: str,
                route: Router | None, payloads: Mapping[str, bytes] | None = None,
                idents: Mapping[str, str] | None = None) -> ApplyResult:
    """Apply inside an open transaction.  ``payloads`` may carry already-encoded events (a pull has them), and
    ``idents`` the identifier parts of messages' texts (``fts.idents``; a backfill's reader has them).

    Set-wise, because a backfill applies thousands of events at a time: the events already stored are found in
    one query per 900 ids and skipped (an upsert returning what it stored took twice as long, measured); the rest
    are written with ``executemany`` — the events with explicit sequence numbers, the messages new to the table
    with time-ordered ids in ascending order and their index rows, then, one by one and in order, the rarer cases
    (a message that grew, session and record events), and finally the outbox rows.
    """
    res = ApplyResult()
    now = now_iso()
    agg = _SessionAgg()
    events = list(events)
    known = _existing(conn, "SELECT event_id FROM events WHERE event_id IN (%s)", [e.event_id for e in events])
    fresh: list[ev.ContextEvent] = []
    for e in events:
        if e.event_id in known:
            res.skipped += 1
            continue
        known.add(e.event_id)
        fresh.append(e)
    if not fresh:
        return res
    base = scalar(conn, "SELECT coalesce(max(seq), 0) FROM events")
    seqs = {e.event_id: base + i for i, e in enumerate(fresh, 1)}
    payloads = payloads or {}
    # Events made here are sealed with the cache's dictionary; what came with bytes (a pull) keeps them.
    dictionary = compress.active(conn) if origin == "local" else None

    def payload(e: ev.ContextEvent) -> bytes:
        got = payloads.get(e.event_id)
        if got:
            return got
        if dictionary is not None and e.wire is None:
            return ev.seal(ev.serialize(e), dictionary)
        return ev.encode(e)

    conn.executemany(
        "INSERT INTO events(seq, event_id, type, origin, payload, received_at) VALUES (?,?,?,?,?,?)",
        [(seqs[e.event_id], e.event_id, e.type, origin, payload(e), now) for e in fresh])
    res.applied = len(fresh)
    res.event_ids = [e.event_id for e in fresh]

    messages = [e for e in fresh if e.type == ev.MESSAGE_INDEXED]
    if messages:
        present = _existing(conn, "SELECT key FROM messages WHERE key IN (%s)", [e.data["key"] for e in messages])
        new: list[tuple[ev.ContextEvent, dict[str, Any]]] = []
        later = []
        for e in messages:
            key = e.data["key"]
            if key in present:
                later.append(e)  # already held (a copy, or a message that grew): decided one by one
                continue
            present.add(key)
            row = _message_row(e)
            new.append((e, row))
            agg.add(e, row, 1, [row[t] for t in _TOKENS])
        texts = {e.event_id: str(e.data.get("content") or "") for e in messages}
        _insert_new(conn, _new_rows(conn, new), texts, idents or {})
        res.messages = len(new)
        changing = (_existing(conn, "SELECT id FROM messages WHERE key IN (%s)", [e.data["key"] for e in later])
                    if later and fts.holding(conn) else set())
        with fts.pending_texts(texts), fts.immediate(conn, changing):  # their update triggers read the index
            for e in later:
                res.messages += int(_apply_message(conn, e, seqs[e.event_id], agg))
    for e in fresh:
        if e.type != ev.MESSAGE_INDEXED:
            _HANDLERS[e.type](conn, e, seqs[e.event_id], agg)
    if origin == "local" and route is not None:
        outbox = [(seqs[e.event_id], stream) for e in fresh for stream in route(e)]
        conn.executemany("INSERT OR IGNORE INTO outbox(event_seq, stream) VALUES (?,?)", outbox)
        res.outboxed = len(outbox)
    agg.flush(conn)
    if agg.new_messages:
        conn.execute("UPDATE counters SET value = value + ? WHERE name = 'messages'", (agg.new_messages,))
        agg.new_messages = 0
    return res


# ---- pulled events: the entry point of what a log hands us -------------------------------------------------

# What a malformed event raises while it is materialised (a field missing or of the wrong type, a value a column
# refuses).  Disk full, busy and I/O errors are not among them: those abort the page and are retried whole.
_MATERIALISE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError, apsw.ConstraintError,
                       apsw.MismatchError, apsw.RangeError)


def _keep_undecodable(conn: apsw.Connection, stream: str, cursor: bytes, event_id: str | None, payload: bytes,
                      error: str) -> None:
    conn.execute("INSERT OR REPLACE INTO undecodable(stream, cursor, event_id, payload, error, received_at)"
                 " VALUES (?,?,?,?,?,?)", (stream, cursor, event_id or None, payload, error, now_iso()))


def _materialise(conn: apsw.Connection, events: list[tuple[bytes, ev.ContextEvent, bytes]], stream: str,
                 res: ApplyResult) -> None:
    """Apply decoded events with their payloads as read; isolate the ones that fail to materialise."""
    if not events:
        return
    try:
        with conn:  # a savepoint: a failing event rolls back only this attempt
            part = apply_in_tx(conn, [e for _, e, _ in events], "remote", None, {e.event_id: p for _, e, p in events})
    except _MATERIALISE_ERRORS as exc:
        if len(events) == 1:
            cursor, e, payload = events[0]
            _keep_undecodable(conn, stream, cursor, e.event_id, payload,
                              f"cannot materialise {e.type} event {e.event_id}: {type(exc).__name__}: {exc}")
            res.undecodable += 1
            return
        mid = len(events) // 2  # bisect: the good events of the page are applied, in order
        _materialise(conn, events[:mid], stream, res)
        _materialise(conn, events[mid:], stream, res)
        return
    res.applied += part.applied
    res.skipped += part.skipped
    res.messages += part.messages
    res.event_ids += part.event_ids


def apply_pulled_in_tx(conn: apsw.Connection, stream: str, entries: Sequence[Any]) -> ApplyResult:
    """Apply a page of ``LogEntry``s inside an open transaction.  Nothing stops the page: an entry that could not
    be decoded, an event of a type this version does not know, or one that fails to materialise is kept in
    ``undecodable`` (for ``rebuild`` after an upgrade) and skipped; the rest are applied, payloads untouched."""
    res = ApplyResult()
    good: list[tuple[bytes, ev.ContextEvent, bytes]] = []
    for entry in entries:
        e = entry.event
        payload = entry.payload if entry.payload is not None else (ev.encode(e) if e is not None else b"")
        if e is None or not e.known:
            error = entry.error if e is None else f"event type {e.type!r} is not known to this cxsync: upgrade"
            _keep_undecodable(conn, stream, entry.cursor, entry.event_id, payload, error or "undecodable")
            res.undecodable += 1
        else:
            good.append((entry.cursor, e, payload))
    _materialise(conn, good, stream, res)
    return res


def retry_undecodable_in_tx(conn: apsw.Connection) -> dict[str, int]:
    """Decode and apply the kept undecodable events again; those that now work leave the table."""
    done = kept = 0
    rows = conn.execute("SELECT stream, cursor, event_id, payload, error FROM undecodable"
                        " ORDER BY stream, cursor").fetchall()
    for row in rows:
        stream, cursor, payload = str(row[0]), bytes(cast(bytes, row[1])), bytes(cast(bytes, row[3]))
        try:
            e = ev.decode(payload)
        except ev.CodecError as exc:
            conn.execute("UPDATE undecodable SET error=? WHERE stream=? AND cursor=?", (str(exc), stream, cursor))
            kept += 1
            continue
        res = ApplyResult()
        conn.execute("DELETE FROM undecodable WHERE stream=? AND cursor=?", (stream, cursor))
        if not e.known:
            _keep_undecodable(conn, stream, cursor, e.event_id, payload,
                              f"event type {e.type!r} is not known to this cxsync: upgrade")
        else:
            _materialise(conn, [(cursor, e, payload)], stream, res)
        if e.known and not res.undecodable:
            done += 1
        else:
            kept += 1
    return {"applied": done, "kept": kept}
