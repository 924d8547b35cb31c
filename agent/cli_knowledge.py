"""Knowledge and sharing: knowledge, knowledge show, share, unshare; and redact --check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cxsync.agent.cli import Ctx, emit_json


def _safe(text: str) -> str:
    """Transcript text as data: control characters made visible, never sent to the terminal."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def _masked(text: str, start: int, end: int, placeholder: str, width: int = 30) -> str:
    """The context of a finding with the secret replaced: what a person needs to recognise it, never the secret."""
    before = text[max(0, start - width):start]
    after = text[end:end + width]
    out = f"{'…' if start > width else ''}{before}{placeholder}{after}{'…' if end + width < len(text) else ''}"
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in out)


def _refresh(cfg: Any) -> None:
    """Extract from what was captured since the last run, unless the running agent does it (it owns the cache)."""
    from cxsync.agent import app
    from cxsync.agent.extract import run
    from cxsync.agent.lock import InstanceLock

    if not cfg.paths.cache_db.exists():
        return
    lock = InstanceLock(cfg.paths.lock_file)
    if not lock.acquire():
        return
    try:
        with app.writable_cache(cfg) as cache:
            run(cache, app.identity(cfg))
    finally:
        lock.release()


def _scope(value: str) -> tuple[str, str | None]:
    from cxsync.sync.errors import UsageError
    from cxsync.sync.port import validate_stream

    if value == "team":
        return "team", None
    kind, _, name = value.partition(":")
    if kind == "project" and name:
        validate_stream(f"p/{name}")
        return "project", name
    raise UsageError(f"unknown scope {value!r}", "use --scope team or --scope project:NAME")


def _share(obj: Ctx, target: str, scope_value: str, shared: bool, as_json: bool) -> None:
    from cxsync.agent import app
    from cxsync.cache.knowledge import get_item, session_item_ids
    from cxsync.cache.search import NotFound
    from cxsync.sync import events as ev

    cfg = obj.config()
    scope, project = _scope(scope_value)
    _refresh(cfg)
    ident = app.identity(cfg)
    with app.writable_cache(cfg) as cache:
        try:
            items = [get_item(cache.conn, ident.user, target)]
        except NotFound:
            ids = session_item_ids(cache.conn, ident.user, target)
            if not ids:
                raise NotFound(f"no knowledge item or session {target!r} with knowledge of yours",
                               "`cxsync knowledge` lists items; `cxsync sessions` lists sessions") from None
            items = [get_item(cache.conn, ident.user, i) for i in ids]
        mine = [i for i in items if i.user == ident.user]
        if not mine:
            raise NotFound(f"{target!r} is not your item", "you can share and withdraw only your own items")
        events = [ev.knowledge_shared(ident, i.id, scope, project, item={**i.data, "id": i.id, "type": i.type,
                                                                         "title": i.title, "sources": i.sources},
                                      shared=shared) for i in mine]
        cache.apply(events, "local")
    _nudge(cfg)
    verb = "shared with" if shared else "withdrawn from"
    where = "the team" if scope == "team" else f"project {project}"
    if as_json:
        emit_json({"items": [i.id for i in mine], "scope": scope, "project": project, "shared": shared})
    else:
        click.echo(f"{len(mine)} item(s) {verb} {where}: {', '.join(i.id for i in mine)}")


def _nudge(cfg: Any) -> None:
    """Ask a running agent to push now; without one, the next `sync --once` or `run` sends it."""
    from cxsync.agent.control import send
    from cxsync.sync.errors import CxError

    try:
        send(cfg.paths, "sync-now")
    except (CxError, OSError):
        pass  # no agent is a normal state here


