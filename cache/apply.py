"""``apply``: the only writer of the materialised tables.

Local and remote events go through the same code, in one SQLite transaction together with what they cover (the
file offsets for local ingest, the stream cursor for a pull), so every cache that has seen the same events holds
the same rows and a replay of anything is a no-op.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import apsw
import orjson

from cxsync.cache.db import now_iso
from cxsync.sync import events as ev

Router = Callable[[ev.ContextEvent], Sequence[str]]


@dataclass
class ApplyResult:
    applied: int = 0  # new events stored
    skipped: int = 0  # already known (replays, own events coming back)
    messages: int = 0  # message rows inserted or replaced
    outboxed: int = 0
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


_MSG_COLS = ["key", "hash", "content", "role", "source_type", "source_file", "source_line", "created_at",
             "occurred_at", "session_id", "root_session", "agent_id", "project", "tenant", "user_id", "machine",
             "content_length", "has_code", "has_markdown", "language_hints", "model", "input_tokens",
             "output_tokens", "cache_read_tokens", "cache_creation_tokens", "parts", "is_sidechain", "is_meta",
             "is_prompt", "kinds", "event_id"]
_INSERT_MSG = (f"INSERT INTO messages({', '.join(_MSG_COLS)}) VALUES ({', '.join(':' + c for c in _MSG_COLS)})")
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


def _apply_message(conn: apsw.Connection, e: ev.ContextEvent) -> bool:
    row = _message_row(e)
    old = conn.execute(
        "SELECT id, parts, hash, content, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,"
        " session_id, model FROM messages WHERE key=?", (row["key"],)).fetchone()
    session = row["session_id"]
    _ensure_session(conn, e, session, row["root_session"])
    if old is None:
        conn.execute(_INSERT_MSG, row)
        rowid = conn.last_insert_rowid()
        conn.execute("INSERT INTO messages_fts(rowid, content) VALUES (?,?)", (rowid, row["content"]))
        delta = [row[t] for t in _TOKENS]
        count = 1
    else:
        oid, oparts, ohash, ocontent, *otok = old[:8]
        if old[8] != session or not _newer((row["parts"], row["hash"]), (oparts, ohash)):
            return False  # a copy (resume/fork) or an older version: the first capture stays
        row["id"] = oid
        conn.execute("INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', ?, ?)",
                     (oid, ocontent))
        conn.execute(_UPDATE_MSG, row)
        conn.execute("INSERT INTO messages_fts(rowid, content) VALUES (?,?)", (oid, row["content"]))
        delta = [row[t] - o for t, o in zip(_TOKENS, otok)]
        count = 0
    s = conn.execute("SELECT project, branch, first_at, last_at, first_prompt_at, models FROM sessions"
                     " WHERE session_id=?", (session,)).fetchone()
    project, branch, first_at, last_at, fp_at, models = s
    at = row["occurred_at"]
    upd: dict[str, Any] = {"sid": session, "count": count}
    sets = ["message_count = message_count + :count"]
    for t, dv in zip(_TOKENS, delta):
        sets.append(f"{t} = {t} + :{t}")
        upd[t] = dv
    if project is None and row["project"]:
        sets.append("project = :project")
        upd["project"] = row["project"]
    if branch is None and e.data.get("branch"):
        sets.append("branch = :branch")
        upd["branch"] = e.data.get("branch")
    if at and (first_at is None or at < first_at):
        sets.append("first_at = :at")
        upd["at"] = at
    if at and (last_at is None or at > last_at):
        sets.append("last_at = :at2")
        upd["at2"] = at
    if row["is_prompt"] and at and (fp_at is None or at < fp_at):
        sets.append("first_prompt = :fp, first_prompt_at = :fpat")
        upd["fp"] = row["content"][:500]
        upd["fpat"] = at
    model = row["model"]
    if model and model != "<synthetic>":
        ml = orjson.loads(models)
        if model not in ml:
            ml.append(model)
            sets.append("models = :models")
            upd["models"] = orjson.dumps(sorted(ml)).decode()
    conn.execute(f"UPDATE sessions SET {', '.join(sets)} WHERE session_id = :sid", upd)
    # The parent of a subagent: keep its project visible even when the subagent is applied first.
    if row["root_session"] != session:
        _ensure_session(conn, e, row["root_session"], None)
    return True


def _apply_session_started(conn: apsw.Connection, e: ev.ContextEvent) -> None:
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


def _apply_session_ended(conn: apsw.Connection, e: ev.ContextEvent) -> None:
    d = e.data
    _ensure_session(conn, e, d["session"], None)
    conn.execute("UPDATE sessions SET ended_at = :at, ended_count = :n WHERE session_id = :sid"
                 " AND (ended_at IS NULL OR ended_at <= :at)",
                 {"sid": d["session"], "at": d.get("ended_at"), "n": d.get("message_count")})


def _apply_records(conn: apsw.Connection, e: ev.ContextEvent) -> None:
    sid = e.data["session"]
    _ensure_session(conn, e, sid, e.data.get("root_session"))
    for r in e.data.get("records", []):
        raw = r.get("raw", "")
        changed = conn.execute(
            "INSERT OR IGNORE INTO records(key, session_id, type, line, raw) VALUES (?,?,?,?,?)",
            (r["key"], sid, r.get("type"), r.get("line"), zlib.compress(raw.encode("utf-8", "surrogatepass"))),
        )
        title = r.get("title")
        rank = int(r.get("title_rank") or 0)
        if conn.changes() and title and rank:
            target = sid
            leaf = r.get("leaf_uuid")
            if leaf:  # a summary names the conversation its leaf belongs to, possibly another file's
                hit = conn.execute("SELECT session_id FROM messages WHERE key=?", ("u:" + leaf,)).fetchone()
                if hit:
                    target = hit[0]
            conn.execute("UPDATE sessions SET title = :t, title_rank = :r WHERE session_id = :sid"
                         " AND title_rank <= :r", {"t": title, "r": rank, "sid": target})
        del changed


def _apply_knowledge(conn: apsw.Connection, e: ev.ContextEvent) -> None:
    if e.type == ev.KNOWLEDGE_EXTRACTED:
        k = e.data["knowledge"]
        hashes = e.data.get("source_message_hashes") or []
        msg = None
        if hashes:
            hit = conn.execute("SELECT id FROM messages WHERE hash=? LIMIT 1", (hashes[0],)).fetchone()
            msg = hit[0] if hit else None
        conn.execute(
            "INSERT OR IGNORE INTO knowledge(knowledge_id, message_id, knowledge_type, extracted_data,"
            " source_hashes, created_at) VALUES (?,?,?,?,?,?)",
            (str(k["id"]), msg, k.get("type"), orjson.dumps(k).decode(), orjson.dumps(hashes).decode(),
             e.timestamp))
    else:
        conn.execute("UPDATE knowledge SET shared_scope = ?, project = ? WHERE knowledge_id = ?",
                     (e.data.get("scope"), e.data.get("project"), e.data.get("knowledge_id")))


_HANDLERS: dict[str, Callable[[apsw.Connection, ev.ContextEvent], Any]] = {
    ev.MESSAGE_INDEXED: _apply_message,
    ev.SESSION_STARTED: _apply_session_started,
    ev.SESSION_ENDED: _apply_session_ended,
    ev.RECORDS_CAPTURED: _apply_records,
    ev.KNOWLEDGE_EXTRACTED: _apply_knowledge,
    ev.KNOWLEDGE_SHARED: _apply_knowledge,
}


def apply_in_tx(conn: apsw.Connection, events: Iterable[ev.ContextEvent], origin: str,
                route: Router | None, payloads: Mapping[str, bytes] | None = None) -> ApplyResult:
    """Apply inside an open transaction.  ``payloads`` may carry already-encoded events (a pull has them)."""
    res = ApplyResult()
    now = now_iso()
    for e in events:
        payload = (payloads or {}).get(e.event_id) or ev.encode(e)
        conn.execute("INSERT OR IGNORE INTO events(event_id, type, origin, payload, received_at)"
                     " VALUES (?,?,?,?,?)", (e.event_id, e.type, origin, payload, now))
        if not conn.changes():
            res.skipped += 1
            continue
        seq = conn.last_insert_rowid()
        res.applied += 1
        res.event_ids.append(e.event_id)
        if _HANDLERS[e.type](conn, e) and e.type == ev.MESSAGE_INDEXED:
            res.messages += 1
        if origin == "local" and route is not None:
            for stream in route(e):
                conn.execute("INSERT OR IGNORE INTO outbox(event_seq, stream) VALUES (?,?)", (seq, stream))
                res.outboxed += 1
    return res
