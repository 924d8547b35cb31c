"""``cxsync serve``: the HTTP gateway between agents and an EventLog (an ASGI app on FastAPI).

Every request carries ``Authorization: Bearer <token>``; the tenant and user come from the token record, never
from the request.  What a token may touch (``may_read`` / ``may_write``):

    u/<self>      read and write          u/<anyone else>   nothing
    team          read and publish        p/<project>       read and write if a member, else nothing
    (a service token: every stream of its own tenant)

Appended events must belong to the token's tenant and, except for service tokens, be authored by its user.
Refusals are 401 (``auth``: no, unknown, expired or revoked token — the agent shows needs-auth), 403
(``forbidden``), 413 (``too_large``), 422 (``invalid`` / ``rejected``), 429 (``quota``, with Retry-After when
waiting helps) and 503 (``unavailable``, Retry-After) — each a JSON ``Problem`` the agent can show as it is.

Blocking log and store calls run on worker threads; long-polls are held by ``gateway_wait.WaitHub`` (no thread
per waiter).  Revocations end open long-polls at once: one thread per process watches the revocation epochs of
the tenants that have waiters and re-checks only their tokens.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

from anyio import CapacityLimiter, to_thread
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field

from cxsync.sync.errors import CxError, InvalidValue
from cxsync.sync.events import CodecError, ContextEvent, decode, encode
from cxsync.sync.gateway_wait import Revoked, WaitHub
from cxsync.sync.port import (
    CURSOR_LEN,
    EventLog,
    LogError,
    PermanentLogError,
    QuotaExceeded,
    TransientLogError,
    validate_stream,
)
from cxsync.sync.tokens import GatewayStore, QuotaRefused, TokenError, TokenRecord, authenticate

log = logging.getLogger(__name__)

API = "/v1"
STREAM_PATTERN = r"^(team|u/[A-Za-z0-9._@+-]{1,128}|p/[A-Za-z0-9._-]{1,128})$"  # validate_stream's rule
CURSOR_PATTERN = r"^[0-9a-f]{24}$"
T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 16 << 20  # an agent's batch is <= 4 MB of encoded events (+ base64)
    max_events_per_append: int = 10_000
    max_read_limit: int = 1_000
    max_wait_seconds: float = 30.0
    revocation_check_seconds: float = 0.25
    worker_threads: int = 32
    unavailable_retry_after: int = 1  # seconds a 503 asks the agent to hold back


# ---- the wire model (the OpenAPI description is generated from it) ---------------------------------------


class AppendRequest(BaseModel):
    stream: str = Field(description="team, u/<user> or p/<project>", max_length=140,
                        json_schema_extra={"pattern": STREAM_PATTERN})
    events: list[str] = Field(description="events in the cxsync codec, base64 (standard alphabet)")


class AppendResponse(BaseModel):
    cursors: list[str] = Field(description="one 24-hex-digit cursor per event, in order")


class Entry(BaseModel):
    cursor: str
    event: str = Field(description="the event in the cxsync codec, base64")


class ReadResponse(BaseModel):
    entries: list[Entry]
    more: bool = Field(description="the page is full: read again after the last cursor")


class WaitResponse(BaseModel):
    newer: bool = Field(description="the stream holds something after the cursor (a hint: read it)")


class WhoAmI(BaseModel):
    tenant: str
    user: str
    projects: list[str]
    service: bool
    token_id: str
    expires_at: str | None


class Health(BaseModel):
    status: str


class Problem(BaseModel):
    error: str = Field(description="auth, forbidden, invalid, rejected, too_large, quota or unavailable")
    message: str
    event_ids: list[str] = []


_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": desc}
    for code, desc in ((401, "no, unknown, expired or revoked token"), (403, "the token may not do this"),
                       (413, "request too large"), (422, "invalid request or events"),
                       (429, "quota reached"), (503, "the log is unavailable"))
}


class Refusal(Exception):
    def __init__(self, status: int, error: str, message: str, event_ids: list[str] | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message
        self.event_ids = event_ids or []
        self.retry_after = retry_after


# ---- authorisation: decided from the token alone ----------------------------------------------------------


def may_read(who: TokenRecord, stream: str) -> bool:
    if who.service:
        return True
    if stream == "team":
        return True
    if stream.startswith("u/"):
        return stream[2:] == who.user
    return stream.startswith("p/") and stream[2:] in who.projects


def may_write(who: TokenRecord, stream: str) -> bool:
    return may_read(who, stream)  # team is readable and publishable alike; nothing is write-only


def parse_cursor(text: str | None) -> bytes | None:
    if text is None or text == "":
        return None
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != CURSOR_LEN or len(text) != 2 * CURSOR_LEN:
        raise Refusal(422, "invalid", f"a cursor is {2 * CURSOR_LEN} hex digits")
    return raw


# ---- the app ------------------------------------------------------------------------------------------------


class LogPool:
    """One open EventLog per tenant, opened on first use and shared by every request of that tenant."""

    def __init__(self, opener: Callable[[str], EventLog]) -> None:
        self._opener = opener
        self._lock = threading.Lock()
        self._logs: dict[str, EventLog] = {}

    def get(self, tenant: str) -> EventLog:
        with self._lock:
            event_log = self._logs.get(tenant)
            if event_log is None:
                event_log = self._logs[tenant] = self._opener(tenant)
            return event_log

    def close(self) -> None:
        with self._lock:
            logs, self._logs = list(self._logs.values()), {}
        for event_log in logs:
            try:
                event_log.close()
            except Exception:  # closing is a courtesy
                log.debug("closing %r failed", event_log, exc_info=True)


class _Metrics:
    def __init__(self, hub: WaitHub) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("cxsync_gateway_requests", "requests by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("cxsync_gateway_request_seconds", "request handling time (long-polls excluded)",
                                 ["endpoint"], registry=self.registry)
        self.events_appended = Counter("cxsync_gateway_events_appended", "events accepted by append",
                                       registry=self.registry)
        self.events_read = Counter("cxsync_gateway_events_read", "events returned by read", registry=self.registry)
        self.refusals = Counter("cxsync_gateway_refusals", "refused requests by kind", ["error"],
                                registry=self.registry)
        self.revoked_waits = Counter("cxsync_gateway_revoked_waits", "long-polls ended by a revocation",
                                     registry=self.registry)
        waiters = Gauge("cxsync_gateway_waiters", "open long-polls", registry=self.registry)
        waiters.set_function(hub.waiter_count)
        watchers = Gauge("cxsync_gateway_watchers", "streams watched (one thread each)", registry=self.registry)
        watchers.set_function(hub.watcher_count)


class _RevocationWatch:
    """One thread per process: when a tenant's revocation epoch moves, re-check the tokens it has waiting."""

    def __init__(self, store: GatewayStore, hub: WaitHub, interval: float, metrics: _Metrics) -> None:
        self._store, self._hub, self._interval, self._metrics = store, hub, interval, metrics
        self._stop = threading.Event()
        self._epochs: dict[str, int] = {}
        self._seen: dict[str, set[str]] = {}
        self._thread = threading.Thread(target=self._run, name="cxsync-gw-revocations", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.check()
            except Exception:  # the store is down: the per-request check still refuses; try again
                log.warning("revocation check failed", exc_info=True)

    def check(self) -> None:
        """Re-check every waiting token of a tenant whose epoch moved, and any token that began waiting since the
        last look (it may have been authenticated just before a revocation this look already counted).  Expiry
        needs no look here: a long-poll's deadline never passes its token's expiry."""
        now = time.time()
        waiting = self._hub.tokens_waiting()
        for tenant, token_ids in waiting.items():
            epoch = self._store.revocation_epoch(tenant)
            seen = self._seen.get(tenant, set()) if self._epochs.get(tenant) == epoch else set()
            self._epochs[tenant] = epoch
            for token_id in token_ids - seen:
                rec = self._store.get_token(tenant, token_id)
                if rec is None or not rec.active(now):
                    self._metrics.revoked_waits.inc(self._hub.fail_token(token_id))
        self._seen = waiting


class _Guard:
    """Refuses a declared body over the limit before it is read; counts every request by endpoint and status."""

    def __init__(self, app: Any, limits: Limits, metrics: _Metrics, refuse: Callable[[Refusal], Response]) -> None:
        self.app, self.limits, self.metrics, self.refuse = app, limits, metrics, refuse

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in _ENDPOINTS else "other"
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > self.limits.max_body_bytes):
            response = self.refuse(Refusal(413, "too_large",
                                           f"a request body is at most {self.limits.max_body_bytes} bytes"))
            self.metrics.requests.labels(endpoint, "413").inc()
            await response(scope, receive, send)
            return
        status = [500]

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, sending)
        finally:
            if endpoint != f"{API}/wait":
                self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
            self.metrics.requests.labels(endpoint, str(status[0])).inc()


