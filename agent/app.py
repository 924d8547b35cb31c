"""Wiring shared by the CLI and the supervisor: the writable cache with its router, the ingestor, the log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxsync.agent.config import Config
from cxsync.agent.discovery import resolve_roots


def identity(cfg: Config) -> Any:
    from cxsync.sync.events import Identity

    return Identity(cfg.identity.tenant, cfg.identity.user, cfg.identity.machine)


def writable_cache(cfg: Config, path: Path | None = None) -> Any:
    from cxsync.cache import open_cache
    from cxsync.sync.events import route

    publish = cfg.sync.publish
    cfg.paths.ensure()
    transform = None
    if cfg.redact.local:
        from cxsync.sync.redact import redact_event

        transform = redact_event
    return open_cache(path or cfg.paths.cache_db, route=lambda e: route(e, publish), transform=transform)


def roots(cfg: Config) -> list[Path]:
    return resolve_roots(cfg.roots)


def ingestor(cfg: Config, cache: Any) -> Any:
    from cxsync.agent.ingest import Ingestor

    return Ingestor(cache, identity(cfg), roots(cfg))


def sync_secret(cfg: Config) -> str | None:
    """The sync credential when the config requires one; NoCredentials (exit 4) when it is missing."""
    if not cfg.sync.needs_credential:
        return None
    from cxsync.agent import credentials
    from cxsync.sync.errors import NoCredentials

    secret = credentials.get_secret(cfg.identity)
    if not secret:
        raise NoCredentials("no sync credential stored for " + credentials.account(cfg.identity),
                            "run `cxsync login` (or set CXSYNC_TOKEN)")
    return secret


def gateway_token(cfg: Config) -> Any:
    """The gateway token, read from CXSYNC_TOKEN or the keyring when the adapter asks (again after a 401, so a
    `cxsync login` is picked up without a restart); None when there is none: the adapter reports needs-auth."""
    from cxsync.agent import credentials
    from cxsync.sync.errors import CxError

    def read() -> str | None:
        try:
            return credentials.get_secret(cfg.identity)
        except CxError:
            return None

    return read


def open_log(cfg: Config, *, lazy: bool = False) -> Any:
    """The configured EventLog; a clear error when sync is not configured.  ``lazy``: an unreachable log is
    opened later by the sync loops instead of failing now (offline at start-up is normal)."""
    from cxsync.sync.errors import ConfigError
    from cxsync.sync.targets import open_log as _open

    if not cfg.sync.enabled:
        raise ConfigError("sync is not configured",
                          f'set [sync] target = "sqlite:/path/to/log.db" (or "fdb") in {cfg.source}, '
                          "or CXSYNC_SYNC_TARGET")
    tls = dict(cfg.sync.tls)
    gateway = cfg.sync.target.split(":", 1)[0].lower() in ("https", "http")
    secret = None if gateway else sync_secret(cfg)
    if secret is not None:
        tls["password"] = secret

    def opener() -> Any:
        return _open(cfg.sync.target, cfg.identity.tenant, api_version=cfg.sync.api_version,
                     tls=tls or None, cluster_file=cfg.sync.cluster_file,
                     token=gateway_token(cfg) if gateway else None)

    if cfg.redact.push:
        from cxsync.sync.redact import RedactingLog

        plain = opener

        def opener() -> Any:  # every append leaves the machine redacted
            return RedactingLog(plain())

    if not lazy:
        return opener()
    from cxsync.sync.lazy import LazyLog
    from cxsync.sync.port import TransientLogError

    log = LazyLog(cfg.identity.tenant, opener)
    try:
        log.connect()  # permanent errors (bad target, no libfdb_c) surface now, at start-up
    except TransientLogError:
        pass  # offline now: the loops retry with backoff
    return log
