"""``make_log``: one factory per EventLog adapter; every contract test runs on each of them.

``make_log(tenant="acme")`` opens a new client of ONE log shared by the whole test (same file, same cluster), so
several clients behave like several processes or machines.  Every client is closed after the test.

Adapters:
  model     the in-memory reference (tests/contract/model.py) — keeps the model honest against the contract
  sqlite    SqliteEventLog on a file in tmp_path
  fdb-emu   FdbEventLog on the FoundationDB emulation (tests/fdbemu); skipped while either is not in the tree
  gateway   HttpEventLog through a real `cxsync serve` app (uvicorn on 127.0.0.1, sqlite backend), one service
            token per tenant
  fdb-real  FdbEventLog on the cluster named by CXSYNC_FDB_CLUSTER_FILE (marker fdb_real), a fresh tenant per
            test, cleared afterwards
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Callable, Iterator, NoReturn

import pytest

from cxsync.sync.port import EventLog, validate_name
from tests.contract.model import ModelLog, ModelStore
from tests.helpers import assert_no_new_threads

LogFactory = Callable[..., EventLog]
Builder = Callable[[str], EventLog]

FDB_API_VERSION = int(os.environ.get("CXSYNC_FDB_API_VERSION", "730"))
FDB_CLUSTER_ENV = "CXSYNC_FDB_CLUSTER_FILE"


def _model(tmp_path: Path) -> tuple[Builder, Callable[[], None]]:
    store = ModelStore()
    return (lambda tenant: ModelLog(store, tenant)), (lambda: None)


def _sqlite(tmp_path: Path) -> tuple[Builder, Callable[[], None]]:
    from cxsync.sync.sqlite_log import SqliteEventLog

    path = tmp_path / "log.db"
    return (lambda tenant: SqliteEventLog(path, tenant)), (lambda: None)


def _skip_if_absent(exc: ImportError, module: str, what: str) -> NoReturn:
    """Skip while ``module`` (or a piece of it) is missing or half-written; fail on anything else it lacks."""
    if exc.name is None or (exc.name != module and not exc.name.startswith(module + ".")):
        raise exc  # e.g. a third-party package it needs: that is a failure, not a reason to skip
    pytest.skip(f"{what} ({module}) is not importable yet: {exc}")


def _fdb_emu(tmp_path: Path) -> tuple[Builder, Callable[[], None]]:
    if os.environ.get(FDB_CLUSTER_ENV):
        # The emulation replaces the binding's native layer for the whole process: it cannot share a run with
        # the real libfdb_c.  Compare the two with tests.contract.model.transcript_json across two runs.
        pytest.skip(f"{FDB_CLUSTER_ENV} is set: this run talks to a real cluster; run without it for the emulation")
    try:
        from tests.fdbemu import install, reset_all
    except ImportError as exc:
        _skip_if_absent(exc, "tests.fdbemu", "the FoundationDB emulation")
    install(api_version=FDB_API_VERSION)
    try:
        from cxsync.sync.fdb_log import FdbEventLog
    except ImportError as exc:
        _skip_if_absent(exc, "cxsync.sync.fdb_log", "the FoundationDB adapter")
    cluster_file = str(tmp_path / "fdb.cluster")
    return (lambda tenant: FdbEventLog(tenant, cluster_file=cluster_file, api_version=FDB_API_VERSION)), reset_all


def _fdb_real(tmp_path: Path) -> tuple[Builder, Callable[[], None]]:
    cluster_file = os.environ.get(FDB_CLUSTER_ENV)
    if not cluster_file:
        pytest.skip(f"needs a real FoundationDB cluster: set {FDB_CLUSTER_ENV} to its cluster file")
    from cxsync.sync.fdb_log import FdbEventLog

    run = uuid.uuid4().hex[:10]
    tenants: dict[str, str] = {}

    def build(tenant: str) -> EventLog:
        # A fresh tenant per test and name: runs never see each other's leftovers.
        try:
            real = tenants.setdefault(validate_name("tenant", tenant), f"t{run}-{tenant}")
        except ValueError:
            real = tenant  # let the adapter refuse it
        return FdbEventLog(real, cluster_file=cluster_file, api_version=FDB_API_VERSION)

    return build, lambda: _purge_fdb_tenants(cluster_file, list(tenants.values()))


def _purge_fdb_tenants(cluster_file: str, tenants: list[str]) -> None:
    """Clear the test tenants' keys (the key prefixes of ARCHITECTURE.md: tenant first after the fixed part)."""
    import fdb  # the real binding; FdbEventLog has already selected the API version

    db = fdb.open(cluster_file)
    for tenant in tenants:
        for prefix in (("coditect", "events", tenant), ("coditect", "context", "tenants", tenant)):
            r = fdb.tuple.range(prefix)
            db.clear_range(r.start, r.stop)


def _gateway(tmp_path: Path) -> tuple[Builder, Callable[[], None]]:
    from cxsync.sync.http_log import HttpEventLog
    from cxsync.sync.tokens import create_token
    from tests.gateway_servers import ThreadServer, sqlite_backend

    opener, store = sqlite_backend(tmp_path)
    server = ThreadServer(opener, store).__enter__()
    tokens: dict[str, str] = {}

    def build(tenant: str) -> EventLog:
        validate_name("tenant", tenant)
        if tenant not in tokens:
            tokens[tenant] = create_token(store, tenant, "contract", service=True)[0]
        return HttpEventLog(server.url, tenant, tokens[tenant])

    return build, server.stop


_ADAPTERS = {"model": _model, "sqlite": _sqlite, "fdb-emu": _fdb_emu, "fdb-real": _fdb_real, "gateway": _gateway}
_THREADLESS = {"model", "sqlite"}  # the FDB binding keeps a network thread for the life of the process


@pytest.fixture(params=["model", "sqlite", "fdb-emu", "gateway", pytest.param("fdb-real", marks=pytest.mark.fdb_real)])
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_log(adapter: str, tmp_path: Path) -> Iterator[LogFactory]:
    threads_before = set(threading.enumerate())
    build, cleanup = _ADAPTERS[adapter](tmp_path)
    opened: list[EventLog] = []

    def make(tenant: str = "acme") -> EventLog:
        log = build(tenant)
        opened.append(log)
        return log

    try:
        yield make
    finally:
        for log in opened:
            log.close()
        cleanup()
    if adapter in _THREADLESS:
        assert_no_new_threads(threads_before)
