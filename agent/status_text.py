"""``cxsync status`` as text: local times with their age, sizes in KiB/MiB, nothing about sync when there is none.

Works on the dict ``agent.status.collect`` returns; keys it does not know are left to ``--json``.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from cxsync.agent import render


def _ago(iso: Any) -> str:
    if not iso or not isinstance(iso, str):
        return "never"
    age = render.since(iso)
    return f"{render.ago(age, long=True)} ({render.local_time(iso)})" if age is not None else render.visible(iso)


def cache_size(path: str | None) -> int | None:
    """Bytes the cache occupies on disk: the database and its write-ahead log."""
    if not path:
        return None
    total, seen = 0, False
    for p in (path, path + "-wal"):
        try:
            total += os.stat(p).st_size
            seen = True
        except OSError:
            pass
    return total if seen else None


def format_status(s: Mapping[str, Any]) -> str:
    state = str(s.get("state") or "unknown")
    up = s.get("uptime_s")
    detail = f" (pid {s['pid']}, up {render.duration(up)})" if s.get("pid") and isinstance(up, (int, float)) else ""
    lines = [f"state        {state}{detail}"]
    size = cache_size(s.get("cache"))
    lines.append(f"cache        {s.get('messages', 0):,} messages in {s.get('sessions', 0):,} sessions"
                 + (f", {render.size(size)}" if size is not None else ""))
    lines.append(f"watching     {s.get('transcripts_watched', 0):,} transcripts")
    for folder in s.get("unreadable_folders") or []:  # issue 9: captured once readable
        lines.append(f"unreadable   {render.visible(str(folder))} (captured once readable)")
    imp = s.get("import") or {}
    if imp.get("total"):
        lines.append(f"import       {imp.get('done', 0):,}/{imp['total']:,} files")
    target = s.get("target") or "none"
    if target == "none":
        lines.append("sync         off (target = \"none\": this machine only)")
    else:
        lines.append(f"sync target  {render.visible(str(target))}")
        quarantined = s.get("quarantined") or 0
        lines.append(f"outbox       {s.get('outbox', 0):,} pending"
                     + (f", {quarantined:,} quarantined" if quarantined else ""))
        lines.append(f"last push    {_ago(s.get('last_push'))}")
        lines.append(f"last pull    {_ago(s.get('last_pull'))}")
        for name, st in (s.get("streams") or {}).items():
            lag = st.get("lag_s")
            lag_text = f", {render.duration(lag)} behind" if isinstance(lag, (int, float)) and lag >= 1 else ""
            behind = st.get("behind")
            behind_text = f", {behind:,}+ events to pull" if isinstance(behind, int) and behind > 0 else ""
            lines.append(f"stream       {render.visible(str(name))}: last pull {_ago(st.get('last_pull'))}{lag_text}"
                         f"{behind_text}")
        if s.get("undecodable"):
            lines.append(f"unreadable   {s['undecodable']:,} pulled event(s) kept aside and skipped (damaged, or from a"
                         " newer cxsync); `cxsync rebuild` after an upgrade applies them")
        replaced = s.get("log_replaced")
        if isinstance(replaced, Mapping) and replaced:
            lines.append(f"log replaced {_ago(replaced.get('at'))}: the event log was deleted or replaced;"
                         f" {replaced.get('requeued', 0):,} event(s) published again")
        lines.append(f"credentials  {s.get('credential_backend') or 'unknown'}")
    err = s.get("last_error")
    if isinstance(err, Mapping) and err:
        lines.append(f"last error   {render.one_line(str(err.get('title') or ''))}")
        if err.get("hint"):
            lines.append(f"  hint       {render.one_line(str(err['hint']))}")
    return "\n".join(lines)


def control_reply(command: str, reply: Mapping[str, Any]) -> str:
    """One line for the reply of ``pause``/``resume``/``sync-now``/``stop``, judged by the agent's own status
    (its target, not the calling shell's configuration)."""
    if not reply.get("ok"):
        return f"{command}: {render.one_line(str(reply.get('error') or 'failed'))}"
    raw = reply.get("status")
    status: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    if command == "sync-now" and (status.get("target") or "none") == "none":
        return 'sync-now: nothing to sync — the agent runs with target = "none" (this machine only)'
    state = status.get("state")
    return f"{command}: ok" + (f" (agent {state})" if state else "")
