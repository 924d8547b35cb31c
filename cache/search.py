"""Read-side queries: full-text search (the seed's /cxq), session listings, a conversation in order."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import apsw

from cxsync.cache.db import one_row, scalar
from cxsync.cache.fts import id_floor as fts_id_floor
from cxsync.sync.errors import CxError, UsageError

from cxsync.cache.fts import HL_CLOSE as HL_CLOSE, HL_OPEN as HL_OPEN  # the CLI imports the markers from here


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
    words = _words(text)
    if not words:
        raise QueryError("empty search", "give some words to look for")
    return " ".join(_quote(w) for w in words)


# Search cost is bounded by design. Message ids are time-ordered, so FTS5 walks a query's matches newest first and
# stops. Each word's number of matches is estimated first from its newest matches (never by counting them all).
# When every word is rarer than BM25_DF, FTS5's own bm25 ranks up to CANDIDATES matches (all of them, usually);
# otherwise the query has a frequent word: bm25 would count every match of it just to weigh it, so cx_rank (bm25
# with the estimated weights) ranks the FREQUENT_CANDIDATES most recent matches. Filters FTS5 cannot apply
# (project, role) are checked on at most WALK matches before the search settles for what it found and, only if
# that is less than asked for, carries on into older matches just until it has enough. --since and --session
# are id ranges, searched directly.
CANDIDATES = 1000
FREQUENT_CANDIDATES = 300
PHRASE_AMONG = 200  # the exact phrase is checked among the words' matches when they are all known and this few
COMMON_SHARE = 0.05  # a part of a code word held by more of the messages than this is trimmed from its ends
COMMON_MIN = 5_000  # ... and by more messages than this (a small cache trims nothing)
BM25_DF = 20_000
WALK = 1000
_IDS_END = 1 << 62
_LEGACY_IDS = 1 << 36  # below: ids of rows kept by the "search at scale" migration (not time-ordered)
_HIT_COLS = "id, session_id, root_session, key, project, role, occurred_at, agent_id, event_id"


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"\s+", text.strip()) if w]


def _idf(df: float, total: int) -> float:
    """bm25's inverse document frequency."""
    import math

    return math.log((total - df + 0.5) / (df + 0.5) + 1)


def _quote(text: str) -> str:
    """One FTS5 string: words, never operators (a bare AND, OR, NOT or NEAR would be one)."""
    from cxsync.cache.querytext import quote

    return quote(text)


