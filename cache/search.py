"""Read-side queries: full-text search (the seed's /cxq), session listings, a conversation in order."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import apsw

from cxsync.cache.db import scalar
from cxsync.cache.fts import id_floor as fts_id_floor
from cxsync.sync.errors import CxError, UsageError

from cxsync.cache.fts import HL_CLOSE, HL_OPEN  # noqa: F401  (snippet markers: the CLI imports them from here)


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


def parse_since(when: str, now: datetime | None = None) -> str:
    """'2h', '3d', '1w' (relative) or an ISO date/time → an ISO UTC timestamp comparable with occurred_at."""
    now = now or datetime.now(timezone.utc)
    m = _REL.match(when.strip())
    if m:
        n, unit = int(m.group(1)), m.group(2)
        delta = {"s": timedelta(seconds=n), "m": timedelta(minutes=n), "h": timedelta(hours=n),
                 "d": timedelta(days=n), "w": timedelta(weeks=n)}[unit]
        t = now - delta
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


# Search cost is bounded by design: FTS5 walks a query's matches newest first (rowids are time-ordered) and stops
# after CANDIDATES of them; only those are scored. A query whose matches are fewer is ranked exactly over all of
# them; one that matches more (frequent words) is ranked among its most recent CANDIDATES matches.
CANDIDATES = 1000
_IDS_END = 1 << 62
_LEGACY_IDS = 1 << 36  # below: ids of rows migrated from a cache older than time-ordered ids (see schema 3)
_WEIGHTS = "1.0, 0.5"  # bm25 weights of the columns: the text, the parts of its CamelCase identifiers


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"\s+", text.strip()) if w]


class Queries:
    conn: apsw.Connection
    _snipper: Any = None

    def _match(self, text: str, fts: bool) -> tuple[list[str], str | None]:
        """The FTS5 queries to run for what the user typed: the match of all words and, for several plain words,
        the exact phrase (its hits come first). The one place query text is interpreted."""
        if fts:
            query = text.strip()
            if not query:
                raise QueryError("empty search", "give some words to look for")
            return [query], None
        words = _words(text)
        everything = plain_to_fts(text)
        if len(words) < 2:
            return [everything], None
        import apsw.fts5query

        return [everything], apsw.fts5query.quote(" ".join(words))

    def search(self, text: str, *, limit: int = 10, project: str | None = None, session: str | None = None,
               role: str | None = None, since: str | None = None, fts: bool = False) -> list[Hit]:
        (query,), phrase = self._match(text, fts)
        limit = max(1, int(limit))
        where: list[str] = []
        params: dict[str, Any] = {}
        ranges = [(0, _IDS_END)]
        if project:
            where.append("(m.project = :project OR m.project LIKE :project_like)")
            params["project"] = project
            params["project_like"] = "%/" + project.strip("/")
        if session:
            sid = self.resolve_session(session)
            where.append("(m.root_session = :sid OR m.session_id = :sid)")
            params["sid"] = sid
            lo, hi = self.conn.execute(  # a session's messages sit in one id range: search only that
                "SELECT min(id), max(id) FROM messages WHERE root_session ="
                " (SELECT root_session FROM sessions WHERE session_id = ?)", (sid,)).fetchone()
            if lo is None:
                return []
            ranges = [(lo, hi)]
        if role:
            where.append("m.role = :role")
            params["role"] = role
        if since:
            params["since"] = parse_since(since)
            where.append("m.occurred_at >= :since")
            floor = fts_id_floor(params["since"])
            ranges = [(max(lo, floor), hi) for lo, hi in ranges if hi >= floor] + \
                [(lo, min(hi, _LEGACY_IDS)) for lo, hi in ranges if lo < _LEGACY_IDS]
        k = max(CANDIDATES, limit)
        try:
            found: dict[str, tuple[int, float, str, tuple[Any, ...]]] = {}
            for tier, q in enumerate([phrase, query] if phrase else [query]):
                for row in self._candidates(q, ranges, where, params, k):
                    if row[4] not in found:
                        found[row[4]] = (tier, row[1], row[4], row)
        except apsw.SQLError as exc:
            msg = str(exc).replace("SQLError: ", "")
            raise QueryError(f"bad full-text query {text!r}: {msg}",
                             "drop --fts to search plain words, or see the FTS5 query syntax") from None
        # Exact phrase first, then bm25 (lower is better), then a stable key: identical caches answer identically.
        best = sorted(found.values(), key=lambda f: f[:3])[:limit]
        return self._hits([f[3] for f in best], query if fts else text)

    def _candidates(self, q: str, ranges: list[tuple[int, int]], where: list[str], params: dict[str, Any],
                    k: int) -> list[tuple[Any, ...]]:
        """Up to ``k`` matches of ``q``, newest first, with their bm25 score and what a hit shows."""
        sql = (
            f"SELECT f.rowid, bm25(messages_fts, {_WEIGHTS}), m.session_id, m.root_session, m.key, m.project,"
            " m.role, m.occurred_at, m.agent_id, m.event_id"
            " FROM messages_fts f JOIN messages m ON m.id = f.rowid"
            " WHERE messages_fts MATCH :q AND f.rowid BETWEEN :lo AND :hi"
            + "".join(f" AND {w}" for w in where) + " ORDER BY f.rowid DESC LIMIT :k")
        out: list[tuple[Any, ...]] = []
        for lo, hi in ranges:
            out += self.conn.execute(sql, {**params, "q": q, "lo": lo, "hi": hi, "k": k - len(out)}).fetchall()
            if len(out) >= k:
                break
        return out

    def _hits(self, rows: list[tuple[Any, ...]], text: str) -> list[Hit]:
        from cxsync.cache.fts import Snipper, query_words, texts_of

        if not rows:
            return []
        if self._snipper is None:
            self._snipper = Snipper(self.conn)
        terms = self._snipper.terms(list(query_words(text)))
        texts = texts_of(self.conn, [r[9] for r in rows])
        return [Hit(session=r[2], root_session=r[3], project=r[5], role=r[6], occurred_at=r[7],
                    snippet=self._snipper.snippet(texts.get(r[9], ""), terms), rank=r[1], key=r[4], agent_id=r[8])
                for r in rows]

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
        from cxsync.cache.fts import texts_of

        rows = self.conn.execute(
            "SELECT key, role, occurred_at, event_id, model, session_id, agent_id, is_meta, source_line"
            f" FROM messages WHERE {cond} ORDER BY coalesce(occurred_at, ''), source_line, key", (sid,)).fetchall()
        texts = texts_of(self.conn, [r[3] for r in rows])
        msgs = [
            {"key": k, "role": role, "occurred_at": at, "content": texts.get(eid, ""), "model": model,
             "session": s, "agent_id": a, "is_meta": bool(meta), "source_line": line}
            for k, role, at, eid, model, s, a, meta, line in rows
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
