"""Read commands: query, sessions, show."""

from __future__ import annotations

import sys
from typing import Any

import click

from cxsync.agent.cli import Ctx, emit_json


def open_for_reading(cfg: Any) -> Any:
    from cxsync.cache import open_cache

    return open_cache(cfg.paths.cache_db, readonly=True)


def _render_snippet(snippet: str, rich_markup: bool) -> str:
    from cxsync.cache.search import HL_CLOSE, HL_OPEN

    if rich_markup:
        from rich.markup import escape

        parts = escape(snippet.replace(HL_OPEN, "\x00o").replace(HL_CLOSE, "\x00c"))
        return parts.replace("\x00o", "[bold yellow]").replace("\x00c", "[/]")
    return snippet.replace(HL_OPEN, "**").replace(HL_CLOSE, "**")


def register(main: click.Group) -> None:
    @main.command()
    @click.argument("text", nargs=-1, required=True)
    @click.option("--limit", "-n", default=10, show_default=True, type=click.IntRange(1, 10_000))
    @click.option("--project", "-p", help="Only this project (its path, or its last path component).")
    @click.option("--session", "-s", help="Only this session (id or unambiguous prefix).")
    @click.option("--role", type=click.Choice(["user", "assistant", "tool", "system"]))
    @click.option("--since", help="Only messages newer than this: 2h, 3d, 1w or an ISO date.")
    @click.option("--fts", is_flag=True, help="Pass TEXT as raw FTS5 query syntax (AND, OR, NEAR, prefix*).")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.pass_obj
    def query(obj: Ctx, text: tuple[str, ...], limit: int, project: str | None, session: str | None,
              role: str | None, since: str | None, fts: bool, as_json: bool) -> None:
        """Search the cache: ranked hits with session, project, role, time and a highlighted snippet."""
        cfg = obj.config()
        with open_for_reading(cfg) as cache:
            hits = cache.search(" ".join(text), limit=limit, project=project, session=session, role=role,
                                since=since, fts=fts)
        if as_json:
            emit_json([{**h.as_dict(), "snippet": _render_snippet(h.snippet, False)} for h in hits])
            return
        if not hits:
            click.echo("No matches.", err=True)
            return
        from rich.console import Console

        con = Console(soft_wrap=True)
        for h in hits:
            where = h.project or "?"
            agent = f" agent {h.agent_id}" if h.agent_id else ""
            con.print(f"[cyan]{h.root_session[:8]}[/]{agent} [dim]{h.occurred_at or ''}[/] [green]{h.role}[/]"
                      f" [dim]{where}[/]", highlight=False)
            con.print("  " + _render_snippet(h.snippet.replace("\n", " "), True), highlight=False)

    @main.command()
    @click.option("--limit", "-n", type=click.IntRange(1, 1_000_000), help="At most this many (newest first).")
    @click.option("--project", "-p")
    @click.option("--all", "include_subagents", is_flag=True, help="List subagent sessions too.")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def sessions(obj: Ctx, limit: int | None, project: str | None, include_subagents: bool, as_json: bool) -> None:
        """List captured sessions, newest first."""
        cfg = obj.config()
        with open_for_reading(cfg) as cache:
            rows = cache.sessions(limit=limit, project=project, include_subagents=include_subagents)
        if as_json:
            emit_json(rows)
            return
        from rich.console import Console
        from rich.table import Table

        t = Table(box=None, show_edge=False, pad_edge=False)
        for col in ("session", "last", "msgs", "project", "title / first prompt"):
            t.add_column(col, overflow="fold" if col.startswith("title") else "ellipsis")
        for r in rows:
            label = r["title"] or (r["first_prompt"] or "").replace("\n", " ")[:80]
            sub = f" (+{r['subagents']} agents)" if r["subagents"] else ""
            t.add_row(r["session"][:8], (r["last_at"] or "")[:16], f"{r['messages']}{sub}", r["project"] or "",
                      label)
        Console().print(t)

    @main.command()
    @click.argument("session")
    @click.option("--agents", is_flag=True, help="Interleave the session's subagents.")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def show(obj: Ctx, session: str, agents: bool, as_json: bool) -> None:
        """Print one session's conversation in order."""
        cfg = obj.config()
        with open_for_reading(cfg) as cache:
            data = cache.show(session, include_subagents=agents)
        if as_json:
            emit_json(data)
            return
        info = data["session"] or {}
        out = sys.stdout
        out.write(f"# {info.get('title') or info.get('session')}\n")
        out.write(f"session {info.get('session')}  project {info.get('project')}  branch {info.get('branch')}\n\n")
        for m in data["messages"]:
            who = m["role"] + (f" ({m['agent_id']})" if m["agent_id"] else "")
            out.write(f"── {who} · {m['occurred_at'] or ''}\n{m['content']}\n\n")