_ENDPOINTS = frozenset({f"{API}/append", f"{API}/read", f"{API}/wait", f"{API}/whoami", f"{API}/health", "/metrics"})


def create_app(opener: Callable[[str], EventLog], store: GatewayStore, limits: Limits = Limits()) -> FastAPI:
    """The gateway over the logs ``opener(tenant)`` returns and the tokens/quotas in ``store``."""
    pool = LogPool(opener)
    hub = WaitHub(pool.get)
    metrics = _Metrics(hub)
    revocations = _RevocationWatch(store, hub, limits.revocation_check_seconds, metrics)
    limiter = CapacityLimiter(limits.worker_threads)

    async def blocking(fn: Callable[..., T], *args: Any) -> T:
        return await to_thread.run_sync(fn, *args, limiter=limiter)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        revocations.start()
        try:
            yield
        finally:
            revocations.stop()
            hub.close()
            pool.close()
            store.close()

    app = FastAPI(title="cxsync gateway", version="1", lifespan=lifespan,
                  description="Authenticated access to a cxsync event log: append, read, long-poll wait.")
    app.state.hub = hub
    app.state.metrics = metrics
    bearer = HTTPBearer(auto_error=False, description="a token from `cxsync token create`")

    def problem(exc: Refusal) -> JSONResponse:
        metrics.refusals.labels(exc.error).inc()
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="cxsync"'
        return JSONResponse(Problem(error=exc.error, message=exc.message, event_ids=exc.event_ids).model_dump(),
                            status_code=exc.status, headers=headers)

    @app.exception_handler(Refusal)
    async def on_refusal(request: Request, exc: Refusal) -> JSONResponse:
        return problem(exc)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return problem(Refusal(422, "invalid", f"invalid request: {where}: {first.get('msg', 'invalid')}"))

    # A plain ASGI wrapper rather than @app.middleware("http"): that one runs every request through an extra
    # task and memory streams, which thousands of open long-polls pay for in memory.
    app.add_middleware(_Guard, limits=limits, metrics=metrics, refuse=problem)

    async def principal(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> TokenRecord:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Refusal(401, "auth", "no token: send Authorization: Bearer <token> (see `cxsync login`)")
        try:
            return await blocking(authenticate, store, credentials.credentials)
        except TokenError as exc:
            raise Refusal(401, "auth", exc.title) from None
        except LogError as exc:  # the token store (FoundationDB) is unreachable: not the agent's fault
            log.warning("token store unavailable: %s", exc)
            raise Refusal(503, "unavailable", "the token store is unavailable; retry later",
                          retry_after=limits.unavailable_retry_after) from None

    def stream_for(who: TokenRecord, stream: str, write: bool) -> str:
        try:
            validate_stream(stream)
        except InvalidValue as exc:
            raise Refusal(422, "invalid", exc.title) from None
        if not (may_write if write else may_read)(who, stream):
            verb = "publish to" if write else "read"
            raise Refusal(403, "forbidden", f"the token of {who.user!r} may not {verb} {stream!r}")
        return stream

    async def read_body(request: Request) -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():  # a body without Content-Length is counted as it arrives
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise Refusal(413, "too_large", f"a request body is at most {limits.max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def log_call(fn: Callable[..., T], *args: Any) -> Awaitable[T]:
        async def run() -> T:
            try:
                return await blocking(fn, *args)
            except QuotaExceeded as exc:
                raise Refusal(429, "quota", exc.title, exc.event_ids) from None
            except PermanentLogError as exc:
                raise Refusal(422, "rejected", exc.title, exc.event_ids) from None
            except TransientLogError as exc:
                log.warning("log unavailable: %s", exc)
                raise Refusal(503, "unavailable", "the event log is unavailable; retry later",
                              retry_after=limits.unavailable_retry_after) from None
            except InvalidValue as exc:
                raise Refusal(422, "invalid", exc.title) from None
        return run()

    @app.post(f"{API}/append", response_model=AppendResponse, responses=_PROBLEMS,
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": AppendRequest.model_json_schema()}}}})
    async def append(request: Request, who: TokenRecord = Depends(principal)) -> AppendResponse:
        """Append a batch to a stream; idempotent by event_id (a replay returns the original cursors)."""
        try:
            body = AppendRequest.model_validate_json(await read_body(request))
        except ValueError as exc:
            raise Refusal(422, "invalid", f"the body is not an append request: {str(exc).splitlines()[0]}") from None
        stream = stream_for(who, body.stream, write=True)
        if len(body.events) > limits.max_events_per_append:
            raise Refusal(413, "too_large", f"an append holds at most {limits.max_events_per_append} events")
        events: list[ContextEvent] = []
        nbytes = 0
        for i, text in enumerate(body.events):
            try:
                raw = base64.b64decode(text, validate=True)
                events.append(decode(raw))
            except (binascii.Error, ValueError, CodecError, CxError):
                raise Refusal(422, "invalid", f"event #{i} is not a cxsync event in base64") from None
            nbytes += len(raw)
        foreign = [e.event_id for e in events if e.tenant != who.tenant]
        if foreign:
            raise Refusal(403, "forbidden", f"events of another tenant than {who.tenant!r}", foreign)
        if not who.service:
            forged = [e.event_id for e in events if e.user != who.user]
            if forged:
                raise Refusal(403, "forbidden", f"events authored by another user than {who.user!r}", forged)
        if not events:
            return AppendResponse(cursors=[])
        try:
            await blocking(store.charge, who.tenant, len(events), nbytes, time.time())
        except QuotaRefused as exc:
            raise Refusal(429, "quota", f"{exc.title} (tenant {who.tenant})", [e.event_id for e in events],
                          exc.retry_after) from None
        except LogError as exc:
            log.warning("quota store unavailable: %s", exc)
            raise Refusal(503, "unavailable", "the quota store is unavailable; retry later",
                          retry_after=limits.unavailable_retry_after) from None
        try:
            cursors = await log_call(pool.get(who.tenant).append, stream, events)
        except Refusal:  # nothing was stored: give the quota back (a negative charge always fits)
            await blocking(store.charge, who.tenant, -len(events), -nbytes, time.time())
            raise
        metrics.events_appended.inc(len(events))
        return AppendResponse(cursors=[c.hex() for c in cursors])

    @app.get(f"{API}/read", response_model=ReadResponse, responses=_PROBLEMS)
    async def read(stream: str = Query(max_length=140, pattern=STREAM_PATTERN),
                   after: str | None = Query(None, pattern=CURSOR_PATTERN),
                   limit: int = Query(500, ge=1, le=limits.max_read_limit),
                   who: TokenRecord = Depends(principal)) -> ReadResponse:
        """Events strictly after the cursor, in commit order (a page of at most ``limit``)."""
        stream = stream_for(who, stream, write=False)
        cursor = parse_cursor(after)
        entries = await log_call(pool.get(who.tenant).read, stream, cursor, limit)
        metrics.events_read.inc(len(entries))
        return ReadResponse(entries=[Entry(cursor=e.cursor.hex(), event=base64.b64encode(encode(e.event)).decode())
                                     for e in entries], more=len(entries) == limit)

    @app.get(f"{API}/wait", response_model=WaitResponse, responses=_PROBLEMS)
    async def wait(stream: str = Query(max_length=140, pattern=STREAM_PATTERN),
                   after: str | None = Query(None, pattern=CURSOR_PATTERN),
                   timeout: float = Query(min(25.0, limits.max_wait_seconds), ge=0, le=limits.max_wait_seconds),
                   who: TokenRecord = Depends(principal)) -> WaitResponse:
        """Long-poll: returns as soon as the stream holds something after the cursor, or after ``timeout``."""
        stream = stream_for(who, stream, write=False)
        cursor = parse_cursor(after)
        event_log = pool.get(who.tenant)
        if await log_call(event_log.wait, stream, cursor, 0.0):
            return WaitResponse(newer=True)
        budget = timeout
        if who.expires_at is not None:
            budget = min(budget, who.expires_at - time.time())
        try:
            newer = await hub.wait(who.tenant, stream, cursor, budget, who.token_id)
        except Revoked:
            raise Refusal(401, "auth", "the token has been revoked") from None
        if not newer and who.expires_at is not None and time.time() >= who.expires_at:
            raise Refusal(401, "auth", "the token has expired")
        return WaitResponse(newer=newer)

    @app.get(f"{API}/whoami", response_model=WhoAmI, responses=_PROBLEMS)
    async def whoami(who: TokenRecord = Depends(principal)) -> WhoAmI:
        """What the presented token acts as (``cxsync login --gateway`` checks a token with it)."""
        pub = who.public()
        return WhoAmI(tenant=who.tenant, user=who.user, projects=list(who.projects), service=who.service,
                      token_id=who.token_id, expires_at=pub["expires_at"])

    @app.get(f"{API}/health", response_model=Health, responses={503: _PROBLEMS[503]})
    async def health() -> Health:
        """Ready when the token store answers."""
        try:
            await blocking(store.ping)
        except Exception:
            raise Refusal(503, "unavailable", "the token store does not answer", retry_after=5) from None
        return Health(status="ok")

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


# ---- the backend behind a server: the log and the token store, from one target ----------------------------


def open_backend(target: str, *, api_version: int = 730) -> tuple[Callable[[str], EventLog], GatewayStore]:
    """``sqlite:PATH`` (tokens in ``PATH-gateway.db``) or ``fdb[:CLUSTER_FILE]`` (tokens under each tenant's
    keys): the per-tenant log opener and the token store that every server process over it shares."""
    import os
    from pathlib import Path

    from cxsync.sync.targets import open_log
    from cxsync.sync.tokens import FdbGatewayStore, SqliteGatewayStore, sqlite_store_path

    scheme, _, rest = (target or "").strip().partition(":")
    scheme = scheme.lower()
    if scheme == "sqlite":
        path = Path(os.path.expanduser(rest.strip()))
        if not rest.strip():
            raise InvalidValue(f"--log {target!r} names no file: use sqlite:PATH or fdb:CLUSTER_FILE")
        if not path.is_absolute():
            path = Path.cwd() / path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        spec = f"sqlite:{path}"
        opener: Callable[[str], EventLog] = lambda tenant: open_log(spec, tenant)  # noqa: E731
        opener("gateway-probe").close()  # creates the log (and refuses a network filesystem) before the store
        return opener, SqliteGatewayStore(sqlite_store_path(path))
    if scheme == "fdb":
        from cxsync.sync.fdb_log import FdbEventLog, _open_database, select_api_version

        select_api_version(api_version)
        cluster_file = os.path.expanduser(rest.strip()) if rest.strip() else None
        database = _open_database(cluster_file, None)
        return (lambda tenant: FdbEventLog(tenant, cluster_file=cluster_file, database=database),
                FdbGatewayStore(database))
    raise InvalidValue(f"the gateway's log must be sqlite:PATH or fdb[:CLUSTER_FILE], not {target!r}")
