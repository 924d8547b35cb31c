"""``cxsync status``: the truth about the agent, read from persisted state so it works with the agent stopped.

One ``Status`` type for every reader (the CLI, ``--json``, the tray): the agent's own snapshot (written by its
one state owner, ``cxsync.agent.state.AgentState``) for what the agent is doing and its current error, and the
cache for what it holds.  The cache holds no error of the agent: an error is never merged in from a second
place where it could outlive its recovery.

Kept light on imports (no watchdog, no keyring unless needed, never fdb or pystray): it must start fast.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from typing import Any, TypedDict, cast

from cxsync.agent.config import Config
from cxsync.agent.lock import holder

STATES = ("idle", "syncing", "offline", "paused", "error", "needs-auth", "not-running")


class ErrorInfo(TypedDict, total=False):
    title: str
    hint: str
    kind: str
    component: str
    at: str


class StreamStatus(TypedDict):
    cursor: str | None
    last_pull: str | None
    lag_s: float | None  # seconds since the stream was last caught up (None: never)
    behind: int  # events known to wait in the log (a lower bound while a catch-up is under way)


class ImportProgress(TypedDict):
    done: int
    total: int


# Functional form: "import" is a key a class body cannot spell.
Status = TypedDict("Status", {
    "state": str,  # one of STATES
    "pid": "int | None",
    "uptime_s": "float | None",
    "transcripts_watched": int,
    "messages": int,
    "sessions": int,
    "observer": "str | None",
    "workers": "dict[str, Any]",  # per worker: its state and current error
    "import": ImportProgress,
    "outbox": int,
    "quarantined": int,
    "undecodable": int,  # pulled events kept aside: not decodable, or of a type this version does not know
    "last_push": "str | None",
    "last_pull": "str | None",
    "streams": "dict[str, StreamStatus]",
    "last_error": "ErrorInfo | None",  # current, never stale: it clears when its worker recovers
    "log_replaced": "dict[str, Any] | None",  # the log was deleted or replaced and what was republished
    "unreadable_folders": "list[str]",  # transcript folders the agent cannot list (rescanned until readable)
    "credential_backend": "str | None",
    "target": str,
    "cache": str,
}, total=False)


def read_agent_file(cfg: Config) -> dict[str, Any] | None:
    try:
        return dict(json.loads(cfg.paths.agent_state.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def _age(iso: str | None) -> float | None:
    from cxsync.sync.clock import parse_iso

    t = parse_iso(iso)
    return None if t is None else max(0.0, (datetime.now(timezone.utc) - t).total_seconds())


def collect(cfg: Config) -> Status:
    pid = holder(cfg.paths.lock_file)
    agent = read_agent_file(cfg) if pid else None
    out: Status = {
        "state": "not-running",
        "pid": pid,
        "uptime_s": None,
        "transcripts_watched": 0,
        "messages": 0,
        "sessions": 0,
        "import": {"done": 0, "total": 0},
        "outbox": 0,
        "quarantined": 0,
        "undecodable": 0,
        "last_push": None,
        "last_pull": None,
        "streams": {},
        "last_error": None,
        "log_replaced": None,
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
        out["workers"] = agent.get("workers") or {}
        out["log_replaced"] = agent.get("log_replaced")
        out["last_error"] = agent.get("error") or agent.get("warning")
        out["unreadable_folders"] = list(agent.get("unreadable") or [])
        out["target"] = str(agent.get("target") or out["target"])  # the running agent's, not this shell's
    if cfg.paths.cache_db.exists():
        _from_cache(cfg, out, agent is not None)
    return out


def _from_cache(cfg: Config, out: Status, running: bool) -> None:
    # Plain SQL on a read-only connection: status must not import the apply/codec machinery.
    from cxsync.cache.db import connect, scalar, schema_version

    c = connect(cfg.paths.cache_db, readonly=True)
    try:
        if schema_version(c) == 0:  # the agent is creating it right now: nothing to count yet
            return

        def state(key: str, default: Any = None) -> Any:
            row = c.execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
            return json.loads(row[0]) if row else default

        def has_table(name: str) -> bool:
            return c.execute("SELECT 1 FROM sqlite_schema WHERE name=?", (name,)).fetchone() is not None

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
        if not running:
            out["transcripts_watched"] = scalar(c, "SELECT count(*) FROM files WHERE status='active'")
        per_stream = has_table("undecodable")  # from the migration that also gave cursors their pull state
        if per_stream:
            out["undecodable"] = scalar(c, "SELECT count(*) FROM undecodable")
            rows = c.execute("SELECT stream, cursor, last_pull, caught_up_at, behind FROM cursors").fetchall()
        else:
            rows = [(s, cur, None, None, 0) for s, cur in c.execute("SELECT stream, cursor FROM cursors")]
        known = {str(r[0]): r for r in rows}
        for s in sorted(set(cfg.sync.subscribe) | set(known)):
            _, cur, last_pull, caught_up_at, behind = known.get(s, (s, None, None, None, 0))
            caught = str(caught_up_at) if caught_up_at else None
            out["streams"][s] = {
                "cursor": cur.hex() if isinstance(cur, bytes) else None,
                "last_pull": str(last_pull) if last_pull else None,
                "lag_s": round(_age(caught) or 0.0, 1) if caught else None,
                "behind": int(cast(int, behind) or 0),
            }
        if not out["last_error"] and out["quarantined"]:
            out["last_error"] = state("quarantine_error")
    finally:
        c.close()
