"""The gateway's security model, against a real server on 127.0.0.1: the token alone decides tenant, user and
streams; every refusal is a clear 401/403/413/422/429; revocation and expiry bite at once, long-polls included."""

from __future__ import annotations

import base64
import dataclasses
import logging
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from cxsync.sync.events import encode
from cxsync.sync.gateway import Limits
from cxsync.sync.http_log import GatewayAuthError, HttpEventLog
from cxsync.sync.port import PermanentLogError, QuotaExceeded
from cxsync.sync.tokens import Quota, SqliteGatewayStore, create_token
from tests.gateway_servers import ThreadServer, sqlite_backend
from tests.helpers import make_event, wait_until


@dataclasses.dataclass
class Gw:
    server: ThreadServer
    store: SqliteGatewayStore

    @property
    def url(self) -> str:
        return self.server.url

    def token(self, user: str, *projects: str, tenant: str = "acme", **kw: Any) -> str:
        return create_token(self.store, tenant, user, projects, **kw)[0]

    def client(self, token: str, tenant: str = "acme") -> HttpEventLog:
        return HttpEventLog(self.url, tenant, token)

    def raw(self, method: str, path: str, token: str | None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.request(method, self.url + path, headers={**headers, **kw.pop("headers", {})}, timeout=30, **kw)


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gw]:
    opener, store = sqlite_backend(tmp_path)
    limits = Limits(max_body_bytes=64_000, max_events_per_append=50, revocation_check_seconds=0.05)
    with ThreadServer(opener, store, limits) as server:
        yield Gw(server, store)  # type: ignore[arg-type]


def ev(key: str, user: str = "alice", tenant: str = "acme") -> Any:
    return dataclasses.replace(make_event(tenant, key), user=user)


def b64(event: Any) -> str:
    return base64.b64encode(encode(event)).decode()


# ---- what a user may touch ----------------------------------------------------------------------------------


def test_a_user_reads_and_writes_their_own_stream_and_team_and_nothing_of_another_user(gw: Gw) -> None:
    alice, bob = gw.client(gw.token("alice")), gw.client(gw.token("bob"))
    alice.append("u/alice", [ev("a1")])
    alice.append("team", [ev("t1")])
    bob.append("u/bob", [ev("b1", "bob")])
    assert [e.event.event_id for e in alice.read("u/alice", None)] == ["a1"]
    assert [e.event.event_id for e in bob.read("team", None)] == ["t1"]  # team: read by every member
    for call in (lambda: bob.read("u/alice", None), lambda: bob.wait("u/alice", None, 0),
                 lambda: bob.append("u/alice", [ev("x", "bob")])):
        with pytest.raises(PermanentLogError, match="may not"):
            call()


def test_project_streams_are_for_members_only(gw: Gw) -> None:
    member, outsider = gw.client(gw.token("alice", "web")), gw.client(gw.token("bob", "api"))
    member.append("p/web", [ev("p1")])
    assert len(member.read("p/web", None)) == 1
    with pytest.raises(PermanentLogError, match="may not read 'p/web'"):
        outsider.read("p/web", None)
    with pytest.raises(PermanentLogError, match="may not publish to 'p/web'"):
        outsider.append("p/web", [ev("p2", "bob")])


def test_events_authored_by_another_user_are_refused(gw: Gw) -> None:
    alice = gw.client(gw.token("alice"))
    with pytest.raises(PermanentLogError, match="another user") as info:
        alice.append("team", [ev("ok"), ev("forged", "bob")])
    assert info.value.event_ids == ["forged"]
    assert alice.read("team", None) == []  # nothing of the batch was written


