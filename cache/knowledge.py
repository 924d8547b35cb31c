"""Read side of knowledge: what a person may see, one item with its sources, and what extraction needs.

Visible to a user: their own items (shared or not), and the items others shared with a scope they receive, while
the latest act on that share is a share (an ``unshare`` hides it in every cache that has seen it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import apsw
import orjson

from cxsync.cache.search import NotFound
from cxsync.sync.errors import UsageError

SCOPES = ("all", "mine", "shared", "team", "project")


@dataclass(frozen=True)
class KnowledgeItem:
    id: str
    type: str
    title: str
    user: str
    session: str | None
    project: str | None
    occurred_at: str | None
    shares: list[dict[str, str]]  # active shares: {"scope": "team"} / {"scope": "project", "project": "web"}
    data: dict[str, Any]
    sources: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "title": self.title, "user": self.user, "session": self.session,
                "project": self.project, "occurred_at": self.occurred_at, "shares": self.shares,
                "sources": self.sources, "data": self.data}


_SELECT = ("SELECT k.knowledge_id, k.knowledge_type, coalesce(k.title, ''), coalesce(k.user_id, ''), k.session_id,"
           " k.project, coalesce(k.occurred_at, k.created_at), k.extracted_data, k.source_hashes,"
           " (SELECT json_group_array(json_object('scope', s.scope, 'project', s.project)) FROM knowledge_shares s"
           "  WHERE s.knowledge_id = k.knowledge_id AND s.shared = 1) FROM knowledge k")


def _item(row: Sequence[Any]) -> KnowledgeItem:
    kid, ktype, title, user, session, project, at, data, sources, shares = row
    active = [{"scope": s["scope"], **({"project": s["project"]} if s["project"] else {})}
              for s in orjson.loads(shares or "[]")]
    return KnowledgeItem(kid, ktype or "", title, user, session, project, at, active, orjson.loads(data or "{}"),
                         orjson.loads(sources or "[]"))


def list_items(conn: apsw.Connection, me: str, *, type: str | None = None, project: str | None = None,
               scope: str = "all", limit: int = 50) -> list[KnowledgeItem]:
    if scope not in SCOPES:
        raise UsageError(f"unknown scope {scope!r}", f"use one of {', '.join(SCOPES)}")
    where = ["(k.user_id = :me OR EXISTS (SELECT 1 FROM knowledge_shares s WHERE s.knowledge_id = k.knowledge_id"
             " AND s.shared = 1))"]
    if scope == "mine":
        where.append("k.user_id = :me")
    elif scope in ("shared", "team", "project"):
        where.append("EXISTS (SELECT 1 FROM knowledge_shares s WHERE s.knowledge_id = k.knowledge_id AND s.shared = 1"
                     + ("" if scope == "shared" else " AND s.scope = :scope") + ")")
    if type:
        where.append("k.knowledge_type = :type")
    if project:
        where.append("(k.project LIKE '%' || :project || '%' OR EXISTS (SELECT 1 FROM knowledge_shares s WHERE"
                     " s.knowledge_id = k.knowledge_id AND s.shared = 1 AND s.project = :project))")
    sql = (f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY coalesce(k.occurred_at, k.created_at) DESC,"
           " k.knowledge_id LIMIT :limit")
    return [_item(r) for r in conn.execute(sql, {"me": me, "type": type, "project": project, "scope": scope,
                                                  "limit": limit})]


def get_item(conn: apsw.Connection, me: str, prefix: str) -> KnowledgeItem:
    rows = [r for r in conn.execute(f"{_SELECT} WHERE k.knowledge_id >= ? AND k.knowledge_id < ? LIMIT 2",
                                    (prefix, prefix + "\U0010ffff"))]
    items = [i for i in map(_item, rows) if i.user == me or i.shares]
    if not items:
        raise NotFound(f"no knowledge item {prefix!r}", "`cxsync knowledge` lists them")
    if len(items) > 1:
        raise UsageError(f"knowledge id prefix {prefix!r} is ambiguous", "give more characters of the id")
    return items[0]


def source_messages(conn: apsw.Connection, hashes: Iterable[str]) -> list[dict[str, Any]]:
    """The messages an item came from (those this cache holds), in conversation order."""
    hashes = list(hashes)
    if not hashes:
        return []
    q = ("SELECT hash, role, session_id, occurred_at, cx_text(event_id) FROM messages WHERE hash IN (%s)"
         " ORDER BY occurred_at, id" % ",".join("?" * len(hashes)))
    return [{"hash": h, "role": r, "session": s, "occurred_at": at, "content": c} for h, r, s, at, c in
            conn.execute(q, hashes)]


def item_ids(conn: apsw.Connection, ids: Sequence[str]) -> set[str]:
    out: set[str] = set()
    for i in range(0, len(ids), 900):
        chunk = list(ids[i:i + 900])
        out.update(r[0] for r in conn.execute(
            "SELECT knowledge_id FROM knowledge WHERE knowledge_id IN (%s)" % ",".join("?" * len(chunk)), chunk))
    return out


def session_item_ids(conn: apsw.Connection, me: str, session_prefix: str) -> list[str]:
    """The ids of this user's items from the one session ``session_prefix`` names (a prefix of two is an error)."""
    rows = conn.execute("SELECT session_id, knowledge_id FROM knowledge WHERE user_id = ? AND session_id >= ?"
                        " AND session_id < ? ORDER BY knowledge_id",
                        (me, session_prefix, session_prefix + "\U0010ffff")).fetchall()
    if len({s for s, _ in rows}) > 1:
        raise UsageError(f"session prefix {session_prefix!r} is ambiguous", "give more characters of the id")
    return [str(k) for _, k in rows]
