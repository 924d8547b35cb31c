"""Gateway commands: ``cxsync serve`` and ``cxsync token create|list|revoke|quota``.

Both name the server's log with ``--log`` (or ``CXSYNC_SERVE_LOG``): ``sqlite:PATH`` (default: ``gateway/log.db``
in the data folder) or ``fdb:CLUSTER_FILE``.  Token commands talk to that backend directly, so they work whether
or not a server runs, and every server over the backend sees their effect at once.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from cxsync.sync.errors import UsageError

ENV_LOG = "CXSYNC_SERVE_LOG"


def _default_log() -> str:
    env = os.environ.get(ENV_LOG, "").strip()
    if env:
        return env
    from cxsync.agent.paths import resolve_paths

    return f"sqlite:{resolve_paths().data_dir / 'gateway' / 'log.db'}"


_log_option = click.option("--log", "log_target", default=None, metavar="TARGET",
                           help=f"the server's log: sqlite:PATH or fdb:CLUSTER_FILE (env {ENV_LOG}; default: "
                                "sqlite in the data folder)")


@click.command("serve")
@_log_option
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on (0.0.0.0: all)")
@click.option("--port", default=8443, show_default=True, type=click.IntRange(1, 65535), help="port to listen on")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="PEM certificate (chain)")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="PEM private key")
@click.option("--behind-proxy", is_flag=True,
              help="trust X-Forwarded-* from --forwarded-allow-ips (TLS is ended by the proxy)")
@click.option("--forwarded-allow-ips", default="127.0.0.1", show_default=True,
              help="with --behind-proxy: the proxy addresses whose X-Forwarded-* headers are trusted")
@click.option("--max-body-mb", default=16, show_default=True, type=click.IntRange(1, 1024),
              help="largest request body accepted (413 above)")
@click.option("--api-version", default=730, show_default=True, type=int, help="FoundationDB API version")
def serve_command(log_target: str | None, host: str, port: int, tls_cert: str | None, tls_key: str | None,
                  behind_proxy: bool, forwarded_allow_ips: str, max_body_mb: int, api_version: int) -> None:
    """Run the sync gateway: agents sync through it with a token (sync.target = "https://host:port").

    Example: `cxsync serve --host 0.0.0.0 --tls-cert fullchain.pem --tls-key privkey.pem`
    """
    import uvicorn

    from cxsync.sync.gateway import Limits, create_app, open_backend
    from cxsync.sync.targets import is_loopback

    if bool(tls_cert) != bool(tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    if not tls_cert and not behind_proxy and not is_loopback(host):
        raise UsageError(f"refusing to serve plain http on {host}: tokens and transcripts would cross the network"
                         " unencrypted",
                         "give --tls-cert/--tls-key, or run behind a TLS reverse proxy with --behind-proxy")
    target = log_target or _default_log()
    opener, store = open_backend(target, api_version=api_version)
    app = create_app(opener, store, Limits(max_body_bytes=max_body_mb << 20))
    scheme = "https" if tls_cert else "http"
    click.echo(f"cxsync gateway on {scheme}://{host}:{port} over {target}", err=True)
    uvicorn.run(app, host=host, port=port, ssl_certfile=tls_cert, ssl_keyfile=tls_key,
                proxy_headers=behind_proxy, forwarded_allow_ips=forwarded_allow_ips if behind_proxy else None,
                timeout_graceful_shutdown=5, server_header=False, log_level="info")


@click.group("token")
def token_group() -> None:
    """Create, list and revoke gateway tokens (run on the server, or anywhere that reaches its backend).

    Example: `cxsync token create --tenant acme --user alice --project web`
    """


def _store(log_target: str | None) -> Any:
    from cxsync.sync.gateway import open_backend

    return open_backend(log_target or _default_log())[1]


@token_group.command("create")
@_log_option
@click.option("--tenant", required=True, help="the organisation the token acts in")
@click.option("--user", required=True, help="the user the token acts as")
@click.option("--project", "projects", multiple=True, help="a project the token is a member of (repeat)")
@click.option("--expires", default="90d", show_default=True, help="lifetime: 90d, 12h, 2w; 'never' for none")
@click.option("--service", is_flag=True, help="every stream of the tenant (backups, mirrors): use sparingly")
@click.option("--label", default="", help="a note shown by `token list` (which machine, whose)")
@click.option("--json", "as_json", is_flag=True, help="Print the token and its record as JSON.")
def token_create(log_target: str | None, tenant: str, user: str, projects: tuple[str, ...], expires: str,
                 service: bool, label: str, as_json: bool) -> None:
    """Create a token; it is printed once and stored only as a hash.

    Example: `cxsync token create --tenant acme --user alice --expires 30d --label laptop`
    """
    from cxsync.sync.tokens import create_token, parse_duration

    lifetime = None if expires.strip().lower() == "never" else parse_duration(expires)
    store = _store(log_target)
    try:
        token, record = create_token(store, tenant, user, projects, service=service, expires_in=lifetime,
                                     label=label)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"token": token, **record.public()}, indent=2))
        return
    click.echo(token)
    click.echo(f"token {record.token_id} for {user}@{tenant}, expires {record.public()['expires_at'] or 'never'}."
               " It is shown only now: give it to `cxsync login --gateway URL` on the user's machines.", err=True)


@token_group.command("list")
@_log_option
@click.option("--tenant", default=None, help="only this tenant (required with a FoundationDB backend)")
@click.option("--json", "as_json", is_flag=True, help="Print the tokens as JSON.")
def token_list(log_target: str | None, tenant: str | None, as_json: bool) -> None:
    """List tokens (never their secret).

    Example: `cxsync token list --tenant acme`
    """
    store = _store(log_target)
    try:
        records = [r.public() for r in store.list_tokens(tenant)]
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    for r in records:
        scope = "service" if r["service"] else ",".join(["u/" + r["user"], "team", *("p/" + p for p in r["projects"])])
        click.echo(f"{r['id']}  {r['tenant']}/{r['user']}  {r['state']:<7}  expires {r['expires_at'] or 'never'}"
                   f"  {scope}  {r['label']}")


@token_group.command("revoke")
@_log_option
@click.option("--tenant", required=True, help="the tenant the token belongs to")
@click.argument("token_id")
def token_revoke(log_target: str | None, tenant: str, token_id: str) -> None:
    """Revoke a token at once (open long-polls included) on every server over this backend.

    Example: `cxsync token revoke --tenant acme 8d461728d815cbe0`
    """
    import time

    store = _store(log_target)
    try:
        found = store.revoke(tenant, token_id, time.time())
    finally:
        store.close()
    if not found:
        raise UsageError(f"no token {token_id!r} in tenant {tenant!r}", "see `cxsync token list --tenant T`")
    click.echo(f"revoked {token_id}", err=True)


@token_group.command("quota")
@_log_option
@click.option("--tenant", required=True, help="the tenant whose quota is shown or set")
@click.option("--events-per-day", type=click.IntRange(0), default=None, help="events accepted per UTC day")
@click.option("--bytes", "nbytes", type=click.IntRange(0), default=None, help="bytes stored")
@click.option("--json", "as_json", is_flag=True, help="Print quota and usage as JSON.")
def token_quota(log_target: str | None, tenant: str, events_per_day: int | None, nbytes: int | None,
                as_json: bool) -> None:
    """Show a tenant's quota and usage; set it with --events-per-day / --bytes.

    Example: `cxsync token quota --tenant acme --events-per-day 200000`
    """
    import time

    from cxsync.sync.tokens import Quota

    store = _store(log_target)
    try:
        if events_per_day is not None or nbytes is not None:
            old = store.get_quota(tenant)
            store.set_quota(tenant, Quota(events_per_day if events_per_day is not None else old.events_per_day,
                                          nbytes if nbytes is not None else old.bytes_stored))
        quota, usage = store.get_quota(tenant), store.usage(tenant, time.time())
    finally:
        store.close()
    info = {"tenant": tenant, "events_per_day": quota.events_per_day, "bytes_stored": quota.bytes_stored,
            "events_today": usage.events_today, "bytes_used": usage.bytes_stored}
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            click.echo(f"{k:<15} {'unlimited' if v is None else v}")


def register(main: click.Group) -> None:
    main.add_command(serve_command)
    main.add_command(token_group)


__all__ = ["register"]
