"""Builders for synthetic Claude Code transcript records, shaped like the real ones (see the real fixtures)."""

from __future__ import annotations

import itertools
import json
import uuid as _uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

_counter = itertools.count(1)
T0 = datetime(2026, 11, 1, 9, 0, 0, tzinfo=timezone.utc)


def ts(i: int) -> str:
    return (T0 + timedelta(seconds=i)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def uid() -> str:
    return str(_uuid.uuid4())


def env(session: str, *, cwd: str = "/home/dev/proj", branch: str = "main", t: int | None = None,
        parent: str | None = None, **extra: Any) -> dict[str, Any]:
    n = next(_counter) if t is None else t
    rec = {"parentUuid": parent, "isSidechain": False, "userType": "external", "cwd": cwd, "sessionId": session,
           "version": "2.1.39", "gitBranch": branch, "uuid": uid(), "timestamp": ts(n)}
    rec.update(extra)
    return rec


def user(session: str, text: str, **kw: Any) -> dict[str, Any]:
    return {**env(session, **kw), "type": "user", "message": {"role": "user", "content": text}}


def tool_result(session: str, tool_use_id: str, text: str, *, is_error: bool = False, **kw: Any) -> dict[str, Any]:
    content = [{"type": "tool_result", "tool_use_id": tool_use_id, "content": text, "is_error": is_error}]
    return {**env(session, **kw), "type": "user", "message": {"role": "user", "content": content},
            "toolUseResult": {"stdout": text}}


def assistant_lines(session: str, blocks: list[dict[str, Any]], *, msg_id: str | None = None,
                    model: str = "claude-opus-4-5", growing_usage: bool = True, **kw: Any) -> list[dict[str, Any]]:
    """One response written as several lines (one per block) sharing message.id and requestId."""
    msg_id = msg_id or f"msg_{_uuid.uuid4().hex[:24]}"
    req = f"req_{_uuid.uuid4().hex[:24]}"
    out = []
    for i, b in enumerate(blocks):
        usage = {"input_tokens": 10, "output_tokens": (i + 1) * 8 if growing_usage else 100,
                 "cache_read_input_tokens": 5, "cache_creation_input_tokens": 0}
        out.append({**env(session, **kw), "type": "assistant", "requestId": req,
                    "message": {"id": msg_id, "type": "message", "role": "assistant", "model": model,
                                "content": [b], "stop_reason": None, "usage": usage}})
    return out


def text(t: str) -> dict[str, Any]:
    return {"type": "text", "text": t}


def thinking(t: str) -> dict[str, Any]:
    return {"type": "thinking", "thinking": t, "signature": "sig"}


def tool_use(name: str, inp: dict[str, Any], tid: str | None = None) -> dict[str, Any]:
    return {"type": "tool_use", "id": tid or f"toolu_{_uuid.uuid4().hex[:20]}", "name": name, "input": inp}


def line(rec: dict[str, Any]) -> bytes:
    return json.dumps(rec, ensure_ascii=False).encode() + b"\n"


def write(path: Path, records: Iterable[dict[str, Any]], mode: str = "wb") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as fh:
        for r in records:
            fh.write(line(r))
    return path


def append_bytes(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)
        fh.flush()


def session_file(home: Path, session: str, slug: str = "-home-dev-proj") -> Path:
    return home / "projects" / slug / f"{session}.jsonl"


def history(home: Path, id_prefix: str, sessions: int, messages: int) -> int:
    """A backfill-sized history: ``sessions`` files of ``messages`` prompt/answer pairs; returns the message count.
    ``id_prefix`` (8 hex digits) keeps the session ids of different tests apart."""
    for s in range(sessions):
        sid = f"{id_prefix}-0000-4000-8000-{s:012d}"
        recs = []
        for i in range(messages):
            recs.append(user(sid, f"question {s} {i} " + "lorem ipsum dolor sit amet " * 8))
            recs.extend(assistant_lines(sid, [text(f"answer {s} {i} " + "consectetur adipiscing " * 10)]))
        write(session_file(home, sid), recs)
    return sessions * messages * 2
