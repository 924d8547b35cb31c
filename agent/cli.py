"""The ``cxsync`` command line.  Commands live in topic modules (cli_query, cli_admin, cli_agent, cli_desktop),
each importing its heavy modules inside the command so that ``cxsync status`` starts fast.

Exit codes: 0 ok, 1 error, 2 usage/config, 3 agent not running, 4 no credentials.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Any, NoReturn

import click

from cxsync.sync.errors import CxError

log = logging.getLogger("cxsync")


class Ctx:
    def __init__(self, debug: bool) -> None:
        self.debug = debug

    def config(self, **overrides: Any) -> Any:
        from cxsync.agent.config import load_config

        return load_config({k: v for k, v in overrides.items() if v is not None})


def emit_json(data: Any) -> None:
    from cxsync.agent.render import json_text

    sys.stdout.write(json_text(data) + "\n")


def fail(exc: CxError) -> NoReturn:
    click.echo(f"Error: {exc.title}", err=True)
    if exc.hint:
        click.echo(f"Hint: {exc.hint}", err=True)
    sys.exit(exc.exit_code)


class QuietRepeats(logging.Filter):
    """On the terminal, a warning that repeats (a sync log that stays unreachable, retried every few seconds) is
    printed once per ``window`` seconds; the log file, which has its own handler, keeps every one."""

    _NUMBERS = re.compile(r"\d+(?:\.\d+)?")

    def __init__(self, window: float = 600.0) -> None:
        super().__init__()
        self.window = window
        self.last: dict[tuple[str, str], float] = {}
        self.hidden: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        key = (record.name, self._NUMBERS.sub("#", record.getMessage()))
        now = time.monotonic()
        seen = self.last.get(key)
        if seen is not None and now - seen < self.window:
            self.hidden[key] = self.hidden.get(key, 0) + 1
            return False
        self.last[key] = now
        hidden = self.hidden.pop(key, 0)
        if hidden:
            record.msg = f"{record.msg} ({hidden} similar messages since; every one is in the log file)"
        return True


class CxGroup(click.Group):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # `cxsync query x --debug` means what `cxsync --debug query x` means: move it before the subcommand.
        if ctx.parent is None and "--debug" in args:
            end = args.index("--") if "--" in args else len(args)
            if "--debug" in args[:end]:
                args = ["--debug"] + [a for i, a in enumerate(args) if not (a == "--debug" and i < end)]
        return super().parse_args(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Each command's first sentence in full, wrapped — never cut off with "..."."""
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=1_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except BaseException as exc:  # noqa: BLE001 - every failure gets a title, tracebacks only with --debug
            obj = ctx.obj
            if obj is not None and getattr(obj, "debug", False):
                raise
            if isinstance(exc, CxError):
                fail(exc)
            from cxsync.cache.db import environment_error  # disk full, read-only folder, damaged cache

            known = environment_error(exc)
            if known is not None:
                fail(known)
            log.debug("unexpected error", exc_info=True)
            fail(CxError(f"unexpected error: {type(exc).__name__}: {exc}",
                         "run again with --debug for the traceback, and report it"))


@click.group(cls=CxGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True},
             epilog="Run `cxsync COMMAND --help` for a command's options and an example.  "
                    "--debug may also follow the command.")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.version_option(package_name="cxsync")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """cxsync — capture every Claude Code session, search it offline, sync it across machines."""
    ctx.obj = Ctx(debug)
    level = logging.DEBUG if debug else logging.WARNING
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(level)
    stderr.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if not debug:
        stderr.addFilter(QuietRepeats())
    logging.getLogger().addHandler(stderr)
    logging.getLogger().setLevel(level)
    if os.environ.get("NO_COLOR"):
        os.environ.setdefault("TERM", "dumb")


def _register() -> None:
    from cxsync.agent import (cli_admin, cli_agent, cli_export, cli_knowledge, cli_maintenance, cli_query,
                              cli_recall, cli_serve, cli_stats)

    cli_query.register(main)
    cli_stats.register(main)
    cli_admin.register(main)
    cli_agent.register(main)
    cli_maintenance.register(main)
    cli_knowledge.register(main)
    cli_export.register(main)  # after cli_agent: `resume SESSION` extends the agent's argument-less `resume`
    cli_recall.register(main)
    cli_serve.register(main)
    from cxsync.agent import cli_doctor

    cli_doctor.register(main)
    try:
        from cxsync.agent import cli_desktop
    except ImportError:  # pragma: no cover - the desktop commands ship with the package
        return
    cli_desktop.register(main)


# One example per command, shown under its --help (commands whose docstring has none get it here, so the topic
# modules stay as their owners wrote them).
EXAMPLES = {
    "import": "cxsync import                      # every transcript under ~/.claude\n"
              "cxsync import --root ~/old-claude  # another Claude home",
    "paths": "cxsync paths --json",
    "config": "cxsync config",
    "rebuild": "cxsync stop && cxsync rebuild && cxsync run",
    "status": "cxsync status            # local times, cache size, last sync\ncxsync status --json",
    "run": "cxsync run                # Ctrl-C stops it",
    "pause": "cxsync pause && cxsync resume",
    "resume": "cxsync resume",
    "stop": "cxsync stop",
    "sync-now": "cxsync sync-now",
    "sync": "cxsync sync --once       # without a running agent",
    "tray": "cxsync tray &",
    "login": "cxsync login\nprintf %s \"$TOKEN\" | cxsync login --token-stdin",
    "logout": "cxsync logout",
    "autostart": "cxsync autostart enable\ncxsync autostart status",
    "autostart enable": "cxsync autostart enable --mode xdg   # the tray, in the desktop session",
    "autostart disable": "cxsync autostart disable",
    "autostart status": "cxsync autostart status --json",
    "doctor": "cxsync doctor",
    "stats": "cxsync stats --top 5\ncxsync stats --json",
    "backup list": "cxsync backup list --json",
    "knowledge show": "cxsync knowledge show 3f2a",
    "search": "cxsync search flaky test",
}
_OPTION_HELP = {"as_json": "Print JSON instead of text.", "json": "Print JSON instead of text.",
                "limit": "At most this many."}


def _polish_help(group: click.Group, prefix: str = "") -> None:
    """An example under every command's help, and no option left without a description."""
    for name, cmd in group.commands.items():
        example = EXAMPLES.get(prefix + name)
        if example and "Example" not in (cmd.help or "") and not cmd.epilog:
            cmd.epilog = "\b\nExample:\n" + "\n".join("  " + line for line in example.splitlines())
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.help and param.name in _OPTION_HELP:
                param.help = _OPTION_HELP[param.name]
        if isinstance(cmd, click.Group):
            _polish_help(cmd, prefix + name + " ")


_register()
_polish_help(main)