def test_the_tenant_comes_from_the_token_never_from_the_request(gw: Gw) -> None:
    gw.client(gw.token("alice", tenant="globex"), "globex").append("team", [ev("secret", tenant="globex")])
    acme = gw.token("alice")
    # a client that claims tenant globex with an acme token reads acme's (empty) team, never globex's
    assert gw.client(acme, "globex").read("team", None) == []
    for headers in ({"X-Tenant": "globex"}, {"Host": "globex"}, {"Forwarded": "for=1.2.3.4;host=globex"}):
        r = gw.raw("GET", "/v1/read", acme, params={"stream": "team", "tenant": "globex"}, headers=headers)
        assert r.status_code == 200 and r.json()["entries"] == []
    # events of another tenant in an acme batch: refused, not written anywhere
    r = gw.raw("POST", "/v1/append", acme, json={"stream": "team", "events": [b64(ev("x", tenant="globex"))]})
    assert r.status_code == 403 and r.json()["event_ids"] == ["x"]
    with pytest.raises(PermanentLogError, match="another tenant"):
        gw.client(acme, "globex").append("team", [ev("y", tenant="globex")])
    assert [e.event.event_id for e in gw.client(gw.token("bob", tenant="globex"), "globex").read("team", None)] \
        == ["secret"]


@pytest.mark.parametrize("stream", ["u/alice/../bob", "u/bob/", "team/../u/bob", "u/alice\x00", "../etc/passwd",
                                    "u/bob%2f", "U/bob", "u/" + "b" * 129, "p/", "p/../u/bob", " team", "u/alice\nx"])
def test_crafted_stream_names_are_refused_by_every_operation(gw: Gw, stream: str) -> None:
    token = gw.token("alice")
    gw.client(gw.token("bob")).append("u/bob", [ev("private", "bob")])
    for method, path, kw in (("GET", "/v1/read", {"params": {"stream": stream}}),
                             ("GET", "/v1/wait", {"params": {"stream": stream, "timeout": "0"}}),
                             ("POST", "/v1/append", {"json": {"stream": stream, "events": [b64(ev("z"))]}})):
        r = gw.raw(method, path, token, **kw)
        assert r.status_code in (403, 422), (method, stream, r.status_code, r.text)
        assert "private" not in r.text


def test_a_cursor_from_another_stream_or_tenant_reveals_nothing(gw: Gw) -> None:
    bob = gw.client(gw.token("bob"))
    (bob_cursor,) = bob.append("u/bob", [ev("bob-private", "bob")])
    alice = gw.client(gw.token("alice"))
    alice.append("u/alice", [ev("a1")])
    (late,) = alice.append("u/alice", [ev("a2")])
    # a cursor is a position, not a capability: it selects only within the token's own stream
    got = [e.event.event_id for e in alice.read("u/alice", bob_cursor)]
    assert "bob-private" not in got and set(got) <= {"a1", "a2"}
    assert alice.wait("u/alice", late, 0) is False
    r = gw.raw("GET", "/v1/read", gw.token("alice"), params={"stream": "u/alice", "after": "zz" * 12})
    assert r.status_code == 422


