"""fdbemu: the official ``foundationdb`` Python binding running on an in-memory FoundationDB.

The binding's pure-Python layers - ``fdb/impl.py`` itself, ``fdb.tuple`` (versionstamps included),
``fdb.Subspace``, the directory layer, ``fdb.transactional`` - run unchanged; only ``libfdb_c`` is emulated
(:mod:`.capi`), with the cluster behind it in :mod:`.cluster` and the client transaction in
:mod:`.transaction`.  Usage::

    from tests.fdbemu import install, cluster_for, reset_all, FaultPlan
    fdb = install()                      # API 730, or $CXSYNC_FDB_API_VERSION, or install(800)
    db = fdb.open("/tmp/x.cluster")      # the file need not exist; same path = same cluster
    cluster_for("/tmp/x.cluster").set_faults(FaultPlan(commit_failure_rate=0.1, unknown_result_fraction=1/3))
"""

from __future__ import annotations

import os
import sys
import threading
import types
from typing import Any, Optional

from .binding import is_emulated, load_impl
from .capi import LIB, MAX_API_VERSION, MIN_API_VERSION
from .cluster import Cluster, FaultPlan, PathLike, Stats, forget_all
from .cluster import cluster_for as _cluster_for

__all__ = ["install", "cluster_for", "reset_all", "open_client", "live_handles", "FaultPlan", "Cluster", "Stats",
           "DEFAULT_API_VERSION", "ENV_API_VERSION", "MIN_API_VERSION", "MAX_API_VERSION"]

DEFAULT_API_VERSION = 730
ENV_API_VERSION = "CXSYNC_FDB_API_VERSION"

_install_lock = threading.Lock()


def install(api_version: Optional[int] = None) -> types.ModuleType:
    """Put the emulated native layer under ``fdb.impl`` and select the API version; returns ``fdb``.

    ``api_version`` defaults to ``$CXSYNC_FDB_API_VERSION``, else 730.  Works whether or not ``fdb`` was
    imported; idempotent for the same version; a different second version raises ``RuntimeError`` exactly
    as the real ``fdb.api_version`` does.
    """
    with _install_lock:
        import fdb

        if api_version is None:
            api_version = int(os.environ.get(ENV_API_VERSION, "").strip() or DEFAULT_API_VERSION)
        load_impl()
        fdb.api_version(api_version)
        module: types.ModuleType = fdb
        return module


def cluster_for(cluster_file: PathLike = None) -> Cluster:
    """The emulated cluster behind a cluster-file path (``None``: the default cluster file)."""
    return _cluster_for(cluster_file)


def reset_all() -> None:
    """Forget every cluster: the next ``fdb.open``/``cluster_for`` of any path starts empty.

    Also empties ``fdb.open``'s per-path Database cache.  Database objects opened before keep using their old,
    now unreachable cluster; its outstanding watches fail with 1101 (operation_cancelled).
    """
    impl = sys.modules.get("fdb.impl")
    if impl is not None and is_emulated(impl):
        with impl.cacheLock:
            impl.open_databases.clear()
    forget_all()


def open_client(cluster_file: PathLike = None) -> Any:
    """A new, separate ``fdb.Database`` (another client) on the cluster of ``cluster_file``.

    ``fdb.open`` caches one Database per path; this is ``fdb.impl.create_database``, after starting the
    network the way ``fdb.open`` does.
    """
    impl = sys.modules.get("fdb.impl")
    if impl is None or not is_emulated(impl):
        raise RuntimeError("fdbemu: call install() first")
    with impl._network_thread_reentrant_lock:
        if not impl._network_thread:
            impl.init()
    if cluster_file is not None and not isinstance(cluster_file, (str, bytes)):
        cluster_file = os.fspath(cluster_file)
    return impl.create_database(cluster_file)


def live_handles() -> int:
    """Native handles (futures, transactions, databases) not yet destroyed: a leak probe for tests."""
    return LIB.live_handles()
