"""From the config value ``sync.target`` to an EventLog.

Accepted forms::

    sqlite:PATH          an embedded log in a SQLite file (relative to the current directory, ``~`` expanded)
    fdb                  FoundationDB with the default cluster file
    fdb:CLUSTER_FILE     FoundationDB with that cluster file
    none / ""            sync is not configured (an error: nothing to open)

The FoundationDB adapter is imported only when asked for, so that everything else works without ``libfdb_c``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cxsync.sync.errors import InvalidValue

if TYPE_CHECKING:  # parse_target serves the config, which `cxsync status` loads: no codec imports here
    from cxsync.sync.port import EventLog

CONFIG_HINT = 'cxsync config: [sync] target = "sqlite:/path/log.db"'
ACCEPTED_FORMS = '"sqlite:PATH", "fdb" or "fdb:CLUSTER_FILE"'
_SQLITE_OPTIONS = ("busy_timeout_ms", "notify", "recheck_interval")


@dataclass(frozen=True)
class Target:
    scheme: str  # "none", "sqlite" or "fdb"
    location: str | None = None  # the SQLite file as written, or the FoundationDB cluster file (None: default)


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
    raise InvalidValue(f"unknown sync.target {target!r}: use {ACCEPTED_FORMS}, or none to turn sync off")


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
        return SqliteEventLog(path, tenant, **{k: opts[k] for k in _SQLITE_OPTIONS if k in opts})
    cluster_file = parsed.location or opts.get("cluster_file") or None  # fdb: the only scheme left
    if cluster_file is not None:
        cluster_file = os.path.expanduser(str(cluster_file))
    from cxsync.sync.fdb_log import FdbEventLog  # loads libfdb_c: only here, only when asked for

    return FdbEventLog(tenant, cluster_file=cluster_file, api_version=opts.get("api_version", 730),
                       tls=opts.get("tls"))
