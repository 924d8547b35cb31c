"""Commands that look after the data itself: migrate (the legacy context.db), verify (cache against log),
backup / backup list / restore-backup."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import click

from cxsync.agent.cli import Ctx, emit_json
from cxsync.sync.errors import CxError, UsageError


class Differences(CxError):
    """``verify`` found differences between the cache and the log (exit 1, after the report)."""


@contextmanager
def _agent_stopped(cfg: Any, doing: str) -> Iterator[None]:
    """Hold the single-instance lock for the whole command, so no agent starts and writes meanwhile."""
    from cxsync.agent.lock import InstanceLock, holder

    cfg.paths.ensure()
    lock = InstanceLock(cfg.paths.lock_file)
    if not lock.acquire():
        pid = holder(cfg.paths.lock_file)
        raise CxError(f"cannot {doing} while the agent is running" + (f" (pid {pid})" if pid and pid > 0 else ""),
                      "stop it with `cxsync stop`, run this again, then start it with `cxsync run`")
    try:
        yield
    finally:
        lock.release()


def _progress(enabled: bool) -> Any:
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("migrating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    transient=True)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _print_migration(d: dict[str, Any]) -> None:
    m, k = d["messages"], d["knowledge"]
    verb = "would bring in" if d["dry_run"] else "brought in"
    click.echo(f"{d['source']}: {verb} {m['new']} of {m['total']} messages and {k['new']} of {k['total']} "
               "knowledge items")
    click.echo(f"  messages: {m['new']} new, {m['already_present']} already captured from transcripts, "
               f"{m['already_migrated']} migrated before, {m['duplicates']} duplicates, {m['refused']} refused")
    click.echo(f"  knowledge: {k['new']} new, {k['already_migrated']} migrated before, {k['duplicates']} duplicates,"
               f" {k['refused']} refused")
    for r in d["refused"][:20]:
        click.echo(f"  refused {r['table']} row {r['id']}: {r['reason']}")
    if len(d["refused"]) > 20:
        click.echo(f"  … and {len(d['refused']) - 20} more refused rows (--json lists them all)")
    for what, ids in d["warnings"].items():
        shown = ", ".join(str(i) for i in ids[:10]) + (" …" if len(ids) > 10 else "")
        click.echo(f"  note: {what} — {len(ids)} row(s): {shown}")


def register(main: click.Group) -> None:
    @main.command()
    @click.option("--from", "source", required=True, type=click.Path(path_type=Path),
                  help="The legacy database (context-storage/context.db).")
    @click.option("--dry-run", is_flag=True, help="Report what would be brought in; change nothing.")
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
    @click.pass_obj
    def migrate(obj: Ctx, source: Path, dry_run: bool, as_json: bool) -> None:
        """Bring the legacy context.db in as events: deduplicated by content hash, idempotent, resumable.

        Rows with bad values are listed with the reason, never dropped silently.  Example:
        `cxsync migrate --from ~/coditect/context-storage/context.db --dry-run`
        """
        from cxsync.agent import app
        from cxsync.agent.migrate import migrate as run

        cfg = obj.config()
        ident = app.identity(cfg)
        if dry_run:
            cache = None
            if cfg.paths.cache_db.exists():
                from cxsync.cache import open_cache

                cache = open_cache(cfg.paths.cache_db, readonly=True)
            try:
                report = run(source, cache, ident, dry_run=True)
            finally:
                if cache is not None:
                    cache.close()
        else:
            with _agent_stopped(cfg, "migrate"), app.writable_cache(cfg) as cache:
                bar = _progress(sys.stderr.isatty() and not as_json)
                if bar is None:
                    report = run(source, cache, ident)
                else:
                    with bar:
                        task = bar.add_task("", total=None)
                        report = run(source, cache, ident,
                                     progress=lambda done, total: bar.update(task, completed=done, total=total))
        d = report.as_dict()
        if as_json:
            emit_json(d)
        else:
            _print_migration(d)

    @main.command()
    @click.option("--stream", "streams", multiple=True, help="Only this stream (repeatable). Default: every "
                  "stream this machine publishes to or subscribes to.")
    @click.option("--repair", is_flag=True, help="Apply what the cache lacks and re-append what the log lost.")
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
    @click.pass_obj
    def verify(obj: Ctx, streams: tuple[str, ...], repair: bool, as_json: bool) -> None:
        """Compare the local cache with the event log, event by event; exit 1 when they differ.

        Example: `cxsync verify --stream u/ada --repair`
        """
        from cxsync.agent import app
        from cxsync.sync.port import validate_stream
        from cxsync.sync.verify import verify as run

        cfg = obj.config()
        chosen = list(dict.fromkeys(streams or (*cfg.sync.publish, *cfg.sync.subscribe)))
        for s in chosen:
            validate_stream(s)
        if not cfg.paths.cache_db.exists():
            raise CxError(f"no cache at {cfg.paths.cache_db}", "run `cxsync import` (and `cxsync sync --once`) first")
        event_log = app.open_log(cfg)
        try:
            with app.writable_cache(cfg) as cache:
                reports = run(cache, event_log, chosen, repair=repair)
        finally:
            event_log.close()
        total = sum(r.differences for r in reports)
        if as_json:
            emit_json({"differences": total, "repaired": repair, "streams": [r.as_dict() for r in reports]})
        else:
            for r in reports:
                click.echo(f"{r.stream}: log {r.log_events} events, cache {r.local_events}"
                           + (f", {r.pending} not pushed yet" if r.pending else "")
                           + (f" — {r.differences} difference(s)" if r.differences else " — identical"))
                for eid in r.missing_local:
                    click.echo(f"  missing from the cache: {eid}")
                for eid in r.missing_in_log:
                    click.echo(f"  acknowledged but missing from the log: {eid}")
                for eid in r.mismatched:
                    click.echo(f"  content differs: {eid}")
                for sid, c in r.sessions.items():
                    click.echo(f"  session {sid}: {c['log']} message events in the log, {c['local']} in the cache")
                if r.repaired:
                    click.echo(f"  repaired: {r.repaired['applied']} applied to the cache, "
                               f"{r.repaired['republished']} re-appended to the log")
        if total and not repair:
            raise Differences(f"{total} difference(s) between the cache and the log",
                              "`cxsync verify --repair` pulls what the cache lacks and re-pushes what the log lost")
        mismatched = sum(len(r.mismatched) for r in reports)
        if repair and mismatched:
            raise Differences(f"{mismatched} event(s) differ in content between the cache and the log",
                              "they were not changed: `cxsync rebuild` after `cxsync sync --once` takes the log's")

    @main.group(invoke_without_command=True)
    @click.option("--to", "dest", type=click.Path(file_okay=False, path_type=Path),
                  help="Folder for backups. Default: [backup] dir in the config, else <data dir>/backups.")
    @click.option("--keep", type=click.IntRange(min=1), default=None,
                  help="Keep only the newest N backups. Default: [backup] keep (7).")
    @click.option("--source", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="Back up another SQLite database instead of the cache (e.g. a gateway's embedded log).")
    @click.option("--json", "as_json", is_flag=True, help="Print the backup's details as JSON.")
    @click.pass_context
    def backup(ctx: click.Context, dest: Path | None, keep: int | None, source: Path | None, as_json: bool) -> None:
        """Take a consistent online snapshot (safe while the agent runs), checked and compressed.

        Examples: `cxsync backup`, `cxsync backup --to /mnt/usb --keep 30`, `cxsync backup list`
        """
        if ctx.invoked_subcommand is not None:
            return
        from cxsync.cache.backup import snapshot

        cfg = ctx.obj.config()
        b = snapshot(source or cfg.paths.cache_db, dest or cfg.backup_dir,
                     keep=keep if keep is not None else cfg.backup.keep)
        if as_json:
            emit_json(b.as_dict())
        else:
            counts = ", ".join(f"{b.manifest[k]} {k}" for k in ("messages", "sessions", "events") if k in b.manifest)
            click.echo(f"backed up to {b.path} ({_human(b.size)}{'; ' + counts if counts else ''})")

    @backup.command("list")
    @click.option("--to", "dest", type=click.Path(file_okay=False, path_type=Path), help="Folder of backups.")
    @click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
    @click.pass_obj
    def backup_list(obj: Ctx, dest: Path | None, as_json: bool) -> None:
        """List the backups, newest first."""
        from cxsync.cache.backup import list_backups

        cfg = obj.config()
        items = list_backups(dest or cfg.backup_dir)
        if as_json:
            emit_json([b.as_dict() for b in items])
            return
        if not items:
            click.echo(f"no backups in {dest or cfg.backup_dir}", err=True)
        for b in items:
            n = b.manifest.get("messages")
            click.echo(f"{b.created_at}  {_human(b.size):>9}  {'' if n is None else f'{n} messages  '}{b.path}")

    @main.command("restore-backup")
    @click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--target", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="The database to replace. Default: the cache.")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def restore_backup(obj: Ctx, file: Path, target: Path | None, as_json: bool) -> None:
        """Replace the cache with a backup, after checking the backup's integrity; the old cache is kept aside.

        Example: `cxsync restore-backup ~/.local/share/cxsync/backups/cache-20261130T120000.000000Z.db.zst`
        """
        from cxsync.cache.backup import restore
        from cxsync.cache.schema import MIGRATIONS

        cfg = obj.config()
        if not file.name.endswith(".db.zst"):
            raise UsageError(f"{file} is not a cxsync backup (*.db.zst)", "`cxsync backup list` shows them")
        with _agent_stopped(cfg, "restore a backup"):
            aside = restore(file, target or cfg.paths.cache_db, newest_schema=MIGRATIONS[-1][0])
        if as_json:
            emit_json({"restored": str(file), "target": str(target or cfg.paths.cache_db),
                       "replaced_kept_at": str(aside) if aside else None})
        else:
            click.echo(f"restored {file} into {target or cfg.paths.cache_db}"
                       + (f"; the replaced database is kept at {aside}" if aside else ""))
