"""The agent and its controls: run, status, pause, resume, sync-now, stop, sync --once."""

from __future__ import annotations

import os
import signal
import sys

import click

from cxsync.agent.cli import Ctx, emit_json


def _fmt_status(s: dict) -> str:  # type: ignore[type-arg]
    from cxsync.agent.status_text import format_status  # local zone, relative times, sizes (issue 13)

    return format_status(s)


def register(main: click.Group) -> None:
    @main.command()
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def status(obj: Ctx, as_json: bool) -> None:
        """Show the agent's state, cache, outbox and sync cursors (works with the agent stopped: exit 3)."""
        from cxsync.agent.status import collect

        s = collect(obj.config())
        if as_json:
            emit_json(s)
        else:
            click.echo(_fmt_status(s))
        if s["state"] == "not-running":
            sys.exit(3)

    @main.command()
    @click.option("--polling", is_flag=True, help="Watch by polling instead of OS notifications.")
    @click.pass_obj
    def run(obj: Ctx, polling: bool) -> None:
        """Run the agent in the foreground until SIGTERM/SIGINT or `cxsync stop`."""
        from cxsync.agent.lock import holder_info
        from cxsync.agent.supervisor import AlreadyRunning, Supervisor

        cfg = obj.config()
        sup = Supervisor(cfg, force_polling=polling or None)

        def on_signal(signum: int, frame: object) -> None:
            sup.stop_event.set()
            who = holder_info(cfg.paths.lock_file)
            if who is None or who.pid != os.getpid():
                # Still waiting for a one-shot command (rebuild, import) to release the cache: nothing has
                # started that needs stopping, and the wait must not outlast the request to stop.
                raise SystemExit(0)

        # Before start(): a SIGTERM that arrives while starting must still mean a clean stop.
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            sup.start()
        except AlreadyRunning as exc:
            click.echo(f"cxsync is already running (pid {exc.pid})")
            return
        click.echo(f"cxsync agent running (pid {os.getpid()}); logs in {cfg.paths.log_file}", err=True)
        while not sup.stop_event.wait(3600):
            pass
        stragglers = sup.stop(timeout=10.0)
        if stragglers:
            click.echo(f"warning: threads did not stop in time: {', '.join(stragglers)}", err=True)

    def _control(name: str, help_text: str) -> None:
        @main.command(name=name, help=help_text)
        @click.option("--json", "as_json", is_flag=True)
        @click.pass_obj
        def cmd(obj: Ctx, as_json: bool) -> None:
            from cxsync.agent.control import send

            reply = send(obj.config().paths, name)
            if as_json:
                emit_json(reply)
            else:
                from cxsync.agent.status_text import control_reply

                click.echo(control_reply(name, reply))

    _control("pause", "Pause capture and sync in the running agent.")
    _control("resume", "Resume capture and sync in the running agent.")
    _control("sync-now", "Ask the running agent to push and pull now.")
    _control("stop", "Stop the running agent.")

    @main.command()
    @click.option("--once", is_flag=True, required=True, help="Push, pull until caught up, then exit.")
    @click.option("--json", "as_json", is_flag=True)
    @click.pass_obj
    def sync(obj: Ctx, once: bool, as_json: bool) -> None:
        """Sync with the event log once: push the outbox, then pull every subscribed stream."""
        from cxsync.agent import app
        from cxsync.agent.cli_admin import _hold
        from cxsync.sync.engine import SyncEngine

        cfg = obj.config()
        event_log = app.open_log(cfg)
        try:
            # The running agent owns the outbox and the cursors: `sync-now` is how to ask it for a sync.
            with _hold(cfg, "sync", "{agent} is running and syncs continuously",
                       "`cxsync sync-now` asks it to push and pull now; `cxsync status` shows its cursors"), \
                    app.writable_cache(cfg) as cache:
                engine = SyncEngine(cache, event_log, tenant=cfg.identity.tenant, subscribe=cfg.sync.subscribe,
                                    batch_events=cfg.sync.batch_events, batch_bytes=cfg.sync.batch_bytes)
                summary = engine.sync_once()
        finally:
            event_log.close()
        if as_json:
            emit_json(summary)
        else:
            pulled = sum(p["applied"] for p in summary["pulled"].values())
            click.echo(f"pushed {summary['pushed']}, pulled {pulled} new events; outbox {summary['outbox']}"
                       + (f", {summary['quarantined']} quarantined" if summary["quarantined"] else ""))
