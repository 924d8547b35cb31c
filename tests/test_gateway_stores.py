"""Token and quota stores, on each backend a gateway runs over (the embedded log's sidecar file, FoundationDB on
the emulation): two stores over one backend — as two `cxsync serve` processes — see each other's writes at once."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from cxsync.sync.gateway import open_backend
from cxsync.sync.tokens import (
    GatewayStore,
    Quota,
    QuotaRefused,
    TokenError,
    authenticate,
    create_token,
    parse_duration,
    parse_token,
)

StorePair = tuple[GatewayStore, GatewayStore]


@pytest.fixture(params=["sqlite", "fdb-emu"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:{tmp_path / 'log.db'}"
        return
    if os.environ.get("CXSYNC_FDB_CLUSTER_FILE"):
        pytest.skip("a real cluster is configured: the emulation cannot share the process")
    from tests.fdbemu import install, reset_all

    install(api_version=int(os.environ.get("CXSYNC_FDB_API_VERSION", "730")))
    reset_all()
    yield f"fdb:{tmp_path / 'fdb.cluster'}"
    reset_all()


@pytest.fixture
def stores(target: str) -> Iterator[StorePair]:
    one, two = open_backend(target)[1], open_backend(target)[1]
    yield one, two
    one.close()
    two.close()


def test_a_token_made_through_one_store_authenticates_through_the_other(stores: StorePair) -> None:
    one, two = stores
    token, record = create_token(one, "acme", "alice", ["web", "api"], expires_in=3600, label="laptop")
    got = authenticate(two, token)
    assert (got.tenant, got.user, got.projects, got.service, got.label) == ("acme", "alice", ("web", "api"), False,
                                                                           "laptop")
    assert [r.token_id for r in two.list_tokens("acme")] == [record.token_id]
    assert two.list_tokens("globex") == []
    assert parse_token(token) == ("acme", record.token_id)


def test_revocation_through_one_store_is_seen_at_once_by_the_other_and_moves_the_epoch(stores: StorePair) -> None:
    one, two = stores
    token, record = create_token(one, "acme", "alice")
    before = two.revocation_epoch("acme")
    assert one.revoke("acme", record.token_id, time.time())
    with pytest.raises(TokenError, match="revoked"):
        authenticate(two, token)
    assert two.revocation_epoch("acme") == before + 1
    assert two.revocation_epoch("globex") == 0
    assert not one.revoke("acme", "0000000000000000", time.time())
    assert two.list_tokens("acme")[0].public()["state"] == "revoked"


def test_expired_and_wrong_tokens_are_refused_alike(stores: StorePair) -> None:
    one, _ = stores
    token, _ = create_token(one, "acme", "alice", expires_in=10, now=time.time() - 11)
    with pytest.raises(TokenError, match="expired"):
        authenticate(one, token)
    good, _ = create_token(one, "acme", "alice")
    for bad in ("", "cxs_acme", good.replace("acme", "globex", 1), good[:-2] + "zz", "x" * 500):
        with pytest.raises(TokenError):
            authenticate(one, bad)


def test_quotas_count_across_stores_and_per_tenant(stores: StorePair) -> None:
    one, two = stores
    one.set_quota("acme", Quota(events_per_day=5, bytes_stored=1000))
    now = time.time()
    one.charge("acme", 3, 100, now)
    two.charge("acme", 2, 100, now)
    with pytest.raises(QuotaRefused, match="daily event quota") as info:
        one.charge("acme", 1, 1, now)
    assert info.value.retry_after is not None and 0 < info.value.retry_after <= 86_401
    one.charge("acme", 1, 1, now + 86_400)  # the next UTC day starts afresh ...
    with pytest.raises(QuotaRefused, match="storage quota") as info:
        one.charge("acme", 1, 900, now + 86_400)  # ... bytes stored do not
    assert info.value.retry_after is None
    two.charge("globex", 100, 10_000, now)  # no quota set: unlimited
    assert two.usage("acme", now).events_today == 5 and two.usage("acme", now).bytes_stored == 201


def test_durations() -> None:
    assert parse_duration("90d") == 90 * 86_400 and parse_duration("12h") == 43_200 and parse_duration("7") == 604_800
    for bad in ("", "0d", "-1d", "1y", "d"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_a_gateway_over_foundationdb_serves_and_revokes(tmp_path: Path) -> None:
    if os.environ.get("CXSYNC_FDB_CLUSTER_FILE"):
        pytest.skip("a real cluster is configured: the emulation cannot share the process")
    from cxsync.sync.http_log import GatewayAuthError, HttpEventLog
    from tests.fdbemu import install, reset_all
    from tests.gateway_servers import ThreadServer
    from tests.helpers import make_event

    install(api_version=int(os.environ.get("CXSYNC_FDB_API_VERSION", "730")))
    reset_all()
    try:
        opener, store = open_backend(f"fdb:{tmp_path / 'fdb.cluster'}")
        token, record = create_token(store, "acme", "alice")
        with ThreadServer(opener, store) as server:
            log: Callable[[], HttpEventLog] = lambda: HttpEventLog(server.url, "acme", token)  # noqa: E731
            (cursor,) = log().append("team", [make_event("acme", "over-fdb")])
            assert [e.cursor for e in log().read("team", None)] == [cursor]
            assert log().wait("team", None, 0) is True and log().wait("team", cursor, 0.2) is False
            store.revoke("acme", record.token_id, time.time())
            with pytest.raises(GatewayAuthError, match="revoked"):
                log().read("team", None)
    finally:
        reset_all()