class Queries:
    conn: apsw.Connection

    def _match(self, text: str, fts: bool) -> tuple[str, list[str], str | None, list[int]]:
        """What to run for what the user typed: the FTS5 query of all its words, the words (each weighed by
        its rarity), and, for several plain words, the exact phrase (its hits come first). The one place query
        text is interpreted (``cxsync.cache.querytext``: plain words vs raw FTS5, and the query bounds)."""
        from cxsync.cache import querytext

        if fts:
            return querytext.to_fts(text, fts=True), [], None, []
        querytext.plain_to_fts(text)  # the checks: empty, too long, too many words
        words, ends, steps = self._trim_common(querytext.plain_words(text))
        everything = " ".join(querytext.quote(w) for w in words)
        return everything, words, (querytext.quote(" ".join(ends)) if len(ends) > 1 else None), steps

    def _trim_common(self, words: list[str]) -> tuple[list[str], list[str], list[int]]:
        """Code words without the parts at their ends that most messages hold (``src`` and ``py`` of
        ``src/auth/token_store.py``): each word as matched, and the words of the exact phrase (only its first word's
        start and its last word's end trimmed, so the phrase still means the words side by side).

        Such a part carries no information (bm25 weighs it near zero) but costs the most: FTS5 seeks its long
        list of matches for every message the rarer parts propose, ten times the cost of the rest of the search.
        The rarer middle still finds every message holding the whole word.

        Also the steps of the phrase: how many tokens after one matched word the next one starts, when the words
        are side by side (``fts.adjacent``)."""
        from cxsync.cache.fts import snipper

        total = self._total()
        trim = total > COMMON_MIN and len(words) > 0
        common_df = max(COMMON_MIN, COMMON_SHARE * total)
        seen: dict[str, bool] = {}

        def common(part: str) -> bool:
            if part not in seen:
                seen[part] = self._document_frequencies([part])[0] > common_df
            return seen[part]

        matched, starts, ends = [], [], []
        shape = []  # per word: tokens trimmed at its start, kept, trimmed at its end
        for w in words:
            raw = w.encode("utf-8", "surrogatepass")
            spans = [(a, b) for a, b, _ in snipper().tokens(w, query=True)]
            keep = [i for i, (a, b) in enumerate(spans) if not common(raw[a:b].decode("utf-8", "surrogatepass"))] \
                if trim and len(spans) > 1 else []
            if not keep:
                matched.append(w)
                starts.append(w)
                ends.append(w)
                shape.append((0, len(spans), 0))
                continue
            lo, hi = spans[keep[0]][0], spans[keep[-1]][1]
            matched.append(raw[lo:hi].decode("utf-8", "surrogatepass"))
            starts.append(raw[lo:].decode("utf-8", "surrogatepass"))
            ends.append(raw[:hi].decode("utf-8", "surrogatepass"))
            shape.append((keep[0], keep[-1] + 1 - keep[0], len(spans) - 1 - keep[-1]))
        phrase = [starts[0], *words[1:-1], ends[-1]] if len(words) > 1 else words
        steps = [kept + after + shape[i + 1][0] for i, (_, kept, after) in enumerate(shape[:-1])]
        return matched, phrase, steps

    def search(self, text: str, *, limit: int = 10, project: str | None = None, session: str | None = None,
               role: str | None = None, since: str | None = None, fts: bool = False) -> list[Hit]:
        check_project(project)
        query, words, phrase, steps = self._match(text, fts)
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
            span = one_row(self.conn,  # a session's messages sit in one id range: search only that
                           "SELECT min(id), max(id) FROM messages WHERE root_session ="
                           " (SELECT root_session FROM sessions WHERE session_id = ?)", (sid,))
            if span is None or span[0] is None:
                return []
            lo, hi = span
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
        try:
            dfs = self._document_frequencies(words)
            weights = [_idf(df, self._total()) for df in dfs]
            # The exact phrase is always ranked by cx_rank: FTS5's bm25 would first find every occurrence of the
            # phrase in the whole index (positions compared across both words' matches) just to weigh it.
            ranks = [f"cx_rank(messages_fts, {float(sum(weights))!r})"]
            if fts or any(df > BM25_DF for df in dfs):
                k = max(FREQUENT_CANDIDATES, limit)
                ranks.append("cx_rank(messages_fts" + "".join(f", {w!r}" for w in weights) + ")")
            else:
                k = max(CANDIDATES, limit)
                ranks.append("bm25(messages_fts, 1.0, 0.5)")
            found: dict[int, tuple[int, float]] = {}
            hits, every = self._candidates(query, ranks[1], ranges, where, params, k, limit)
            if phrase:
                # The phrase's matches are among the words' matches: when those are all here and few, the phrase is
                # checked on them alone (a phrase of common words walks long lists of matches to find its own).
                if every and len(hits) <= PHRASE_AMONG:
                    adjacent = "cx_adjacent(messages_fts" + "".join(f", {int(s)}" for s in steps) + ")"
                    side_by_side, _ = self._candidates(query, adjacent, ranges, where, params, k, limit)
                    scores = dict(hits)
                    exact = [(rowid, scores[rowid]) for rowid, yes in side_by_side if yes and rowid in scores]
                else:
                    exact, _ = self._candidates(phrase, ranks[0], ranges, where, params,
                                                max(FREQUENT_CANDIDATES, limit), limit)
                found.update((rowid, (0, score)) for rowid, score in exact)
            for rowid, score in hits:
                found.setdefault(rowid, (int(bool(phrase)), score))
        except apsw.SQLError as exc:
            msg = str(exc).replace("SQLError: ", "")
            raise QueryError(f"bad full-text query {text!r}: {msg}",
                             "drop --fts to search plain words, or see the FTS5 query syntax") from None
        if not found:
            return []
        # Exact phrase first, then the score (lower is better), then a stable key: identical caches answer
        # identically. Keys are read for the best hits and whatever ties with the last of them.
        order = sorted(found.items(), key=lambda kv: kv[1])
        cut = order[min(limit, len(order)) - 1][1]
        chosen = [rowid for rowid, rank in order if rank <= cut]
        rows = {r[0]: r for i in range(0, len(chosen), 500) for r in self.conn.execute(
            f"SELECT {_HIT_COLS} FROM messages WHERE id IN ({','.join('?' * len(chosen[i:i + 500]))})",
            chosen[i:i + 500])}
        best = sorted((found[rowid] + (rows[rowid][3],), rows[rowid]) for rowid in chosen if rowid in rows)[:limit]
        return self._hits([(score, row) for (_, score, _), row in best], query if fts else text)

    def _total(self) -> int:
        return int(scalar(self.conn, "SELECT value FROM counters WHERE name='messages'")) or 1

    def _document_frequencies(self, words: list[str]) -> list[float]:
        """How many messages hold each word, from its newest matches: counted when at most CANDIDATES, else
        estimated from the time they span (ids are seconds): CANDIDATES × (all ids' span / their span).
        Counting the messages in that span instead costs a walk over them (166,000 for a word in one message
        of 170, at a million messages): more than the whole search may take."""
        out = []
        span: tuple[Any, ...] | None = None
        for w in words:
            rows = self.conn.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?"
                                     " ORDER BY rowid DESC LIMIT ?", (_quote(w), CANDIDATES)).fetchall()
            df = float(len(rows))
            if len(rows) == CANDIDATES:
                if span is None:  # two queries: min and max together in one would scan every row
                    span = (scalar(self.conn, "SELECT min(id) FROM messages WHERE id >= ?", (_LEGACY_IDS,)),
                            scalar(self.conn, "SELECT max(id) FROM messages"))
                total = self._total()
                lo, hi = span if span and span[0] is not None else (0, 0)
                kth = rows[-1][0]
                df = float(total) if kth <= lo else min(total, CANDIDATES * (hi - lo) / max(1, hi - kth))
            out.append(df)
        return out

    def _candidates(self, q: str, rank: str, ranges: list[tuple[int, int]], where: list[str],
                    params: dict[str, Any], k: int, limit: int) -> tuple[list[tuple[int, float]], bool]:
        """(rowid, score) of matches of ``q``, newest first: up to ``k`` of them, all within the newest WALK
        matches when filters apply (and then just enough older ones to fill ``limit``); and whether that is
        every match (with the filters)."""
        if where:
            sql = (f"SELECT f.rowid, {rank} FROM messages_fts f JOIN messages m ON m.id = f.rowid"
                   " WHERE messages_fts MATCH :q AND f.rowid BETWEEN :lo AND :hi"
                   + "".join(f" AND {w}" for w in where) + " ORDER BY f.rowid DESC LIMIT :k")
        else:
            sql = (f"SELECT rowid, {rank} FROM messages_fts WHERE messages_fts MATCH :q"
                   " AND rowid BETWEEN :lo AND :hi ORDER BY rowid DESC LIMIT :k")
        out: list[tuple[int, float]] = []
        every = True

        def run(**bounds: int) -> list[tuple[int, float]]:
            return cast(list[tuple[int, float]], self.conn.execute(sql, {**params, "q": q, **bounds}).fetchall())

        for lo, hi in ranges:
            if where:
                walked = self.conn.execute(
                    "SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? AND rowid BETWEEN ? AND ?"
                    " ORDER BY rowid DESC LIMIT 1 OFFSET ?", (q, lo, hi, WALK - 1)).fetchone()
                if walked is not None:  # more matches than the walk: the newest WALK, then only what is missing
                    every = False
                    out += run(lo=walked[0], hi=hi, k=k - len(out))
                    if len(out) >= limit:
                        break
                    out += run(lo=lo, hi=walked[0] - 1, k=limit - len(out))
                    if len(out) >= limit:
                        break
                    continue
            got = run(lo=lo, hi=hi, k=k - len(out))
            every = every and len(got) < k - len(out)
            out += got
            if len(out) >= k:
                every = False
                break
        return out, every

    def _hits(self, rows: list[tuple[float, tuple[Any, ...]]], text: str) -> list[Hit]:
        from cxsync.cache.fts import query_words, snipper, texts_of

        if not rows:
            return []
        cut = snipper()
        terms = cut.terms(list(query_words(text)))
        texts = texts_of(self.conn, [r[8] for _, r in rows])
        return [Hit(session=r[1], root_session=r[2], project=r[4], role=r[5], occurred_at=r[6],
                    snippet=cut.snippet(texts.get(r[8], ""), terms), rank=score, key=r[3], agent_id=r[7])
                for score, r in rows]

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
        from cxsync.cache.fts import texts_of

        rows: list[tuple[Any, ...]] = self.conn.execute(
            "SELECT key, role, occurred_at, event_id, model, session_id, agent_id, is_meta, source_line"
            f" FROM messages WHERE {cond} ORDER BY coalesce(occurred_at, ''), source_line, key", (sid,)).fetchall()
        texts = texts_of(self.conn, [str(r[3]) for r in rows])
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
