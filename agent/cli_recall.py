"""Giving the memory back: recall, the MCP server, the SessionStart hook and their registration with Claude Code."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cxsync.agent.cli import Ctx, emit_json


def _example(*lines: str) -> str:
    return "\b\nExample:\n" + "\n".join("  " + line for line in lines)


def register(main: click.Group) -> None:
    @main.command(short_help="Past prompts and their outcomes on a topic, as a block for a model.",
                  epilog=_example("cxsync recall flaky sync test --budget 800",
                                  "cxsync recall --project webapp          # its recent work"))
    @click.argument("topic", nargs=-1)
    @click.option("--project", "-p", help="Only this project (its path, or its last path component).")
    @click.option("--budget", "-b", default=2000, show_default=True, type=click.IntRange(60, 200_000),
                  help="Size of the block in (estimated) tokens; never exceeded.")
    @click.option("--json", "as_json", is_flag=True, help="Print the block and its items as JSON.")
    @click.pass_obj
    def recall(obj: Ctx, topic: tuple[str, ...], project: str | None, budget: int, as_json: bool) -> None:
        """The best past material for TOPIC as one Markdown block for a model to read: earlier prompts with the
        answer or fix that followed, each with session, project, machine and date. With no TOPIC and --project:
        a summary of that project's recent work."""
        from cxsync.agent.cli_query import open_for_reading
        from cxsync.cache.recall import recall as recall_topic, recent_work
        from cxsync.sync.errors import UsageError

        text = " ".join(topic).strip()
        if not text and not project:
            raise UsageError("nothing to recall", "give a TOPIC, or --project for a summary of its recent work")
        cfg = obj.config()
        me = cfg.identity.user
        with open_for_reading(cfg) as cache:
            block = (recall_topic(cache, text, project=project, budget=budget, me=me) if text
                     else recent_work(cache.conn, project or "", budget=budget, me=me))
        if as_json:
            emit_json(block.as_dict())
            return
        if not block.items:
            click.echo("Nothing recalled.", err=True)
            return
        sys.stdout.write(block.markdown)

    @main.command(short_help="Serve the cache to Claude Code as a read-only MCP server (stdio).",
                  epilog=_example("cxsync mcp      # started by Claude Code; see `cxsync claude install`"))
    @click.pass_obj
    def mcp(obj: Ctx) -> None:
        """Serve the cache to Claude Code (or any MCP client) over stdio: read-only tools search, recall,
        list_sessions, get_session and status."""
        from cxsync.agent.mcp_server import serve

        serve(obj.config())

    @main.group(short_help="Claude Code hooks (run by Claude Code).",
                epilog=_example("echo '{\"cwd\": \"'$PWD'\"}' | cxsync hook session-start"))
    def hook() -> None:
        """Claude Code hooks (run by Claude Code; see `cxsync claude install`)."""

    @hook.command("session-start", short_help="Print the project's recent work for a new session.",
                  epilog=_example("echo '{\"cwd\": \"'$PWD'\"}' | cxsync hook session-start"))
    @click.option("--budget", default=1500, show_default=True, type=click.IntRange(60, 200_000),
                  help="Size of the context in (estimated) tokens; never exceeded.")
    def session_start(budget: int) -> None:
        """Read Claude Code's SessionStart input on stdin; print the project's recent work as context for the new
        session. Never fails: on any error it prints nothing, exits 0 and writes hook.log."""
        from cxsync.agent.hook import run_session_start

        sys.exit(run_session_start(budget=budget))

    @main.group(short_help="Register the MCP server and the SessionStart hook with Claude Code.",
                epilog=_example("cxsync claude install && cxsync claude status"))
    def claude() -> None:
        """Register cxsync's MCP server and SessionStart hook with Claude Code."""

    scope_opt = click.option("--scope", type=click.Choice(["user", "project"]), default="user", show_default=True,
                             help="user: all your projects (~/.claude.json, ~/.claude/settings.json); project: "
                                  "this project, shared with the team (.mcp.json, .claude/settings.json).")
    dir_opt = click.option("--project-dir", type=click.Path(file_okay=False, path_type=Path),
                           help="The project for --scope project (default: the current folder).")

    def _report(rows: list[dict[str, object]], as_json: bool, verb: str) -> None:
        if as_json:
            emit_json(rows)
            return
        for r in rows:
            state = verb if r["changed"] else "unchanged"
            line = f"{r['what']:4} {state:11} {r['file']}"
            if r.get("backup"):
                line += f"  (backup: {r['backup']})"
            click.echo(line)

    @claude.command(short_help="Add the MCP server and the hook (merged, backed up).",
                    epilog=_example("cxsync claude install                    # all your projects",
                                    "cxsync claude install --scope project    # this one, for the team"))
    @scope_opt
    @dir_opt
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
    @click.pass_obj
    def install(obj: Ctx, scope: str, project_dir: Path | None, as_json: bool) -> None:
        """Add the MCP server and the SessionStart hook to Claude Code's settings (merged, backed up, idempotent)."""
        from cxsync.agent import claude_setup

        cfg = obj.config()
        _report(claude_setup.install(cfg.paths.ensure(), scope, project_dir), as_json, "installed")

    @claude.command(short_help="Remove exactly what install added.",
                    epilog=_example("cxsync claude uninstall --scope project"))
    @scope_opt
    @dir_opt
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
    @click.pass_obj
    def uninstall(obj: Ctx, scope: str, project_dir: Path | None, as_json: bool) -> None:
        """Remove exactly what install added; everything else in the files stays as it is."""
        from cxsync.agent import claude_setup

        cfg = obj.config()
        _report(claude_setup.uninstall(cfg.paths.ensure(), scope, project_dir), as_json, "removed")

    @claude.command("status", short_help="Installed, outdated or absent, per scope and file.",
                    epilog=_example("cxsync claude status --json"))
    @dir_opt
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
    def claude_status(project_dir: Path | None, as_json: bool) -> None:
        """Where cxsync is registered with Claude Code: installed, outdated (re-run install) or absent."""
        from cxsync.agent import claude_setup

        rows = [r for s in claude_setup.SCOPES for r in claude_setup.status(s, project_dir)]
        if as_json:
            emit_json(rows)
            return
        for r in rows:
            click.echo(f"{r['scope']:7} {r['what']:4} {r['state']:9} {r['file']}")
