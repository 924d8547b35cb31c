"""Read-side queries: full-text search (the seed's /cxq), session listings, a conversation in order."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import apsw

from cxsync.cache.db import scalar
from cxsync.sync.errors import CxError, UsageError

HL_OPEN, HL_CLOSE = "\x02", "\x03"  # snippet highlight markers; the CLI renders them (bold, or ** in --json)


class QueryError(UsageError):
    """A search the user typed cannot be run; the message says why (the user's input was at fault: exit 2)."""


class NotFound(CxError):
    """What the user named (a session, a key) is not in the cache."""


@dataclass(frozen=True)
class Hit:
    session: str
    root_session: str
    project: str | None
    role: str
    occurred_at: str | None
    snippet: str
    rank: float
    key: str
    agent_id: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_REL = re.compile(r"^(\d+)\s*([smhdw])$")
MAX_PROJECT_CHARS = 4_096  # longer than any path: a longer --project is refused before SQLite sees it


def check_project(project: str | None) -> None:
    """A ``--project`` too long to be a path is the user's mistake, said as such (never blamed on the search
    text; SQLite would refuse the LIKE pattern as "too complex")."""
    if project is not None and len(project) > MAX_PROJECT_CHARS:
        raise QueryError(f"--project is too long ({len(project):,} characters; the limit is {MAX_PROJECT_CHARS:,})",
                         "give the project's path, or its last path component")


def parse_since(when: str, now: datetime | None = None) -> str:
    """'2h', '3d', '1w' (relative) or an ISO date/time → an ISO UTC timestamp comparable with occurred_at."""
    now = now or datetime.now(timezone.utc)
    m = _REL.match(when.strip())
    if m:
        n, unit = int(m.group(1)), m.group(2)
        try:
            delta = {"s": timedelta(seconds=n), "m": timedelta(minutes=n), "h": timedelta(hours=n),
                     "d": timedelta(days=n), "w": timedelta(weeks=n)}[unit]
            t = now - delta
        except OverflowError:
            raise QueryError(f"--since {when.strip()!r} is further back than any date",
                             "use a relative age like 2h, 3d, 1w or a date like 2026-11-01") from None
    else:
        try:
            t = datetime.fromisoformat(when.strip().replace("Z", "+00:00"))
        except ValueError:
            raise QueryError(f"cannot understand --since {when!r}",
                             "use a relative age like 2h, 3d, 1w or a date like 2026-11-01") from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def plain_to_fts(text: str) -> str:
    """Plain words → an FTS5 query where every word must occur, each quoted (no operator injection)."""
    import apsw.fts5query  # imports apsw.ext (~100 ms): only when a search runs, never for `cxsync status`

    words = [w for w in re.split(r"\s+", text.strip()) if w]
    if not words:
        raise QueryError("empty search", "give some words to look for")
    return " ".join(apsw.fts5query.quote(w) for w in words)


class Queries:
    conn: apsw.Connection

    def search(self, text: str, *, limit: int = 10, project: str | None = None, session: str | None = None,
               role: str | None = None, since: str | None = None, fts: bool = False) -> list[Hit]:
        check_project(project)
        from cxsync.cache.querytext import to_fts  # plain words vs raw FTS5, and the query bounds

        query = to_fts(text, fts=fts)
        if not query:
            raise QueryError("empty search", "give some words to look for")
        where = ["messages_fts MATCH :q"]
        params: dict[str, Any] = {"q": query, "limit": max(1, int(limit))}
        if project:
            where.append("(m.project = :project OR m.project LIKE :project_like)")
            params["project"] = project
            params["project_like"] = "%/" + project.strip("/")
        if session:
            sid = self.resolve_session(session)
            where.append("(m.root_session = :sid OR m.session_id = :sid)")
            params["sid"] = sid
        if role:
            where.append("m.role = :role")
            params["role"] = role
        if since:
            where.append("m.occurred_at >= :since")
            params["since"] = parse_since(since)
        sql = (
            "SELECT m.session_id, m.root_session, m.project, m.role, m.occurred_at,"
            f" snippet(messages_fts, 0, '{HL_OPEN}', '{HL_CLOSE}', '…', 16), bm25(messages_fts), m.key, m.agent_id"
            " FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid"
            f" WHERE {' AND '.join(where)} ORDER BY bm25(messages_fts) LIMIT :limit"
        )
        try:
            return [Hit(*row) for row in self.conn.execute(sql, params)]
        except apsw.SQLError as exc:
            msg = str(exc).replace("SQLError: ", "")
            raise QueryError(f"bad full-text query {text!r}: {msg}",
                             "drop --fts to search plain words, or see the FTS5 query syntax") from None

    def resolve_session(self, session: str) -> str:
        """A full session id, or an unambiguous prefix of one."""
        row = self.conn.execute("SELECT session_id FROM sessions WHERE session_id=?", (session,)).fetchone()
        if row:
            return str(row[0])
        rows = self.conn.execute("SELECT session_id FROM sessions WHERE session_id >= ? AND session_id < ?"
                                 " AND parent_session IS NULL AND session_id NOT LIKE '%:%' LIMIT 2",
                                 (session, session + "\uffff")).fetchall()
        if len(rows) == 1:
            return str(rows[0][0])
        if not rows:
            raise NotFound(f"no session {session!r} in the cache", "list them with `cxsync sessions`")
        raise QueryError(f"session prefix {session!r} is ambiguous", "give more characters of the id")

    def sessions(self, *, limit: int | None = None, project: str | None = None,
                 include_subagents: bool = False) -> list[dict[str, Any]]:
        check_project(project)
        where = [] if include_subagents else ["s.session_id = s.root_session"]
        params: dict[str, Any] = {}
        if project:
            where.append("(s.project = :p OR s.project LIKE :pl)")
            params.update(p=project, pl="%/" + project.strip("/"))
        sql = (
            "SELECT s.session_id, s.project, s.branch, s.title, s.first_prompt, s.first_at, s.last_at,"
            " s.message_count, s.models, s.input_tokens, s.output_tokens, s.cache_read_tokens,"
            " s.cache_creation_tokens, s.machine, s.user_id, s.ended_at, s.parent_session, s.agent_id,"
            " (SELECT count(*) FROM sessions c WHERE c.root_session = s.session_id AND c.session_id != s.session_id),"
            " (SELECT coalesce(sum(c.message_count),0) FROM sessions c WHERE c.root_session = s.session_id"
            "   AND c.session_id != s.session_id)"
            " FROM sessions s" + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY coalesce(s.last_at, s.first_at, '') DESC, s.session_id"
            + (" LIMIT :limit" if limit else "")
        )
        if limit:
            params["limit"] = limit
        import orjson

        out = []
        for r in self.conn.execute(sql, params):
            out.append({
                "session": r[0], "project": r[1], "branch": r[2], "title": r[3], "first_prompt": r[4],
                "first_at": r[5], "last_at": r[6], "messages": r[7], "models": orjson.loads(r[8]),
                "tokens": {"input": r[9], "output": r[10], "cache_read": r[11], "cache_creation": r[12]},
                "machine": r[13], "user": r[14], "ended_at": r[15], "parent_session": r[16], "agent_id": r[17],
                "subagents": r[18], "subagent_messages": r[19],
            })
        return out

    def show(self, session: str, *, include_subagents: bool = False) -> dict[str, Any]:
        sid = self.resolve_session(session)
        info = next((s for s in self.sessions(include_subagents=True) if s["session"] == sid), None)
        cond = "root_session = ?" if include_subagents else "session_id = ?"
        msgs = [
            {"key": k, "role": role, "occurred_at": at, "content": content, "model": model,
             "session": s, "agent_id": a, "is_meta": bool(meta), "source_line": line}
            for k, role, at, content, model, s, a, meta, line in self.conn.execute(
                "SELECT key, role, occurred_at, content, model, session_id, agent_id, is_meta, source_line"
                f" FROM messages WHERE {cond} ORDER BY coalesce(occurred_at, ''), source_line, id", (sid,))
        ]
        return {"session": info, "messages": msgs}

    def counts(self) -> dict[str, int]:
        def one(sql: str) -> int:
            return int(scalar(self.conn, sql))

        return {
            "messages": one("SELECT value FROM counters WHERE name='messages'"),
            "sessions": one("SELECT count(*) FROM sessions WHERE session_id = root_session"),
            "subagent_sessions": one("SELECT count(*) FROM sessions WHERE session_id != root_session"),
            "records": one("SELECT count(*) FROM records"),
            "events": one("SELECT count(*) FROM events"),
            "files": one("SELECT count(*) FROM files WHERE status='active'"),
        }
