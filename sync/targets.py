"""From the config value ``sync.target`` to an EventLog.

Accepted forms::

    sqlite:PATH          an embedded log in a SQLite file (relative to the current directory, ``~`` expanded);
                         refused on a network filesystem (SQLite's WAL there can corrupt): use ``cxsync serve``
    https://HOST:PORT    a ``cxsync serve`` gateway (``http://`` only on loopback); ``token`` and ``tls_ca`` opts
    fdb                  FoundationDB with the default cluster file
    fdb:CLUSTER_FILE     FoundationDB with that cluster file
    none / ""            sync is not configured (an error: nothing to open)

The FoundationDB adapter is imported only when asked for, so that everything else works without ``libfdb_c``.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cxsync.sync.errors import InvalidValue

if TYPE_CHECKING:  # parse_target serves the config, which `cxsync status` loads: no codec imports here
    from cxsync.sync.port import EventLog

CONFIG_HINT = 'cxsync config: [sync] target = "sqlite:/path/log.db"'
ACCEPTED_FORMS = '"sqlite:PATH", "https://gateway:port", "fdb" or "fdb:CLUSTER_FILE"'
_SQLITE_OPTIONS = ("busy_timeout_ms", "notify", "recheck_interval")


@dataclass(frozen=True)
class Target:
    scheme: str  # "none", "sqlite", "https" (a gateway, http:// included) or "fdb"
    location: str | None = None  # the SQLite file as written, the gateway URL, or the FoundationDB cluster file


def parse_target(target: str) -> Target:
    """The one reading of a ``sync.target`` value; InvalidValue for anything but the accepted forms."""
    spec = (target or "").strip()
    if spec.lower() in ("", "none"):
        return Target("none")
    scheme, _, rest = spec.partition(":")
    scheme, rest = scheme.lower(), rest.strip()
    if scheme == "sqlite":
        if not rest:
            raise InvalidValue(f"sync.target {target!r} names no file: use {ACCEPTED_FORMS}")
        return Target("sqlite", rest)
    if scheme == "fdb":
        return Target("fdb", rest or None)
    if scheme in ("https", "http"):
        return Target("https", check_url(spec))
    raise InvalidValue(f"unknown sync.target {target!r}: use {ACCEPTED_FORMS}, or none to turn sync off")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str) -> str:
    """The gateway's base URL; refuses plain http beyond loopback, credentials and paths in it."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidValue(f"sync.target {url!r} is not a gateway URL: use https://host:port")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise InvalidValue(f"sync.target {url!r} uses plain http to another machine: the token and your "
                           "transcripts would cross the network unencrypted; use https://")
    if parts.username or parts.password or parts.query or parts.fragment or parts.path not in ("", "/"):
        raise InvalidValue(f"sync.target {url!r}: give only scheme, host and port (the token goes in the keyring)")
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidValue(f"sync.target {url!r}: {exc}") from None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def open_log(target: str, tenant: str, **opts: Any) -> EventLog:
    """Open the log ``target`` names for ``tenant``.

    ``opts`` may carry options of either adapter (the config passes them all): the SQLite log takes
    ``busy_timeout_ms``, ``notify`` and ``recheck_interval``; FoundationDB takes ``api_version`` (default 730),
    ``tls`` and ``cluster_file`` (used when the target names none).  Others are ignored.
    """
    parsed = parse_target(target)
    if parsed.scheme == "none":
        raise InvalidValue(f"sync is not configured (sync.target is {target!r}); set it with: {CONFIG_HINT}")
    if parsed.scheme == "sqlite":
        assert parsed.location is not None
        from cxsync.sync.sqlite_log import SqliteEventLog

        path = Path(os.path.expanduser(parsed.location))
        if not path.is_absolute():
            path = Path.cwd() / path
        refuse_network_filesystem(path)
        return SqliteEventLog(path, tenant, **{k: opts[k] for k in _SQLITE_OPTIONS if k in opts})
    if parsed.scheme == "https":
        from cxsync.sync.http_log import HttpEventLog

        tls = opts.get("tls") or {}
        return HttpEventLog(str(parsed.location), tenant, opts.get("token"),
                            tls_ca=opts.get("tls_ca") or tls.get("ca"))
    cluster_file = parsed.location or opts.get("cluster_file") or None  # fdb: the only scheme left
    if cluster_file is not None:
        cluster_file = os.path.expanduser(str(cluster_file))
    from cxsync.sync.fdb_log import FdbEventLog  # loads libfdb_c: only here, only when asked for

    return FdbEventLog(tenant, cluster_file=cluster_file, api_version=opts.get("api_version", 730),
                       tls=opts.get("tls"))


def refuse_network_filesystem(path: Path) -> None:
    """An embedded log on NFS, SMB or sshfs can corrupt: say so, and name what to use instead."""
    from cxsync.sync.netfs import network_filesystem

    fstype = network_filesystem(path)
    if fstype is not None:
        raise InvalidValue(
            f"sync.target sqlite:{path} is on a network filesystem ({fstype}): SQLite's WAL needs shared memory"
            " and can corrupt or lose events there",
            "to sync machines, run `cxsync serve` on one host (its log on a local disk) and point every agent at"
            ' it: sync.target = "https://host:8443" (see README, "Sync your machines")',
        )
