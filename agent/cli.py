"""The ``cxsync`` command line.  Commands live in topic modules (cli_query, cli_admin, cli_agent, cli_desktop),
each importing its heavy modules inside the command so that ``cxsync status`` starts fast.

Exit codes: 0 ok, 1 error, 2 usage/config, 3 agent not running, 4 no credentials.
"""

from __future__ import annotations

import logging
import os
import sys
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
    import orjson

    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n")


def fail(exc: CxError) -> NoReturn:
    click.echo(f"Error: {exc.title}", err=True)
    if exc.hint:
        click.echo(f"Hint: {exc.hint}", err=True)
    sys.exit(exc.exit_code)


class CxGroup(click.Group):
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


@click.group(cls=CxGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    logging.getLogger().addHandler(stderr)
    logging.getLogger().setLevel(level)
    if os.environ.get("NO_COLOR"):
        os.environ.setdefault("TERM", "dumb")


def _register() -> None:
    from cxsync.agent import cli_admin, cli_agent, cli_knowledge, cli_maintenance, cli_query

    cli_query.register(main)
    cli_admin.register(main)
    cli_agent.register(main)
    cli_maintenance.register(main)
    cli_knowledge.register(main)
    try:
        from cxsync.agent import cli_desktop
    except ImportError:  # pragma: no cover - the desktop commands ship with the package
        return
    cli_desktop.register(main)


_register()
