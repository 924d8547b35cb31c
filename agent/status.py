"""``cxsync status``: the truth about the agent, read from persisted state so it works with the agent stopped.

Kept light on imports (no watchdog, no keyring unless needed, never fdb or pystray): it must start fast.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from typing import Any

from cxsync.agent.config import Config
from cxsync.agent.lock import holder

STATES = ("idle", "syncing", "offline", "paused", "error", "needs-auth", "not-running")


def read_agent_file(cfg: Config) -> dict[str, Any] | None:
    try:
        return dict(json.loads(cfg.paths.agent_state.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def _age(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (datetime.now(timezone.utc) - t).total_seconds())


def collect(cfg: Config) -> dict[str, Any]:
    pid = holder(cfg.paths.lock_file)
    agent = read_agent_file(cfg) if pid else None
    out: dict[str, Any] = {
        "state": "not-running",
        "pid": pid,
        "uptime_s": None,
        "transcripts_watched": 0,
        "messages": 0,
        "sessions": 0,
        "import": {"done": 0, "total": 0},
        "outbox": 0,
        "quarantined": 0,
        "last_push": None,
        "last_pull": None,
        "streams": {},
        "last_error": None,
        "unreadable_folders": [],  # transcript folders the agent cannot list (rescanned until readable)
        "credential_backend": "env:CXSYNC_TOKEN" if os.environ.get("CXSYNC_TOKEN") else None,
        "target": cfg.sync.target,
        "cache": str(cfg.paths.cache_db),
    }
    if agent:
        out["state"] = agent.get("state", "idle")
        started = agent.get("started_at")
        out["uptime_s"] = round(time.time() - started, 1) if isinstance(started, (int, float)) else None
        out["transcripts_watched"] = agent.get("watched", 0)
        out["credential_backend"] = agent.get("credential_backend") or out["credential_backend"]
        out["observer"] = agent.get("observer")
        out["unreadable_folders"] = list(agent.get("unreadable") or [])
        if agent.get("error"):
            out["last_error"] = agent["error"]
    if cfg.paths.cache_db.exists():
        # Plain SQL on a read-only connection: status must not import the apply/codec machinery.
        from cxsync.cache.db import connect

        from cxsync.cache.db import scalar, schema_version

        c = connect(cfg.paths.cache_db, readonly=True)
        try:
            if schema_version(c) == 0:  # the agent is creating it right now: nothing to count yet
                return out
            def state(key: str, default: Any = None) -> Any:
                row = c.execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
                return json.loads(row[0]) if row else default

            try:
                out["messages"] = scalar(c, "SELECT value FROM counters WHERE name='messages'")
            except Exception:  # noqa: BLE001 - a cache from before migration 2, not yet opened by a writer
                out["messages"] = scalar(c, "SELECT count(*) FROM messages")
            out["sessions"] = scalar(c, "SELECT count(*) FROM sessions WHERE session_id = root_session")
            ob: dict[Any, Any] = {r[0]: r[1] for r in c.execute("SELECT state, count(*) FROM outbox GROUP BY state")}
            out["outbox"], out["quarantined"] = ob.get("pending", 0), ob.get("quarantined", 0)
            out["import"] = {"done": state("import_done", 0), "total": state("import_total", 0)}
            out["last_push"] = state("last_push")
            out["last_pull"] = state("last_pull")
            streams = state("streams", {}) or {}
            cursors: dict[str, str | None] = {
                str(s): cur.hex() if isinstance(cur, bytes) else None
                for s, cur in c.execute("SELECT stream, cursor FROM cursors").fetchall()}
            if not agent:
                out["transcripts_watched"] = scalar(c, "SELECT count(*) FROM files WHERE status='active'")
            for s in sorted(set(cfg.sync.subscribe) | set(cursors) | set(streams)):
                info = streams.get(s, {})
                out["streams"][s] = {
                    "cursor": cursors.get(s),
                    "last_pull": info.get("last_pull"),
                    "lag_s": round(_age(info.get("caught_up_at")) or 0.0, 1) if info.get("caught_up_at") else None,
                }
            err = state("last_error")
            if err and not out["last_error"]:
                out["last_error"] = err
        finally:
            c.close()
    return out
