"""``cxsync hook session-start``: Claude Code's SessionStart hook, giving a new session the project's recent work.

Claude Code runs the hook with a JSON object on stdin (``session_id``, ``transcript_path``, ``cwd``,
``hook_event_name: "SessionStart"``, ``source``: startup | resume | clear | compact) and adds the
``hookSpecificOutput.additionalContext`` of a JSON answer on stdout to the new session's context.

It must never break a session: any failure prints nothing, exits 0 and is written to ``hook.log`` in the log
folder. It runs on every session start, so it imports only what it needs (no click, no rich, no search
machinery): paths, the read-only cache connection and the recall queries.
"""

from __future__ import annotations

import json
import os
import sys
from typing import IO, Any

MAX_INPUT = 1 << 20  # Claude Code's hook input is a few hundred bytes; never read an unbounded stream


def read_input(stream: IO[bytes]) -> dict[str, Any]:
    """The hook input: one JSON object, read as soon as it is complete (a caller that keeps stdin open must not
    hold the hook until its timeout)."""
    if stream.isatty():  # run by hand: nothing to read, use the current folder
        return {}
    raw = b""
    data: Any = None
    while data is None and len(raw) < MAX_INPUT:
        chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
        if not chunk:
            if not raw.strip():
                return {}
            data = json.loads(raw)  # ended incomplete: the decoder's error says where
            break
        raw += chunk
        try:
            data = json.loads(raw)
        except ValueError:
            continue
    if not isinstance(data, dict):
        raise ValueError(f"hook input is a JSON {type(data).__name__}, not an object")
    return data


def session_start_context(data: dict[str, Any], *, budget: int) -> str | None:
    """The recall block for the project the session starts in, or None when there is nothing to say."""
    from cxsync.agent.paths import resolve_paths
    from cxsync.cache.db import connect
    from cxsync.cache.recall import recent_work

    cwd = data.get("cwd")
    project = cwd if isinstance(cwd, str) and cwd else os.getcwd()
    sid = data.get("session_id")
    db = resolve_paths().cache_db
    if not db.exists():
        return None
    me = None
    try:  # the reader decides which knowledge items are visible; without a readable config, sessions only
        from cxsync.agent.config import load_config

        me = load_config().identity.user
    except Exception as exc:  # noqa: BLE001 - recent sessions are still worth giving
        log_failure(exc)
    conn = connect(db, readonly=True)
    try:
        block = recent_work(conn, project, budget=budget, exclude=sid if isinstance(sid, str) else None, me=me)
    finally:
        conn.close()
    return block.markdown if block.items else None


def answer(context: str) -> str:
    return json.dumps({"hookSpecificOutput": {"hookEventName": "SessionStart", "additionalContext": context}},
                      ensure_ascii=False)


def log_failure(exc: BaseException) -> None:
    """Best effort: a hook that cannot even log still exits 0 silently."""
    try:
        import traceback
        from datetime import datetime, timezone

        from cxsync.agent.paths import resolve_paths, secure_file

        paths = resolve_paths()
        paths.log_dir.mkdir(parents=True, exist_ok=True)
        log = paths.log_dir / "hook.log"
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"{stamp} session-start failed: {type(exc).__name__}: {exc}\n")
            fh.write("".join(traceback.format_exception(exc)))
        secure_file(log)
    except BaseException:  # noqa: BLE001 - nothing may escape a hook
        pass


def run_session_start(stdin: IO[bytes] | None = None, stdout: IO[str] | None = None, *, budget: int = 1500) -> int:
    """Always returns 0; prints the hook answer only when all of it was computed."""
    try:
        data = read_input(stdin if stdin is not None else sys.stdin.buffer)
        context = session_start_context(data, budget=budget)
        if context:
            out = stdout if stdout is not None else sys.stdout
            out.write(answer(context) + "\n")
            out.flush()
    except BaseException as exc:  # noqa: BLE001 - a hook must never break Claude Code's session
        log_failure(exc)
    return 0


if __name__ == "__main__":  # python -m cxsync.agent.hook session-start (the CLI command does the same)
    sys.exit(run_session_start() if sys.argv[1:] == ["session-start"] else 0)
