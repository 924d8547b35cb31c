"""The agent's EventLog over a ``cxsync serve`` gateway (``sync.target = "https://host:port"``).

Same port, same semantics as the other adapters (the contract suite runs through it).  One ``httpx.Client`` per
log: connections are reused; the server certificate is verified against the system CAs or ``tls_ca``; plain
``http://`` is accepted only for loopback addresses.  The token is sent only in the ``Authorization`` header.

How refusals reach the engine (``sync/engine.py``), so that nothing turns into a retry storm:

* 401 -> ``GatewayAuthError`` (a ``TransientLogError``): the agent shows ``needs-auth``, keeps the outbox, and
  this adapter answers further calls at once, without the network, until its own capped backoff has passed
  (2 s doubling to 5 min) or the token changes (``cxsync login``).
* 403 on append -> ``PermanentLogError`` naming the batch: quarantined with the server's reason.
* 413 -> ``PermanentLogError`` naming no event: the engine splits the batch until the culprit stands alone.
* 422 -> ``PermanentLogError`` with the ids the server named.
* 429 ``quota`` -> ``QuotaExceeded``; 429/503 otherwise -> ``TransientLogError``.  A ``Retry-After`` holds
  further calls back here (answered locally) for that long, capped at an hour.
* an untrusted certificate -> ``GatewayTLSError`` (transient: fixing ``tls_ca`` must not cost the outbox).
"""

from __future__ import annotations

import base64
import logging
import os
import ssl
import threading
import time
from typing import Any, Callable, Sequence

import httpx

from cxsync.sync.errors import InvalidValue
from cxsync.sync.events import CodecError, ContextEvent, decode, encode
from cxsync.sync.port import (
    LogEntry,
    undecodable,
    PermanentLogError,
    QuotaExceeded,
    TransientLogError,
    check_cursor,
    check_read,
    validate_name,
    validate_stream,
)
from cxsync.sync.targets import check_url

log = logging.getLogger(__name__)

SERVER_MAX_WAIT = 30.0  # the gateway holds a long-poll at most this long; longer waits are several polls
AUTH_BACKOFF_START = 2.0
AUTH_BACKOFF_CAP = 300.0
RETRY_AFTER_CAP = 3600.0

TokenSource = Callable[[], "str | None"]


class GatewayAuthError(TransientLogError):
    """needs-auth: the gateway refused the token (missing, unknown, expired or revoked)."""

    needs_auth = True  # the supervisor shows the agent as needs-auth, not offline

    default_hint = "create a token on the gateway (`cxsync token create`) and run `cxsync login --gateway URL`"


class GatewayTLSError(TransientLogError):
    """The gateway's certificate cannot be verified."""

    default_hint = "set [sync] tls_ca to the CA that signed the gateway's certificate, or fix the certificate"


class _Poll:
    """One long-poll request in flight, shared by the waits that ask for the same stream and cursor."""

    def __init__(self, after: bytes | None) -> None:
        self.after = after
        self.done = threading.Event()
        self.newer = False
        self.error: BaseException | None = None


