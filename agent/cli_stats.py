"""``cxsync stats``: what the cache holds, for a user with a large history."""

from __future__ import annotations

import re
from typing import Any

import click

from cxsync.agent.cli import Ctx, emit_json

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _plain(s: Any) -> Any:
    """Text from transcripts (project paths) as data: control characters shown, never sent to the terminal."""
    from rich.text import Text

    return Text(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(s if s is not None else "")))


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _tokens(t: dict[str, int]) -> list[str]:
    return [f"{t['input']:,}", f"{t['output']:,}", f"{t['cache_read']:,}", f"{t['cache_creation']:,}"]


def register(main: click.Group) -> None:
    @main.command()
    @click.option("--top", default=10, show_default=True, type=click.IntRange(1, 1000),
                  help="How many projects to list.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.pass_obj
    def stats(obj: Ctx, top: int, as_json: bool) -> None:
        """Messages, sessions, projects, tokens by model and by month, and what takes the cache's space."""
        from cxsync.agent.cli_query import open_for_reading
        from cxsync.cache.stats import collect

        cfg = obj.config()
        with open_for_reading(cfg) as cache:
            data = collect(cache.conn, cache.path, top=top)
        if as_json:
            emit_json(data)
            return
        from rich.console import Console
        from rich.table import Table

        con = Console(soft_wrap=True, highlight=False)
        con.print(_plain(f"{data['messages']:,} messages in {data['sessions']:,} sessions"
                         f" (+{data['subagent_sessions']:,} subagent sessions), {data['projects']:,} projects,"
                         f" {data['first_at'] or '?'} … {data['last_at'] or '?'}"))
        con.print(_plain("by role: " + ", ".join(f"{r} {n:,}" for r, n in data["messages_by_role"].items())))
        for title, key in (("tokens by model", "tokens_by_model"), ("tokens by month", "tokens_by_month")):
            t = Table(title=title, title_justify="left", box=None, pad_edge=False)
            for col in ("", "input", "output", "cache read", "cache write"):
                t.add_column(col, justify="left" if not col else "right")
            for name, tok in data[key].items():
                t.add_row(_plain(name), *_tokens(tok))
            con.print(t)
        t = Table(title=f"top {top} projects", title_justify="left", box=None, pad_edge=False)
        for col in ("project", "sessions", "messages", "tokens", "last"):
            t.add_column(col, justify="left" if col in ("project", "last") else "right")
        for p in data["top_projects"]:
            t.add_row(_plain(p["project"]), f"{p['sessions'] or 0:,}", f"{p['messages'] or 0:,}",
                      f"{p['tokens'] or 0:,}", _plain((p["last_at"] or "")[:16]))
        con.print(t)
        cache = data["cache"]
        t = Table(title=f"cache {_size(cache['bytes'])} ({cache['path']})", title_justify="left", box=None,
                  pad_edge=False)
        for col in ("part", "size", "what"):
            t.add_column(col, justify="right" if col == "size" else "left")
        for part, n in cache["by_part"].items():
            t.add_row(part, _size(n), cache["parts"][part])
        con.print(t)
