"""Desktop commands: ``cxsync tray``, ``login``, ``logout`` and ``autostart enable|disable|status``.

``register(main)`` adds them to the CLI root.  pystray, Pillow and keyring are imported inside the commands, so
importing this module costs nothing and ``cxsync status`` never needs the tray extra.  Failures are raised as
``CxError``s; the root prints title and hint and exits with the error's code.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from cxsync.sync.errors import CxError, UsageError

if TYPE_CHECKING:
    from cxsync.agent.config import Config


def _config(ctx: click.Context) -> Config:
    """The root's loaded config when it put one on the context (``obj.config`` or ``obj["config"]``), else load."""
    from cxsync.agent.config import Config, load_config

    obj = ctx.find_root().obj
    cfg = obj.get("config") if isinstance(obj, dict) else getattr(obj, "config", None)
    if callable(cfg) and not isinstance(cfg, Config):
        cfg = cfg()
    return cfg if isinstance(cfg, Config) else load_config()


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def _note(message: str) -> None:
    click.echo(message, err=True)


@click.command("tray")
@click.pass_context
def tray_command(ctx: click.Context) -> None:
    """Run the agent with a tray icon (needs a graphical session)."""
    from cxsync.tray.app import run_tray

    cfg = _config(ctx)
    _note(f"cxsync tray started (pid {os.getpid()}); quit from its menu or with `cxsync stop`. "
          f"Logs: {cfg.paths.log_file}")
    code = run_tray(cfg)
    if code:
        ctx.exit(code)


@click.command("login")
@click.option("--token-stdin", is_flag=True, help="Read the credential from standard input instead of a prompt.")
@click.option("--gateway", "gateway_url", default=None, metavar="URL",
              help="Sync through this `cxsync serve` gateway: check the token there, store it, set sync.target.")
@click.option("--tls-ca", default=None, type=click.Path(exists=True, dir_okay=False),
              help="With --gateway: the CA that signed the gateway's certificate (else the system CAs).")
@click.pass_context
def login_command(ctx: click.Context, token_stdin: bool, gateway_url: str | None, tls_ca: str | None) -> None:
    """Store the sync credential (FDB TLS key passphrase or gateway token) in the OS keyring."""
    from cxsync.agent import credentials

    cfg = _config(ctx)
    if not os.environ.get(credentials.ENV_TOKEN, "").strip():
        # Ask the keyring first: a missing or locked keyring is NoCredentials now, not after the secret is typed.
        credentials.get_secret(cfg.identity)
    if gateway_url is not None:
        _login_gateway(cfg, gateway_url, tls_ca, token_stdin)
        return
    if token_stdin:
        secret = sys.stdin.read().strip()
    else:
        secret = click.prompt(f"Credential for {credentials.account(cfg.identity)} "
                              "(FDB TLS key passphrase or gateway token)", hide_input=True,
                              default="", show_default=False, err=True).strip()
    if not secret:
        raise UsageError("no credential given", "type or paste it at the prompt, or pipe it to --token-stdin")
    credentials.set_secret(cfg.identity, secret)
    _note(f"Stored the credential for {credentials.account(cfg.identity)} in "
          f"{credentials.backend_name()}.")
    if os.environ.get(credentials.ENV_TOKEN, "").strip():
        _note(f"Note: {credentials.ENV_TOKEN} is set in this environment and takes precedence over the keyring.")
    _nudge_agent(cfg)


def _login_gateway(cfg: Config, url: str, tls_ca: str | None, token_stdin: bool) -> None:
    """Ask the gateway who the token is, adopt that tenant and user, store the token, point sync.target at it."""
    from cxsync.agent import credentials
    from cxsync.agent.config import Identity
    from cxsync.sync.http_log import HttpEventLog
    from cxsync.sync.targets import check_url
    from cxsync.sync.port import LogError

    url = check_url(url)
    if token_stdin:
        token = sys.stdin.read().strip()
    else:
        token = click.prompt(f"Gateway token for {url}", hide_input=True, default="", show_default=False,
                             err=True).strip()
    if not token:
        raise UsageError("no token given", "paste the token `cxsync token create` printed, or pipe it to --token-stdin")
    probe = HttpEventLog(url, cfg.identity.tenant, token, tls_ca=tls_ca)
    try:
        who = probe.whoami()
    except LogError as exc:
        raise CxError(f"the gateway did not accept the token: {exc.title}", exc.hint) from None
    finally:
        probe.close()
    identity = Identity(str(who["tenant"]), str(who["user"]), cfg.identity.machine)
    credentials.set_secret(identity, token)
    changes = {"identity.tenant": identity.tenant, "identity.user": identity.user, "sync.target": url}
    if tls_ca:
        changes["sync.tls_ca"] = os.path.abspath(tls_ca)
    if not cfg.sync.publish and not cfg.sync.subscribe or identity.user != cfg.identity.user:
        changes["sync.publish"] = [f"u/{identity.user}"]  # type: ignore[assignment]
        changes["sync.subscribe"] = [f"u/{identity.user}", "team", *(f"p/{p}" for p in who.get("projects", []))]  # type: ignore[assignment]
    _update_config(cfg, changes)
    _note(f"Logged in to {url} as {identity.user}@{identity.tenant}; token stored in {credentials.backend_name()},"
          f" sync.target set in {cfg.source}.")
    if os.environ.get(credentials.ENV_TOKEN, "").strip():
        _note(f"Note: {credentials.ENV_TOKEN} is set in this environment and takes precedence over the keyring.")
    _nudge_agent(cfg)