class HttpEventLog:
    """EventLog through the gateway at ``url``; ``token`` is the token or a callable returning it."""

    def __init__(self, url: str, tenant: str, token: str | TokenSource | None, *, tls_ca: str | None = None,
                 connect_timeout: float = 10.0, request_timeout: float = 60.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.tenant = validate_name("tenant", tenant)
        self.url = check_url(url)
        self._token_source: TokenSource = token if callable(token) else (lambda: token)
        self._token: str | None = None
        self._lock = threading.Lock()
        self._not_before = 0.0
        self._held: TransientLogError | None = None
        self._held_token: str | None = None
        self._auth_backoff = AUTH_BACKOFF_START
        self._polls: dict[str, _Poll] = {}
        verify: ssl.SSLContext | bool = True
        if tls_ca:
            path = os.path.expanduser(tls_ca)
            try:
                verify = ssl.create_default_context(cafile=path)
            except (OSError, ssl.SSLError) as exc:
                raise InvalidValue(f"sync.tls_ca {tls_ca!r} is not a readable PEM CA file: {exc}") from None
        self._client = httpx.Client(
            base_url=self.url, verify=verify, transport=transport, follow_redirects=False,
            timeout=httpx.Timeout(request_timeout, connect=connect_timeout),
            headers={"User-Agent": "cxsync-agent"},
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
        )

    def __repr__(self) -> str:
        return f"HttpEventLog({self.url!r}, tenant={self.tenant!r})"

    # ---- the port ------------------------------------------------------------------------------------------

    def append(self, stream: str, events: Sequence[ContextEvent]) -> list[bytes]:
        validate_stream(stream)
        events = list(events)
        if not events:
            return []
        foreign = [e.event_id for e in events if e.tenant != self.tenant]
        if foreign:  # the server refuses them too; saying so here saves a round trip
            raise PermanentLogError(f"events of another tenant cannot be appended to tenant {self.tenant!r}'s log:"
                                    f" {', '.join(foreign)}", foreign)
        ids = [e.event_id for e in events]
        body = {"stream": stream, "events": [base64.b64encode(encode(e)).decode() for e in events]}
        data = self._call("POST", "/v1/append", ids, json=body)
        cursors = [bytes.fromhex(c) for c in data.get("cursors", [])]
        if len(cursors) != len(events) or any(len(c) != 12 for c in cursors):
            raise TransientLogError(f"the gateway at {self.url} answered an append with {len(cursors)} cursors for"
                                    f" {len(events)} events")
        return cursors

    def read(self, stream: str, after: bytes | None, limit: int = 1000) -> list[LogEntry]:
        after = check_read(stream, after, limit)
        out: list[LogEntry] = []
        cursor = after
        while len(out) < limit:  # the server pages by at most 1000: ask again for larger limits
            page = min(limit - len(out), 1000)
            params = {"stream": stream, "limit": str(page), **({"after": cursor.hex()} if cursor else {})}
            data = self._call("GET", "/v1/read", (), params=params)
            entries = data.get("entries", [])
            for item in entries:
                c = bytes.fromhex(item["cursor"])
                try:
                    blob = base64.b64decode(item["event"])
                except ValueError as exc:
                    raise PermanentLogError(f"the gateway sent a malformed entry at {item['cursor']}: {exc}") from exc
                try:
                    event = decode(blob)
                except CodecError as exc:  # kept aside by the reader, never failing the page (issue 8)
                    out.append(undecodable(c, "", blob, f"undecodable event at {item['cursor']} of {stream}: {exc}"))
                else:
                    out.append(LogEntry(c, event, blob))
                cursor = c
            if len(entries) < page:
                break
        return out

    def wait(self, stream: str, after: bytes | None, timeout: float) -> bool:
        """Long-poll.  The engine waits in short slices (so that a stop is seen quickly); one long-poll of up to
        ``SERVER_MAX_WAIT`` stays open across those slices instead of one request per slice: a slice that ends
        leaves it running, and the next wait for the same stream and cursor picks it up."""
        validate_stream(stream)
        after = check_cursor(after)
        if timeout <= 0:
            return self._poll_once(stream, after, 0.0)
        deadline = time.monotonic() + timeout
        while True:
            poll = self._poll_for(stream, after)
            if not poll.done.wait(max(0.0, deadline - time.monotonic())):
                return False  # still open: the next slice finds it
            with self._lock:
                if self._polls.get(stream) is poll:
                    del self._polls[stream]
            if poll.error is not None:
                raise poll.error
            if poll.newer:
                return True
            if time.monotonic() >= deadline:
                return False

    def _poll_once(self, stream: str, after: bytes | None, wait_for: float) -> bool:
        params = {"stream": stream, "timeout": f"{wait_for:.3f}", **({"after": after.hex()} if after else {})}
        data = self._call("GET", "/v1/wait", (), params=params, timeout=httpx.Timeout(wait_for + 30.0, connect=10.0))
        return bool(data.get("newer"))

    def _poll_for(self, stream: str, after: bytes | None) -> _Poll:
        """The open long-poll of ``stream`` after ``after``, started if there is none (one per stream: a poll
        for an older cursor is left to end on its own)."""
        with self._lock:
            poll = self._polls.get(stream)
            if poll is not None and poll.after == after:
                return poll
            poll = self._polls[stream] = _Poll(after)

        def run() -> None:
            try:
                poll.newer = self._poll_once(stream, after, SERVER_MAX_WAIT)
            except BaseException as exc:  # handed to whichever wait picks the poll up
                poll.error = exc
            finally:
                poll.done.set()

        threading.Thread(target=run, name=f"cxsync-gateway-poll-{stream}", daemon=True).start()
        return poll

    def close(self) -> None:
        self._client.close()  # open long-polls fail at once and their threads end

    def whoami(self) -> dict[str, Any]:
        """What the gateway says the token is (``cxsync login --gateway`` checks a token with it)."""
        return dict(self._call("GET", "/v1/whoami", ()))

    # ---- one request, its errors, and the hold-back ------------------------------------------------------

    def _current_token(self) -> str | None:
        with self._lock:
            if self._token is None:
                self._token = self._token_source()
            return self._token

    def _check_hold(self) -> None:
        with self._lock:
            if self._held is None or time.monotonic() >= self._not_before:
                return
            if isinstance(self._held, GatewayAuthError):
                fresh = self._token_source()  # a login since the refusal lifts the hold at once
                if fresh and fresh != self._held_token:
                    self._token, self._held = fresh, None
                    return
            raise type(self._held)(self._held.title, self._held.hint)

    def _hold(self, exc: TransientLogError, seconds: float, token: str | None = None) -> TransientLogError:
        with self._lock:
            self._held, self._held_token = exc, token
            self._not_before = time.monotonic() + seconds
            if isinstance(exc, GatewayAuthError):
                self._token = None  # read the source again after the hold
        return exc

    def _call(self, method: str, path: str, ids: Sequence[str], **kw: Any) -> Any:
        self._check_hold()
        token = self._current_token()
        if not token:
            raise self._hold(GatewayAuthError(f"needs-auth: no gateway token for {self.url}"), AUTH_BACKOFF_START)
        try:
            resp = self._client.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kw)
        except httpx.ConnectError as exc:
            cause: BaseException | None = exc
            while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
                cause = cause.__cause__ or cause.__context__
            if cause is not None:
                raise GatewayTLSError(f"the certificate of the gateway at {self.url} is not trusted:"
                                      f" {getattr(cause, 'verify_message', '') or cause}") from None
            raise TransientLogError(f"cannot reach the gateway at {self.url}: {exc}") from None
        except httpx.TransportError as exc:
            raise TransientLogError(f"the gateway at {self.url} did not answer: {exc!r}") from None
        if resp.status_code == 200:
            with self._lock:
                self._auth_backoff, self._held = AUTH_BACKOFF_START, None
            try:
                return resp.json()
            except ValueError:
                raise TransientLogError(f"the gateway at {self.url} sent a body that is not JSON") from None
        self._raise_for(resp, ids, token)

    def _raise_for(self, resp: httpx.Response, ids: Sequence[str], token: str) -> Any:
        try:
            problem = resp.json()
            if not isinstance(problem, dict):
                raise ValueError
        except ValueError:
            problem = {"error": "", "message": resp.text[:200]}
        message = str(problem.get("message") or resp.reason_phrase)
        named = [str(i) for i in problem.get("event_ids") or []]
        code = resp.status_code
        retry_after = _retry_after(resp.headers.get("Retry-After"))
        if code == 401:
            with self._lock:
                backoff = self._auth_backoff
                self._auth_backoff = min(backoff * 2, AUTH_BACKOFF_CAP)
            raise self._hold(GatewayAuthError(f"needs-auth: the gateway at {self.url} refused the token: {message}"),
                             backoff, token)
        if code == 429 and problem.get("error") == "quota":
            raise QuotaExceeded(f"the gateway refused the batch: {message}", named or list(ids))
        if code in (429, 503) or code >= 500:
            exc = TransientLogError(f"the gateway at {self.url} is busy or unavailable ({code}): {message}")
            if retry_after:
                raise self._hold(exc, retry_after)
            raise exc
        if code == 403:
            raise PermanentLogError(f"the gateway refused: {message}", named or list(ids))
        if code == 413:
            raise PermanentLogError(f"the gateway refused a request as too large: {message}", named)
        if code == 422 and not ids:  # a read or wait the server found malformed: the caller's mistake
            raise InvalidValue(f"the gateway refused the request: {message}")
        raise PermanentLogError(f"the gateway refused the request ({code}): {message}", named)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), RETRY_AFTER_CAP)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return min(max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0), RETRY_AFTER_CAP)
        except (TypeError, ValueError):
            return None