def register(main: click.Group) -> None:
    @main.group(invoke_without_command=True)
    @click.option("--type", "ktype", type=click.Choice(["decision", "pattern", "error_solution"]),
                  help="Only items of this type.")
    @click.option("--project", help="Only items of this project (a part of its path, or a shared project name).")
    @click.option("--scope", type=click.Choice(["all", "mine", "shared", "team", "project"]), default="all",
                  show_default=True, help="Whose items: yours, shared ones, or both.")
    @click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="Print the items as JSON.")
    @click.pass_context
    def knowledge(ctx: click.Context, ktype: str | None, project: str | None, scope: str, limit: int,
                  as_json: bool) -> None:
        """Decisions, error → solution pairs and patterns extracted from your sessions, and what others shared.

        Examples: `cxsync knowledge --type decision`, `cxsync knowledge --scope team --json`
        """
        if ctx.invoked_subcommand is not None:
            return
        from cxsync.agent import app
        from cxsync.cache import open_cache
        from cxsync.cache.knowledge import list_items

        cfg = ctx.obj.config()
        _refresh(cfg)
        if not cfg.paths.cache_db.exists():
            items = []
        else:
            with open_cache(cfg.paths.cache_db, readonly=True) as cache:
                items = list_items(cache.conn, app.identity(cfg).user, type=ktype, project=project, scope=scope,
                                   limit=limit)
        if as_json:
            emit_json([i.as_dict() for i in items])
            return
        if not items:
            click.echo("no knowledge items yet", err=True)
        for i in items:
            shares = ", ".join("team" if s["scope"] == "team" else f"project:{s.get('project', '')}"
                               for s in i.shares)
            owner = "" if i.user == app.identity(cfg).user else f" (from {i.user})"
            click.echo(f"{i.id}  {i.type:<14} {(i.occurred_at or '')[:10]}  {_safe(i.title)}{owner}"
                       + (f"  [shared: {shares}]" if shares else ""))

    @knowledge.command("show")
    @click.argument("item_id")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def knowledge_show(obj: Ctx, item_id: str, as_json: bool) -> None:
        """One item in full, with the messages it came from."""
        from cxsync.agent import app
        from cxsync.cache import open_cache
        from cxsync.cache.knowledge import get_item, source_messages

        cfg = obj.config()
        with open_cache(cfg.paths.cache_db, readonly=True) as cache:
            item = get_item(cache.conn, app.identity(cfg).user, item_id)
            sources = source_messages(cache.conn, item.sources)
        if as_json:
            emit_json({**item.as_dict(), "source_messages": sources})
            return
        click.echo(f"{item.id}  {item.type}  {item.occurred_at or ''}  by {item.user}")
        click.echo(f"  {_safe(item.title)}")
        for key in ("decision", "rationale", "error_signature", "command", "solution", "description"):
            if item.data.get(key):
                click.echo(f"  {key}: {_safe(str(item.data[key]))}")
        for step in item.data.get("steps") or []:
            click.echo(f"  step: {_safe(str(step))}")
        if item.data.get("code_example"):
            click.echo("  code:")
            for line in str(item.data["code_example"]).splitlines():
                click.echo(f"    {_safe(line)}")
        for s in sources:
            click.echo(f"  source {s['role']} in {s['session']} at {s['occurred_at']}: "
                       f"{_safe(s['content'][:160].replace(chr(10), ' '))}")
        if item.sources and not sources:
            click.echo(f"  ({len(item.sources)} source message(s), not in this cache)")

    @main.command()
    @click.argument("target", metavar="ITEM|SESSION")
    @click.option("--scope", "scope_value", required=True, help="team, or project:NAME.")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def share(obj: Ctx, target: str, scope_value: str, as_json: bool) -> None:
        """Share a knowledge item (or every item of a session) with your team or a project.

        Nothing is shared unless you say so. Example: `cxsync share d-3f2a --scope team`
        """
        _share(obj, target, scope_value, True, as_json)

    @main.command()
    @click.argument("target", metavar="ITEM|SESSION")
    @click.option("--scope", "scope_value", required=True, help="team, or project:NAME.")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def unshare(obj: Ctx, target: str, scope_value: str, as_json: bool) -> None:
        """Withdraw a share: every cache that receives the withdrawal stops showing the item.

        Example: `cxsync unshare d-3f2a --scope team`
        """
        _share(obj, target, scope_value, False, as_json)

    @main.command()
    @click.option("--check", "check", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
                  help="A file to scan: a transcript (.jsonl) or any text.")
    @click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
    def redact(check: Path, as_json: bool) -> None:
        """Show what would be redacted from FILE before upload (the secret itself is never printed).

        Example: `cxsync redact --check ~/.claude/projects/-home-ada-app/0b9e….jsonl`
        """
        from cxsync.sync.redact import find_secrets

        findings: list[dict[str, Any]] = []
        with open(check, encoding="utf-8", errors="replace", newline="") as fh:
            for n, line in enumerate(fh, 1):
                for f in find_secrets(line):
                    findings.append({"line": n, "kind": f.kind, "placeholder": f.placeholder,
                                     "context": _masked(line.rstrip("\r\n"), f.start, f.end, f.placeholder)})
        if as_json:
            emit_json({"file": str(check), "findings": findings})
            return
        for item in findings:
            click.echo(f"{check}:{item['line']}: {item['kind']} → {item['placeholder']}  {item['context']}")
        kinds = sorted({item["kind"] for item in findings})
        click.echo(f"{len(findings)} secret(s) would be redacted" + (f" ({', '.join(kinds)})" if kinds else ""),
                   err=True)
