"""``cxsync migrate``: the legacy ``context.db`` brought in as events, the seed's cut-over of existing data.

Every legacy message becomes a ``MessageIndexed`` event (and every knowledge row a ``KnowledgeExtracted``) applied
through ``cache.apply`` like anything captured — so it is searchable at once, outboxed to the user's own stream and
replayed by ``rebuild``.  Identity is the seed's content hash: a legacy message whose content the transcripts
already gave, or that an earlier run already brought in, is counted and skipped.  Event ids are deterministic, so
a run killed midway and started again ends exactly where an uninterrupted run ends, and a second run adds nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import orjson

from cxsync.agent.transcript import metadata
from cxsync.cache.legacy import LegacyDb, LegacyKnowledge, LegacyMessage, Refused
from cxsync.sync import events as ev

BATCH = 500
LEGACY_KEY = "legacy:"
SOURCE_TYPE = "legacy-context-db"
_UUID_STEM = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

Progress = Callable[[int, int], None]


@dataclass
class Counts:
    total: int = 0
    new: int = 0
    already_present: int = 0  # the transcripts gave the same content
    already_migrated: int = 0  # an earlier migrate run brought it in
    duplicates: int = 0  # the same content earlier in the legacy database itself
    refused: int = 0


@dataclass
class Report:
    source: str
    dry_run: bool
    messages: Counts = field(default_factory=Counts)
    knowledge: Counts = field(default_factory=Counts)
    refused: list[dict[str, Any]] = field(default_factory=list)
    warnings: dict[str, list[Any]] = field(default_factory=dict)

    def refuse(self, r: Refused) -> None:
        (self.messages if r.table == "messages" else self.knowledge).refused += 1
        self.refused.append({"table": r.table, "id": r.row_id, "reason": r.reason})

    def warn(self, table: str, row_id: int, warnings: Iterable[str]) -> None:
        for w in warnings:
            self.warnings.setdefault(f"{table}: {w}", []).append(row_id)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "dry_run": self.dry_run, "messages": vars(self.messages),
                "knowledge": vars(self.knowledge), "refused": self.refused, "warnings": self.warnings}


def session_of(source_file: str | None) -> str:
    """The session a legacy message belongs to: the transcript's own session id when its source file is named
    by one (``…/<uuid>.jsonl``), else one stable pseudo-session per source file."""
    if source_file:
        stem = Path(source_file.replace("\\", "/")).stem
        if _UUID_STEM.match(stem):
            return stem.lower()
    digest = hashlib.sha256((source_file or "").encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"legacy-{digest}"


def message_event(ident: ev.Identity, m: LegacyMessage, indexed_at: str) -> ev.ContextEvent:
    session = session_of(m.source_file)
    return ev.message_indexed(ident, {
        "key": LEGACY_KEY + m.hash,
        "hash": m.hash,
        "content": m.content,
        "role": m.role,
        "session": session,
        "root_session": session,
        "agent_id": None,
        "project": None,
        "occurred_at": m.created_at,
        "indexed_at": indexed_at,
        "provenance": {"tenant_id": ident.tenant, "user_id": ident.user, "machine": ident.machine,
                       "session_id": session, "source_type": SOURCE_TYPE, "source_file": m.source_file,
                       "source_line": None, "legacy_id": m.row_id, "legacy_hash": m.legacy_hash,
                       "legacy_source_type": m.source_type},
        "metadata": metadata(m.content),
        "parts": 1,
        "kinds": ["text"],
        "model": None,
        "usage": {},
        "is_sidechain": False,
        "is_meta": False,
        "is_prompt": m.role == "user",
    })


def knowledge_item(k: LegacyKnowledge) -> dict[str, Any]:
    body = orjson.dumps({"type": k.knowledge_type, "data": k.data}, option=orjson.OPT_SORT_KEYS)
    d = k.data
    title = next((str(d[f]) for f in ("title", "name", "error_signature", "decision", "description", "solution")
                  if isinstance(d.get(f), (str, int, float)) and str(d[f]).strip()), k.knowledge_type)
    return {"id": "legacy-" + hashlib.sha256(body).hexdigest()[:24], "type": k.knowledge_type,
            "title": title.strip().splitlines()[0][:200], "data": d, "source": SOURCE_TYPE, "legacy_id": k.row_id,
            "created_at": k.created_at}


def _existing(conn: Any, sql: str, values: list[str]) -> dict[str, str]:
    """value → the first column's match, for values in chunks under SQLite's parameter limit."""
    out: dict[str, str] = {}
    for i in range(0, len(values), 900):
        chunk = values[i:i + 900]
        for row in conn.execute(sql % ",".join("?" * len(chunk)), chunk):
            out[str(row[0])] = str(row[1])
    return out


def _present_hashes(cache: Any, hashes: list[str]) -> dict[str, str]:
    """hash → message key for the hashes the cache already holds.  ``messages.hash`` has no index (each index
    costs every insert of a million-message import), so the lookups go through one temporary table and one scan."""
    if cache is None or not hashes:
        return {}
    conn = cache.conn
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS migrate_hashes(hash TEXT PRIMARY KEY)")
    conn.execute("DELETE FROM temp.migrate_hashes")
    conn.executemany("INSERT OR IGNORE INTO temp.migrate_hashes(hash) VALUES (?)", [(h,) for h in hashes])
    out: dict[str, str] = {}
    for h, key in conn.execute("SELECT hash, key FROM messages WHERE hash IN temp.migrate_hashes ORDER BY id"):
        out.setdefault(h, key)
    conn.execute("DELETE FROM temp.migrate_hashes")
    return out


def migrate(legacy_path: Path, cache: Any, ident: ev.Identity, *, dry_run: bool = False,
            progress: Progress | None = None, batch: int = BATCH) -> Report:
    """Bring the legacy database at ``legacy_path`` into ``cache`` (None with ``dry_run`` and no cache yet)."""
    report = Report(str(legacy_path), dry_run)
    indexed_at = ev.utcnow_iso()
    with LegacyDb(legacy_path) as db:
        total = db.count("messages") + db.count("knowledge")
        done = 0
        referenced = ({r[0] for r in db.conn.execute("SELECT DISTINCT message_id FROM knowledge")}
                      if db.has_knowledge else set())
        # One pass to learn every hash, one scan of the cache to learn which it holds.
        rows: list[LegacyMessage] = []
        for item in db.messages():
            report.messages.total += 1
            if isinstance(item, Refused):
                report.refuse(item)
                done += 1
            else:
                rows.append(item)
        present = _present_hashes(cache, sorted({m.hash for m in rows}))
        hash_of_id = {m.row_id: m.hash for m in rows if m.row_id in referenced}
        seen: set[str] = set()
        pending: list[ev.ContextEvent] = []
        for m in rows:
            done += 1
            report.warn("messages", m.row_id, m.warnings)
            if m.hash in seen:
                report.messages.duplicates += 1
            elif m.hash in present:
                if present[m.hash].startswith(LEGACY_KEY):
                    report.messages.already_migrated += 1
                else:
                    report.messages.already_present += 1
            else:
                report.messages.new += 1
                pending.append(message_event(ident, m, indexed_at))
            seen.add(m.hash)
            if len(pending) >= batch:
                _flush(cache, pending, dry_run)
                if progress:
                    progress(done, total)
        _flush(cache, pending, dry_run)
        del rows
        knowledge: list[ev.ContextEvent] = []
        for k in db.knowledge():
            report.knowledge.total += 1
            done += 1
            if isinstance(k, Refused):
                report.refuse(k)
                continue
            warnings = list(k.warnings)
            sources = [hash_of_id[k.message_id]] if k.message_id in hash_of_id else []
            if k.message_id is not None and not sources:
                warnings.append(f"message {k.message_id} is not in the legacy database (or was refused): "
                                "kept without a source message")
            report.warn("knowledge", k.row_id, warnings)
            knowledge.append(ev.knowledge_extracted(ident, knowledge_item(k), sources))
        known = _existing(cache.conn, "SELECT knowledge_id, knowledge_id FROM knowledge WHERE knowledge_id IN (%s)",
                          [str(e.data["knowledge"]["id"]) for e in knowledge]) if cache is not None else {}
        ids = Counter[str]()
        for e in knowledge:
            kid = str(e.data["knowledge"]["id"])
            ids[kid] += 1
            if ids[kid] > 1:
                report.knowledge.duplicates += 1
            elif kid in known:
                report.knowledge.already_migrated += 1
            else:
                report.knowledge.new += 1
                pending.append(e)
        _flush(cache, pending, dry_run)
        if progress:
            progress(total, total)
    if cache is not None and not dry_run:
        cache.set_state(legacy_migration={"source": str(legacy_path), "at": ev.utcnow_iso(),
                                          "messages": vars(report.messages), "knowledge": vars(report.knowledge)})
    return report


def _flush(cache: Any, pending: list[ev.ContextEvent], dry_run: bool) -> None:
    """Apply one batch in one transaction (rows, FTS, outbox): a kill between batches loses nothing, and the
    batches already applied are recognised by their hashes on the next run."""
    if pending and not dry_run:
        cache.apply(pending, "local")
    pending.clear()
