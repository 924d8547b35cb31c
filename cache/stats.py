"""What a large history holds: messages, sessions, projects, tokens by model and by month, the cache's size and
what takes the space. Read-only; one pass over the messages, the rest from the small tables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import apsw

# Tables and indexes grouped by what they hold, for "what takes the space".
_PARTS = {
    "events": "stored events (transcript records, compressed; the source of rebuild and sync)",
    "messages": "message rows (metadata; the text lives in the stored events)",
    "messages_fts": "full-text index",
    "records": "non-conversational record keys",
    "outbox": "outbox",
    "sessions": "sessions",
    "dictionaries": "compression dictionaries of the stored events",
}


def _part(name: str) -> str:
    if name.startswith("messages_fts"):
        return "messages_fts"
    for prefix in ("sqlite_autoindex_", ""):
        base = name[len(prefix):] if name.startswith(prefix) else name
        for part in _PARTS:
            if base == part or base.startswith(part + "_"):
                return part
    return "other"


def space(conn: apsw.Connection) -> dict[str, int]:
    """Bytes on disk by part of the cache (the dbstat virtual table: every page is counted once)."""
    out: dict[str, int] = {}
    for name, size in conn.execute("SELECT name, sum(pgsize) FROM dbstat WHERE aggregate=1 GROUP BY name"):
        part = _part(str(name))
        out[part] = out.get(part, 0) + int(size)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _file_bytes(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal"):
        try:
            total += os.stat(str(path) + suffix).st_size
        except OSError:
            pass
    return total


def collect(conn: apsw.Connection, path: Path, *, top: int = 10) -> dict[str, Any]:
    tokens_by_model: dict[str, dict[str, int]] = {}
    tokens_by_month: dict[str, dict[str, int]] = {}
    messages = 0
    by_role: dict[str, int] = {}
    for model, month, role, n, tin, tout, tcr, tcc in conn.execute(
            "SELECT model, substr(occurred_at, 1, 7), role, count(*), sum(input_tokens), sum(output_tokens),"
            " sum(cache_read_tokens), sum(cache_creation_tokens) FROM messages GROUP BY 1, 2, 3"):
        messages += n
        by_role[role] = by_role.get(role, 0) + n
        t = {"input": tin, "output": tout, "cache_read": tcr, "cache_creation": tcc}
        if not any(t.values()):
            continue
        for table, k in ((tokens_by_model, model or "(none)"), (tokens_by_month, month or "(unknown)")):
            acc = table.setdefault(k, {"input": 0, "output": 0, "cache_read": 0, "cache_creation": 0})
            for name, v in t.items():
                acc[name] += v
    sessions, subagents, first, last = conn.execute(
        "SELECT sum(session_id = root_session), sum(session_id != root_session), min(first_at), max(last_at)"
        " FROM sessions").fetchone() or (0, 0, None, None)
    projects = [
        {"project": p, "sessions": s, "messages": m, "tokens": t, "last_at": la}
        for p, s, m, t, la in conn.execute(
            "SELECT project, sum(session_id = root_session), sum(message_count),"
            " sum(input_tokens + output_tokens + cache_read_tokens + cache_creation_tokens), max(last_at)"
            " FROM sessions WHERE project IS NOT NULL GROUP BY project ORDER BY 3 DESC, 1")
    ]
    parts = space(conn)
    return {
        "messages": messages,
        "messages_by_role": dict(sorted(by_role.items())),
        "sessions": sessions or 0,
        "subagent_sessions": subagents or 0,
        "projects": len(projects),
        "first_at": first,
        "last_at": last,
        "tokens_by_model": dict(sorted(tokens_by_model.items(), key=lambda kv: -sum(kv[1].values()))),
        "tokens_by_month": dict(sorted(tokens_by_month.items())),
        "top_projects": projects[:top],
        "cache": {"path": str(path), "bytes": _file_bytes(path), "by_part": parts,
                  "parts": {k: _PARTS.get(k, "other tables and indexes") for k in parts}},
    }