def _update_config(cfg: Config, changes: dict[str, Any]) -> None:
    """Set dotted keys in config.toml (the previous file is kept as config.toml.bak; comments are not kept)."""
    import tomli_w

    from cxsync.agent.paths import secure_file

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    path = cfg.source
    data: dict[str, Any] = {}
    if path.exists():
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        backup = path.with_name(path.name + ".bak")
        backup.write_bytes(path.read_bytes())
        secure_file(backup)
    for dotted, value in changes.items():
        section, _, key = dotted.partition(".")
        data.setdefault(section, {})[key] = value
    tmp = path.with_suffix(".tmp")
    tmp.write_text("# cxsync configuration — see `cxsync paths` and the README\n" + tomli_w.dumps(data),
                   encoding="utf-8")
    secure_file(tmp)
    os.replace(tmp, path)


def _nudge_agent(cfg: Config) -> None:
    """A running agent waiting for a credential retries now rather than at its next backoff step."""
    try:
        from cxsync.agent import control
    except ImportError:
        return
    try:
        control.send(cfg.paths, "sync-now", timeout=1.0)
    except CxError:
        pass  # no agent running: it reads the keyring when it starts


@click.command("logout")
@click.pass_context
def logout_command(ctx: click.Context) -> None:
    """Remove the sync credential from the OS keyring."""
    from cxsync.agent import credentials

    cfg = _config(ctx)
    who = credentials.account(cfg.identity)
    if credentials.delete_secret(cfg.identity):
        _note(f"Removed the credential for {who} from the OS keyring.")
    else:
        _note(f"No credential for {who} was stored in the OS keyring.")
    if os.environ.get(credentials.ENV_TOKEN, "").strip():
        _note(f"Note: {credentials.ENV_TOKEN} is still set in this environment and still provides a credential.")


@click.group("autostart")
def autostart_group() -> None:
    """Start cxsync at login (systemd user unit, XDG autostart, LaunchAgent, Startup folder)."""


_MODES = click.Choice(["auto", "systemd", "xdg", "launchd", "windows"])


@autostart_group.command("enable")
@click.option("--mode", type=_MODES, default="auto", show_default=True,
              help="Linux: 'systemd' runs the headless agent as a user unit, 'xdg' the tray in the desktop session.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def autostart_enable(ctx: click.Context, mode: str, as_json: bool) -> None:
    """Install the autostart entry for this platform."""
    from cxsync.agent import autostart

    cfg = _config(ctx)
    path = autostart.enable(cfg.paths, mode=mode)
    if as_json:
        _emit_json({"enabled": True, "path": str(path)})
    else:
        click.echo(str(path))
        _note("cxsync will start at your next login.")


@autostart_group.command("disable")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def autostart_disable(ctx: click.Context, as_json: bool) -> None:
    """Remove every cxsync autostart entry."""
    from cxsync.agent import autostart

    removed = autostart.disable(_config(ctx).paths)
    if as_json:
        _emit_json({"removed": [str(p) for p in removed]})
    elif removed:
        for p in removed:
            click.echo(str(p))
        _note("Autostart disabled; a running agent keeps running until you quit it or log out.")
    else:
        _note("Autostart was not enabled.")


@autostart_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def autostart_status(ctx: click.Context, as_json: bool) -> None:
    """Show which autostart entries are installed and what they run."""
    from cxsync.agent import autostart

    info = autostart.status(_config(ctx).paths)
    if as_json:
        _emit_json(info)
        return
    click.echo(f"autostart: {'enabled (' + ', '.join(info['kinds']) + ')' if info['enabled'] else 'disabled'}")
    for entry in info["entries"]:
        mark = "installed" if entry["installed"] else "absent"
        line = f"  {entry['kind']:<8} {mark:<9} {entry['path']}"
        if entry.get("stale"):
            line += f"  (stale: {entry['executable']} no longer exists — run `cxsync autostart enable` again)"
        click.echo(line)


def register(main: click.Group) -> None:
    """Add the desktop commands to the CLI root."""
    for command in (tray_command, login_command, logout_command, autostart_group):
        main.add_command(command)


__all__ = ["register"]
