"""Commands that change the cache or show the set-up: import, paths, rebuild, config."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from cxsync.agent.cli import Ctx, emit_json


def _hold(cfg: Any, role: str, agent_title: str, agent_hint: str) -> Any:
    from cxsync.agent.lock import hold

    cfg.paths.ensure()
    return hold(cfg.paths.lock_file, role, agent_title=agent_title, agent_hint=agent_hint)


def register(main: click.Group) -> None:
    @main.command("import")
    @click.option("--root", "roots", multiple=True, type=click.Path(file_okay=False, path_type=Path),
                  help="Transcript root (a Claude home or its projects folder); repeatable. Default: discovered.")
    @click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
    @click.pass_obj
    def import_(obj: Ctx, roots: tuple[Path, ...], as_json: bool) -> None:
        """Capture every transcript under the roots into the cache (one-shot backfill; repeatable)."""
        from cxsync.agent import app
        from cxsync.sync.errors import CxError

        cfg = obj.config(**{"transcripts.roots": [str(r) for r in roots] if roots else None})
        found = [r for r in app.roots(cfg) if r.exists()]
        if not found:
            raise CxError("no transcript folder found: looked in " + ", ".join(str(r) for r in app.roots(cfg)),
                          "pass --root DIR, set CLAUDE_CONFIG_DIR, or [transcripts] roots in the config")
        # One writer per cache: a second one would make the agent's writes fail and its capture stop.
        with _hold(cfg, "import", "{agent} is running and already captures every transcript under its roots",
                   "it read them all at start and watches them (`cxsync status` shows its progress); to import"
                   " another folder, add it to [transcripts] roots and restart the agent, or stop it"
                   " (`cxsync stop`), import, and start it again"), app.writable_cache(cfg) as cache:
            ing = app.ingestor(cfg, cache)
            show_bar = sys.stderr.isatty() and not as_json
            if show_bar:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

                with Progress(TextColumn("importing"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("{task.description}"), transient=True) as bar:
                    task = bar.add_task("", total=None)

                    def progress(tf: object, i: int, n: int) -> None:
                        bar.update(task, completed=i, total=n, description=str(getattr(tf, "path", ""))[-60:])

                    stats = ing.import_all(progress)
            else:
                stats = ing.import_all()
        d = stats.as_dict()
        unreadable = [p for p, _ in ing.problems.unreadable]
        if as_json:
            emit_json({**{k: d[k] for k in ("files", "records", "messages", "sessions", "skipped_lines", "repaired",
                                            "bytes", "errors")}, "unreadable_folders": unreadable})
        else:
            click.echo(f"{d['files']} files, {d['records']} records: {d['messages']} new messages, "
                       f"{d['sessions']} new sessions, {d['skipped_lines']} skipped lines"
                       + (f", {d['repaired']} records with fields of the wrong type" if d["repaired"] else ""))
        for e in ing.problems.messages():  # a file that cannot be read was logged by the ingest, once
            click.echo(f"warning: {e}", err=True)
        if unreadable:
            click.echo(f"warning: {len(unreadable)} folder(s) could not be read; run `cxsync import` again once "
                       "they can be (a running agent picks them up by itself)", err=True)

    @main.command()
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def paths(obj: Ctx, as_json: bool) -> None:
        """Print where cxsync keeps its config, cache, logs and runtime files, and the transcript roots."""
        from cxsync.agent import app
        from cxsync.agent.paths import resolve_paths

        where = resolve_paths()
        if where.config_file.exists():
            cfg = obj.config()
            data = {**cfg.paths.as_dict(), "transcript_roots": [str(r) for r in app.roots(cfg)]}
        else:  # nothing set up yet: say where things will go without creating any of it
            import os

            from cxsync.agent.discovery import resolve_roots

            env_roots = [Path(os.path.expanduser(r)) for r in os.environ.get("CXSYNC_ROOTS", "").split(os.pathsep)
                         if r.strip()]
            data = {**where.as_dict(), "transcript_roots": [str(r) for r in resolve_roots(env_roots or None)]}
        if as_json:
            emit_json(data)
            return
        for k, v in data.items():
            click.echo(f"{k:17} {', '.join(v) if isinstance(v, list) else v}")

    @main.command()
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def config(obj: Ctx, as_json: bool) -> None:
        """Print the effective configuration (file, env and defaults merged)."""
        cfg = obj.config()
        data = cfg.as_dict()
        if as_json:
            emit_json(data)
            return
        import orjson

        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())

    @main.command()
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def rebuild(obj: Ctx, as_json: bool) -> None:
        """Rebuild the cache from its stored events (a fresh database, then swapped in atomically)."""
        from cxsync.agent import app
        from cxsync.cache.rebuild import rebuild_cache

        cfg = obj.config()
        # Held until the new database is in place: an agent started meanwhile waits for it, and then opens the
        # rebuilt cache instead of writing into the one being swapped out.
        with _hold(cfg, "rebuild", "{agent} is running", "stop it first: `cxsync stop`"):
            stats = rebuild_cache(cfg.paths.cache_db, lambda p: app.writable_cache(cfg, p))
        if as_json:
            emit_json(stats)
        else:
            click.echo(f"rebuilt {stats['events']} events into {stats['messages']} messages in "
                       f"{stats['sessions']} sessions")