def test_path_traversal_and_unknown_paths_are_404_without_data(gw: Gw) -> None:
    token = gw.token("alice")
    gw.client(gw.token("bob")).append("u/bob", [ev("private", "bob")])
    for path in ("/v1/../v1/read?stream=u/bob", "/v1/read/../../u/bob", "/%2e%2e/v1/read?stream=u/bob",
                 "/v1/streams/u/bob", "/v1/read%3Fstream=u/bob", "//v1/read?stream=u/bob"):
        r = httpx.get(gw.url + path, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code in (403, 404, 422), (path, r.status_code)
        assert "private" not in r.text


# ---- bodies ---------------------------------------------------------------------------------------------------


def test_oversized_and_malformed_bodies_are_refused_with_4xx(gw: Gw) -> None:
    token = gw.token("alice")
    big = {"stream": "team", "events": ["A" * 70_000]}
    assert gw.raw("POST", "/v1/append", token, json=big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(100):
            yield b" " * 1000

    assert gw.raw("POST", "/v1/append", token, content=chunks()).status_code == 413
    too_many = {"stream": "team", "events": [b64(ev(f"e{i}")) for i in range(51)]}
    assert gw.raw("POST", "/v1/append", token, json=too_many).status_code == 413
    for body in (b"{", b"[]", b'{"stream": "team"}', b'{"stream": "team", "events": ["not base64!"]}',
                 b'{"stream": "team", "events": ["' + base64.b64encode(b"\x07garbage") + b'"]}',
                 b'{"stream": 5, "events": []}', "{\"stream\": \"team\", \"events\": [\"\udcff\"]}".encode(
                     "utf-8", "surrogatepass")):
        r = gw.raw("POST", "/v1/append", token, content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, (body, r.status_code, r.text)
        assert r.json()["error"] == "invalid"


def test_a_batch_too_large_for_the_server_is_split_by_the_engine_not_quarantined_whole(gw: Gw) -> None:
    alice = gw.client(gw.token("alice"))
    with pytest.raises(PermanentLogError) as info:
        alice.append("team", [ev(f"e{i}") for i in range(60)])
    assert info.value.event_ids == []  # no culprit named: the engine halves the batch (sync/engine.py)
    assert len(alice.append("team", [ev(f"e{i}") for i in range(50)])) == 50


# ---- tokens ---------------------------------------------------------------------------------------------------


def test_missing_malformed_unknown_and_tampered_tokens_are_401(gw: Gw) -> None:
    good = gw.token("alice")
    tenant_swapped = good.replace("cxs_acme~", "cxs_globex~")
    secret_changed = good[:-1] + ("A" if good[-1] != "A" else "B")
    for token in (None, "", "nonsense", "cxs_acme~0~x", tenant_swapped, secret_changed, good + "x"):
        r = gw.raw("GET", "/v1/read", token, params={"stream": "team"})
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer"), token
    assert gw.raw("GET", "/v1/read", good, params={"stream": "team"}).status_code == 200
    r = httpx.get(gw.url + "/v1/read", params={"stream": "team"}, headers={"Authorization": f"Basic {good}"})
    assert r.status_code == 401


def test_an_expired_token_is_refused_at_once(gw: Gw) -> None:
    token = gw.token("alice", expires_in=60, now=time.time() - 61)
    with pytest.raises(GatewayAuthError, match="expired"):
        gw.client(token).read("team", None)


def test_a_token_expiring_during_a_long_poll_ends_it_with_401(gw: Gw) -> None:
    token = gw.token("alice", expires_in=1.5)
    started = time.monotonic()
    r = gw.raw("GET", "/v1/wait", token, params={"stream": "team", "timeout": "20"})
    assert r.status_code == 401 and "expired" in r.json()["message"]
    assert time.monotonic() - started < 5


def test_a_revoked_token_is_refused_at_once_and_its_open_long_polls_end(gw: Gw) -> None:
    token = gw.token("alice")
    other = gw.token("alice")
    token_id = token.split("~")[1]
    results: dict[str, httpx.Response] = {}

    def poll(name: str, t: str) -> None:
        results[name] = gw.raw("GET", "/v1/wait", t, params={"stream": "team", "timeout": "20"})

    threads = [threading.Thread(target=poll, args=(n, t)) for n, t in (("revoked", token), ("kept", other))]
    for t in threads:
        t.start()
    wait_until(lambda: gw.server.app.state.hub.waiter_count() == 2, 10, what="both long-polls are held")
    started = time.monotonic()
    assert gw.store.revoke("acme", token_id, time.time())
    threads[0].join(10)
    assert results["revoked"].status_code == 401 and "revoked" in results["revoked"].json()["message"]
    assert time.monotonic() - started < 2
    assert gw.raw("GET", "/v1/read", token, params={"stream": "team"}).status_code == 401
    assert "kept" not in results  # the other token's long-poll is still open
    gw.client(other).append("team", [ev("wake")])
    threads[1].join(10)
    assert results["kept"].status_code == 200 and results["kept"].json() == {"newer": True}


def test_a_refused_token_is_not_retried_in_a_storm_and_a_new_login_lifts_the_hold(gw: Gw) -> None:
    good = gw.token("alice")
    current = {"token": "cxs_acme~0123456789abcdef~" + "A" * 43}
    log = HttpEventLog(gw.url, "acme", lambda: current["token"])
    requests = gw.server.app.state.metrics.requests

    def refused() -> float:
        return requests.labels("/v1/read", "401")._value.get()  # type: ignore[no-any-return]

    with pytest.raises(GatewayAuthError, match="needs-auth"):
        log.read("team", None)
    for _ in range(20):
        with pytest.raises(GatewayAuthError, match="needs-auth"):
            log.read("team", None)
    wait_until(lambda: refused() == 1, 5)  # counted just after the response is sent
    assert refused() == 1  # the 20 retries were answered locally, during the hold
    current["token"] = good  # `cxsync login` stored a new token
    assert log.read("team", None) == []


# ---- quotas and limits ------------------------------------------------------------------------------------------


def test_a_daily_event_quota_is_a_429_the_agent_reports_as_quota_exceeded(gw: Gw) -> None:
    gw.store.set_quota("acme", Quota(events_per_day=3))
    alice = gw.client(gw.token("alice"))
    alice.append("u/alice", [ev("a"), ev("b")])
    with pytest.raises(QuotaExceeded, match="daily event quota reached: 2 of 3") as info:
        alice.append("u/alice", [ev("c"), ev("d")])
    assert info.value.event_ids == ["c", "d"]
    r = gw.raw("POST", "/v1/append", gw.token("alice"), json={"stream": "u/alice", "events": [b64(ev("e"))] * 2})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0
    globex = gw.client(gw.token("alice", tenant="globex"), "globex")
    assert len(globex.append("u/alice", [ev(k, tenant="globex") for k in "cdef"])) == 4  # per tenant


def test_a_storage_quota_counts_bytes(gw: Gw) -> None:
    alice = gw.client(gw.token("alice"))
    alice.append("u/alice", [ev("a")])
    used = gw.store.usage("acme", time.time()).bytes_stored
    assert used > 0
    gw.store.set_quota("acme", Quota(bytes_stored=used + 10))
    with pytest.raises(QuotaExceeded, match="storage quota reached"):
        alice.append("u/alice", [ev("b")])


# ---- the rest of the surface -------------------------------------------------------------------------------


def test_whoami_health_metrics_and_openapi(gw: Gw) -> None:
    token = gw.token("alice", "web", label="laptop")
    assert gw.client(token).whoami()["projects"] == ["web"]
    assert httpx.get(gw.url + "/v1/health").json() == {"status": "ok"}
    gw.client(token).append("team", [ev("m")])
    metrics = httpx.get(gw.url + "/metrics").text
    assert "cxsync_gateway_events_appended_total 1.0" in metrics
    assert 'cxsync_gateway_requests_total{endpoint="/v1/append",status="200"}' in metrics
    spec = httpx.get(gw.url + "/openapi.json").json()
    assert {"/v1/append", "/v1/read", "/v1/wait", "/v1/health", "/v1/whoami"} <= set(spec["paths"])


def test_a_long_poll_wakes_on_an_append_from_another_client(gw: Gw) -> None:
    reader, writer = gw.client(gw.token("alice")), gw.client(gw.token("alice"))
    (first,) = writer.append("team", [ev("first")])
    woke: list[bool] = []
    t = threading.Thread(target=lambda: woke.append(reader.wait("team", first, 20)))
    t.start()
    wait_until(lambda: gw.server.app.state.hub.waiter_count() == 1, 10, what="the long-poll is held")
    started = time.monotonic()
    writer.append("team", [ev("second")])
    t.join(10)
    assert woke == [True] and time.monotonic() - started < 2
    assert reader.wait("team", first, 0) is True


def test_many_long_polls_share_one_watcher_per_stream(gw: Gw) -> None:
    import asyncio

    token = gw.token("alice")
    (head,) = gw.client(token).append("team", [ev("h")])

    async def many() -> list[int]:
        async with httpx.AsyncClient(base_url=gw.url, headers={"Authorization": f"Bearer {token}"},
                                     limits=httpx.Limits(max_connections=300), timeout=30) as client:
            polls = [asyncio.create_task(client.get("/v1/wait", params={"stream": s, "after": head.hex(),
                                                                       "timeout": "20"}))
                     for s in ["team"] * 150 + ["u/alice"] * 50]
            await asyncio.to_thread(wait_until, lambda: gw.server.app.state.hub.waiter_count() == 200, 20)
            assert gw.server.app.state.hub.watcher_count() == 2
            await asyncio.to_thread(gw.client(token).append, "team", [ev("wake")])
            done = [await p for p in polls[:150]]
            for p in polls[150:]:
                p.cancel()
            return [r.status_code for r in done if r.json() == {"newer": True}]

    assert len(asyncio.run(many())) == 150


def test_plain_http_is_refused_beyond_loopback_and_urls_carry_no_secrets() -> None:
    from cxsync.sync.errors import InvalidValue
    from cxsync.sync.targets import check_url

    assert check_url("http://127.0.0.1:8443/") == "http://127.0.0.1:8443"
    assert check_url("http://[::1]:8443") == "http://[::1]:8443"
    assert check_url("https://sync.example.com") == "https://sync.example.com"
    for url in ("http://sync.example.com", "http://10.0.0.5:8443", "https://u:p@host", "https://host/x?token=1",
                "ftp://host", "https://"):
        with pytest.raises(InvalidValue):
            check_url(url)


def test_tokens_never_appear_in_the_servers_or_the_agents_logs(gw: Gw, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = gw.token("alice")
    alice = gw.client(token)
    alice.append("team", [ev("a")])
    gw.raw("GET", "/v1/read", token + "x", params={"stream": "team"})
    with pytest.raises(PermanentLogError) as refused:
        alice.read("u/bob", None)
    secret = token.split("~")[2]
    assert secret not in caplog.text and secret not in str(refused.value)
    assert all(secret not in r.public().values() for r in gw.store.list_tokens("acme"))  # type: ignore[operator]
    assert secret.encode() not in gw.store.path.read_bytes()


def test_a_waiter_ahead_of_the_others_is_not_woken_by_a_commit_it_has_already_passed(gw: Gw) -> None:
    token = gw.token("alice")
    (head,) = gw.client(token).append("team", [ev("h")])
    ahead = bytes.fromhex("7f" * 12)  # e.g. a cursor of another stream, far beyond this one's head
    results: dict[str, bool] = {}
    threads = [threading.Thread(target=lambda n=n, c=c: results.setdefault(n, gw.client(token).wait("team", c, 3)))
               for n, c in (("at-head", head), ("ahead", ahead))]
    for t in threads:
        t.start()
    wait_until(lambda: gw.server.app.state.hub.waiter_count() == 2, 10, what="both long-polls are held")
    gw.client(token).append("team", [ev("next")])
    threads[0].join(10)
    assert results == {"at-head": True}
    wait_until(lambda: gw.server.app.state.hub.waiter_count() == 1, 5, what="the one ahead waits again")
    threads[1].join(10)
    assert results == {"at-head": True, "ahead": False}


def test_retry_after_holds_the_agent_back_then_lets_it_through(tmp_path: Path) -> None:
    from cxsync.sync.port import TransientLogError
    from cxsync.sync.sqlite_log import SqliteEventLog

    down = {"on": True}

    class Busy(SqliteEventLog):
        def read(self, stream: str, after: bytes | None, limit: int = 1000) -> Any:
            if down["on"]:
                raise TransientLogError("the disk is busy")
            return super().read(stream, after, limit)

    _, store = sqlite_backend(tmp_path)
    with ThreadServer(lambda t: Busy(tmp_path / "busy.db", t), store, Limits(unavailable_retry_after=3)) as server:
        log = HttpEventLog(server.url, "acme", create_token(store, "acme", "alice")[0])
        with pytest.raises(TransientLogError, match="503"):
            log.read("team", None)
        down["on"] = False  # back at once, but the server asked for 3 s
        with pytest.raises(TransientLogError, match="503"):
            log.read("team", None)  # answered locally, inside the Retry-After
        # counted after the response is sent: wait for the count, then check it stays at one
        wait_until(lambda: server.app.state.metrics.requests.labels("/v1/read", "503")._value.get() == 1, 5)
        wait_until(lambda: _succeeds(log), 10, interval=0.1, what="through once Retry-After has passed")


def _succeeds(log: HttpEventLog) -> bool:
    from cxsync.sync.port import TransientLogError

    try:
        return log.read("team", None) == []
    except TransientLogError:
        return False


def test_retry_after_is_read_as_seconds_or_an_http_date_and_capped() -> None:
    from email.utils import formatdate

    from cxsync.sync.http_log import RETRY_AFTER_CAP, _retry_after

    assert _retry_after("7") == 7.0 and _retry_after("-3") == 0.0 and _retry_after("999999") == RETRY_AFTER_CAP
    assert 25 < (_retry_after(formatdate(time.time() + 30, usegmt=True)) or 0) <= 30
    assert _retry_after(None) is None and _retry_after("soon") is None


def test_a_batch_the_log_refuses_costs_no_quota(tmp_path: Path) -> None:
    from cxsync.sync.port import TransientLogError
    from cxsync.sync.sqlite_log import SqliteEventLog

    class Picky(SqliteEventLog):
        def append(self, stream: str, events: Any) -> list[bytes]:
            if any(e.event_id.startswith("bad") for e in events):
                raise PermanentLogError("refused", [e.event_id for e in events if e.event_id.startswith("bad")])
            if any(e.event_id.startswith("busy") for e in events):
                raise TransientLogError("busy")
            return super().append(stream, events)

    _, store = sqlite_backend(tmp_path)
    with ThreadServer(lambda t: Picky(tmp_path / "picky.db", t), store) as server:
        alice = HttpEventLog(server.url, "acme", create_token(store, "acme", "alice")[0])
        alice.append("u/alice", [ev("a")])
        before = store.usage("acme", time.time())
        with pytest.raises(PermanentLogError, match="refused"):
            alice.append("u/alice", [ev("b"), ev("bad-1")])
        with pytest.raises(TransientLogError):
            alice.append("u/alice", [ev("busy-1")])
        assert store.usage("acme", time.time()) == before


def test_an_unreachable_token_store_is_a_503_not_a_crash(gw: Gw, monkeypatch: pytest.MonkeyPatch) -> None:
    from cxsync.sync.port import TransientLogError

    token = gw.token("alice")

    def down(*a: Any) -> None:
        raise TransientLogError("FoundationDB: timed out")

    monkeypatch.setattr(gw.store, "get_token", down)
    r = gw.raw("GET", "/v1/read", token, params={"stream": "team"})
    assert r.status_code == 503 and r.json()["error"] == "unavailable" and r.headers["Retry-After"] == "1"
    monkeypatch.undo()
    monkeypatch.setattr(gw.store, "charge", down)
    r = gw.raw("POST", "/v1/append", token, json={"stream": "team", "events": [b64(ev("q"))]})
    assert r.status_code == 503


def test_short_wait_slices_share_one_long_poll(gw: Gw) -> None:
    token = gw.token("alice")
    log = gw.client(token)
    (head,) = log.append("team", [ev("h")])
    hub = gw.server.app.state.hub
    for _ in range(5):  # the engine's slices: each ends, the request behind them stays open
        assert log.wait("team", head, 0.2) is False
    assert hub.waiter_count() == 1
    gw.client(token).append("team", [ev("next")])
    wait_until(lambda: log.wait("team", head, 0.2), 5, what="the shared long-poll saw the append")
    requests = gw.server.app.state.metrics.requests
    wait_until(lambda: requests.labels("/v1/wait", "200")._value.get() >= 1, 5)
    assert requests.labels("/v1/wait", "200")._value.get() == 1  # one long-poll served all six slices
    log.close()
