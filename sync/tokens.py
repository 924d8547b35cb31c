"""Gateway tokens and tenant quotas, kept in the same backend as the log so that any number of ``cxsync serve``
processes over that backend serve the same tenants (the server keeps no state of its own).

A token reads ``cxs_<tenant>~<id>~<secret>``: the tenant and the record id say where the record lives, the
256-bit random secret is what proves possession.  Only the SHA-256 of the whole token is stored (a fast hash is
right for a random secret: there is no password to guess), and a presented token is compared in constant time.
Editing the tenant or id part changes the hash, so the readable prefix grants nothing.

A record carries its scope: the tenant and user it acts as, the projects it is a member of, whether it is a
``service`` token (every stream of its tenant: backups, mirrors, the contract suite), an expiry, and a revocation
time.  Revoking bumps the tenant's revocation epoch, which every server process watches to end open long-polls of
that token at once.

Quotas per tenant: events per UTC day and bytes stored (the encoded size of what was appended).  A replayed batch
counts again: the quota guards against runaway agents, it is not billing.

Backends: ``SqliteGatewayStore`` (a file beside the embedded log, ``<log>-gateway.db``) and ``FdbGatewayStore``
(keys built by ``cxsync.sync.keys.Keys``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, cast

from cxsync.sync.errors import CxError, InvalidValue
from cxsync.sync.port import validate_name, validate_stream

PREFIX = "cxs_"
_SEP = "~"  # not a name character: the tenant part ends unambiguously
_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")


class TokenError(CxError):
    """A token is missing, malformed, unknown, expired or revoked (HTTP 401)."""


@dataclass(frozen=True)
class TokenRecord:
    tenant: str
    token_id: str
    user: str
    projects: tuple[str, ...] = ()
    service: bool = False
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None
    label: str = ""
    digest: str = field(default="", repr=False)

    def active(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def public(self) -> dict[str, Any]:
        """What ``token list`` shows: never the digest."""
        return {"id": self.token_id, "tenant": self.tenant, "user": self.user, "projects": list(self.projects),
                "service": self.service, "label": self.label, "created_at": _iso(self.created_at),
                "expires_at": _iso(self.expires_at), "revoked_at": _iso(self.revoked_at),
                "state": "revoked" if self.revoked_at is not None else "active" if self.active() else "expired"}

    def to_json(self) -> bytes:
        return json.dumps({"user": self.user, "projects": list(self.projects), "service": self.service,
                           "created_at": self.created_at, "expires_at": self.expires_at,
                           "revoked_at": self.revoked_at, "label": self.label, "digest": self.digest},
                          sort_keys=True).encode()

    @classmethod
    def from_json(cls, tenant: str, token_id: str, raw: bytes) -> TokenRecord:
        d = json.loads(raw)
        return cls(tenant, token_id, str(d["user"]), tuple(d.get("projects") or ()), bool(d.get("service")),
                   float(d.get("created_at") or 0.0), d.get("expires_at"), d.get("revoked_at"),
                   str(d.get("label") or ""), str(d["digest"]))


@dataclass(frozen=True)
class Quota:
    """Per-tenant limits; None is unlimited."""

    events_per_day: int | None = None
    bytes_stored: int | None = None


@dataclass(frozen=True)
class Usage:
    events_today: int
    bytes_stored: int


class QuotaRefused(CxError):
    """The tenant's quota does not admit this batch; ``retry_after`` seconds until it might (None: never)."""

    def __init__(self, title: str, retry_after: int | None) -> None:
        super().__init__(title, "ask the gateway's operator to raise the quota, or wait for the next day")
        self.retry_after = retry_after


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def parse_token(token: str) -> tuple[str, str]:
    """(tenant, id) of a well-formed token; TokenError otherwise (without echoing the token)."""
    if not isinstance(token, str) or not token.startswith(PREFIX) or len(token) > 400:
        raise TokenError("the token is malformed")
    parts = token[len(PREFIX):].split(_SEP)
    if len(parts) != 3 or not _ID_RE.match(parts[1]) or not _SECRET_RE.match(parts[2]):
        raise TokenError("the token is malformed")
    try:
        validate_name("tenant", parts[0])
    except InvalidValue:
        raise TokenError("the token is malformed") from None
    return parts[0], parts[1]


def new_token(tenant: str) -> tuple[str, str]:
    """A fresh (token, id) for ``tenant``."""
    token_id = secrets.token_hex(8)
    return f"{PREFIX}{validate_name('tenant', tenant)}{_SEP}{token_id}{_SEP}{secrets.token_urlsafe(32)}", token_id


_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNIT = {"": 86_400, "s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> float:
    """``90d``, ``12h``, ``30m``, ``2w`` (a bare number is days) to seconds."""
    m = _DURATION_RE.match(text or "")
    if not m or int(m.group(1)) <= 0:
        raise InvalidValue(f"invalid duration {text!r}: use a positive number with s, m, h, d or w (e.g. 90d)")
    return float(int(m.group(1)) * _UNIT[m.group(2)])


def seconds_to_next_day(now: float) -> int:
    return int(86_400 - (now % 86_400)) + 1


def _day(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


class GatewayStore(Protocol):
    """Where the gateway keeps tokens, revocation epochs and quotas: shared by every server process."""

    def put_token(self, record: TokenRecord) -> None: ...

    def get_token(self, tenant: str, token_id: str) -> TokenRecord | None: ...

    def list_tokens(self, tenant: str | None) -> list[TokenRecord]: ...

    def revoke(self, tenant: str, token_id: str, now: float) -> bool: ...

    def revocation_epoch(self, tenant: str) -> int: ...

    def set_quota(self, tenant: str, quota: Quota) -> None: ...

    def get_quota(self, tenant: str) -> Quota: ...

    def usage(self, tenant: str, now: float) -> Usage: ...

    def charge(self, tenant: str, events: int, nbytes: int, now: float) -> None:
        """Check the quota for this batch and count it; QuotaRefused when it does not fit."""

    def ping(self) -> None: ...

    def close(self) -> None: ...


# ---- operations over any store --------------------------------------------------------------------------


def create_token(store: GatewayStore, tenant: str, user: str, projects: Sequence[str] = (), *,
                 service: bool = False, expires_in: float | None = None, label: str = "",
                 now: float | None = None) -> tuple[str, TokenRecord]:
    """Create and store a token; return it (shown once, never stored) and its record."""
    validate_name("tenant", tenant)
    validate_name("user", user)
    for p in projects:
        validate_stream(f"p/{p}")
    if len(label) > 200 or any(ord(c) < 32 for c in label):
        raise InvalidValue("a token label is at most 200 printable characters")
    now = time.time() if now is None else now
    token, token_id = new_token(tenant)
    record = TokenRecord(tenant, token_id, user, tuple(dict.fromkeys(projects)), service, now,
                         None if expires_in is None else now + expires_in, None, label, digest(token))
    store.put_token(record)
    return token, record


def authenticate(store: GatewayStore, token: str, now: float | None = None) -> TokenRecord:
    """The active record of ``token``; TokenError for anything else (one message: no oracle for guessers)."""
    tenant, token_id = parse_token(token)
    record = store.get_token(tenant, token_id)
    if record is None or not hmac.compare_digest(record.digest, digest(token)):
        raise TokenError("the token is not valid")
    if record.revoked_at is not None:
        raise TokenError("the token has been revoked")
    if not record.active(now):
        raise TokenError("the token has expired")
    return record


def check_quota(quota: Quota, usage: Usage, events: int, nbytes: int, now: float) -> None:
    if quota.events_per_day is not None and usage.events_today + events > quota.events_per_day:
        raise QuotaRefused(f"daily event quota reached: {usage.events_today} of {quota.events_per_day} events today,"
                           f" this batch has {events}", seconds_to_next_day(now))
    if quota.bytes_stored is not None and usage.bytes_stored + nbytes > quota.bytes_stored:
        raise QuotaRefused(f"storage quota reached: {usage.bytes_stored} of {quota.bytes_stored} bytes stored,"
                           f" this batch adds {nbytes}", None)


# ---- SQLite ---------------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens(tenant TEXT NOT NULL, id TEXT NOT NULL, record BLOB NOT NULL,
                                  PRIMARY KEY (tenant, id));
CREATE TABLE IF NOT EXISTS epochs(tenant TEXT PRIMARY KEY, epoch INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS quotas(tenant TEXT PRIMARY KEY, events_per_day INTEGER, bytes_stored INTEGER);
CREATE TABLE IF NOT EXISTS usage_days(tenant TEXT NOT NULL, day TEXT NOT NULL, events INTEGER NOT NULL,
                                      PRIMARY KEY (tenant, day));
CREATE TABLE IF NOT EXISTS usage_bytes(tenant TEXT PRIMARY KEY, bytes INTEGER NOT NULL);
"""


def sqlite_store_path(log_path: str | os.PathLike[str]) -> Path:
    return Path(f"{os.path.abspath(os.fspath(log_path))}-gateway.db")


class SqliteGatewayStore:
    """Tokens and quotas in a SQLite file beside the embedded log (the processes of one host share it)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import apsw

        self.path = Path(path)
        self._lock = threading.Lock()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # digests only, but nobody else's business
        os.close(fd)
        self._conn = apsw.Connection(str(self.path))
        self._conn.set_busy_timeout(5_000)
        self._conn.pragma("journal_mode", "wal")
        self._conn.pragma("synchronous", "FULL")
        with self._tx():
            self._conn.execute(_SCHEMA)

    def _tx(self) -> Any:
        store = self

        class _Tx:
            def __enter__(self) -> None:
                store._lock.acquire()
                store._conn.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type: Any, *rest: Any) -> None:
                try:
                    store._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
                finally:
                    store._lock.release()

        return _Tx()

    def _one(self, sql: str, args: tuple[Any, ...]) -> Any:
        with self._lock:
            return self._conn.execute(sql, args).fetchone()

    def put_token(self, record: TokenRecord) -> None:
        with self._tx():
            self._conn.execute("INSERT OR REPLACE INTO tokens VALUES (?, ?, ?)",
                               (record.tenant, record.token_id, record.to_json()))

    def get_token(self, tenant: str, token_id: str) -> TokenRecord | None:
        row = self._one("SELECT record FROM tokens WHERE tenant = ? AND id = ?", (tenant, token_id))
        return None if row is None else TokenRecord.from_json(tenant, token_id, row[0])

    def list_tokens(self, tenant: str | None) -> list[TokenRecord]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT tenant, id, record FROM tokens WHERE ?1 IS NULL OR tenant = ?1 ORDER BY tenant, id",
                (tenant,)).fetchall()
        return [TokenRecord.from_json(str(t), str(i), bytes(cast(bytes, r))) for t, i, r in rows]

    def revoke(self, tenant: str, token_id: str, now: float) -> bool:
        with self._tx():
            row = self._conn.execute("SELECT record FROM tokens WHERE tenant = ? AND id = ?",
                                     (tenant, token_id)).fetchone()
            if row is None:
                return False
            rec = TokenRecord.from_json(tenant, token_id, row[0])
            if rec.revoked_at is None:
                rec = TokenRecord(**{**rec.__dict__, "revoked_at": now})
                self._conn.execute("UPDATE tokens SET record = ? WHERE tenant = ? AND id = ?",
                                   (rec.to_json(), tenant, token_id))
            self._conn.execute("INSERT INTO epochs VALUES (?, 1) ON CONFLICT(tenant) DO UPDATE SET epoch = epoch + 1",
                               (tenant,))
            return True

    def revocation_epoch(self, tenant: str) -> int:
        row = self._one("SELECT epoch FROM epochs WHERE tenant = ?", (tenant,))
        return 0 if row is None else int(row[0])

    def set_quota(self, tenant: str, quota: Quota) -> None:
        with self._tx():
            self._conn.execute("INSERT OR REPLACE INTO quotas VALUES (?, ?, ?)",
                               (validate_name("tenant", tenant), quota.events_per_day, quota.bytes_stored))

    def get_quota(self, tenant: str) -> Quota:
        row = self._one("SELECT events_per_day, bytes_stored FROM quotas WHERE tenant = ?", (tenant,))
        return Quota() if row is None else Quota(row[0], row[1])

    def usage(self, tenant: str, now: float) -> Usage:
        with self._lock:
            return self._usage(tenant, now)

    def _usage(self, tenant: str, now: float) -> Usage:
        day = self._conn.execute("SELECT events FROM usage_days WHERE tenant = ? AND day = ?",
                                 (tenant, _day(now))).fetchone()
        nbytes = self._conn.execute("SELECT bytes FROM usage_bytes WHERE tenant = ?", (tenant,)).fetchone()
        return Usage(int(day[0]) if day else 0, int(nbytes[0]) if nbytes else 0)

    def charge(self, tenant: str, events: int, nbytes: int, now: float) -> None:
        with self._tx():
            row = self._conn.execute("SELECT events_per_day, bytes_stored FROM quotas WHERE tenant = ?",
                                     (tenant,)).fetchone()
            check_quota(Quota() if row is None else Quota(row[0], row[1]), self._usage(tenant, now), events,
                        nbytes, now)
            self._conn.execute("INSERT INTO usage_days VALUES (?, ?, ?) ON CONFLICT(tenant, day)"
                               " DO UPDATE SET events = events + excluded.events", (tenant, _day(now), events))
            self._conn.execute("INSERT INTO usage_bytes VALUES (?, ?) ON CONFLICT(tenant)"
                               " DO UPDATE SET bytes = bytes + excluded.bytes", (tenant, nbytes))

    def ping(self) -> None:
        self._one("SELECT 1", ())

    def close(self) -> None:
        with self._lock:
            self._conn.close()


# ---- FoundationDB ---------------------------------------------------------------------------------------


def _le64(n: int) -> bytes:
    return int(n).to_bytes(8, "little", signed=True)


def _int(raw: Any) -> int:
    return 0 if raw is None else int.from_bytes(bytes(raw)[:8].ljust(8, b"\x00"), "little", signed=True)


class FdbGatewayStore:
    """Tokens and quotas in FoundationDB, under each tenant's keys (``Keys.gateway_*``)."""

    def __init__(self, database: Any, retry_limit: int = 50, timeout_ms: int = 10_000) -> None:
        self.database = database
        self._retry_limit = retry_limit
        self._timeout_ms = timeout_ms

    def _run(self, body: Callable[[Any], Any]) -> Any:
        import fdb

        from cxsync.sync.port import TransientLogError

        tr = self.database.create_transaction()
        tr.options.set_timeout(self._timeout_ms)
        for _ in range(self._retry_limit):
            try:
                result = body(tr)
                tr.commit().wait()
                return result
            except fdb.FDBError as exc:
                try:
                    tr.on_error(exc).wait()
                except fdb.FDBError as final:
                    raise TransientLogError(f"FoundationDB: {final}") from final
        raise TransientLogError("FoundationDB: too many retries")

    @staticmethod
    def _keys(tenant: str) -> Any:
        from cxsync.sync.keys import Keys

        return Keys(tenant)

    def put_token(self, record: TokenRecord) -> None:
        key = self._keys(record.tenant).gateway_token(record.token_id)
        self._run(lambda tr: tr.set(key, record.to_json()))

    def get_token(self, tenant: str, token_id: str) -> TokenRecord | None:
        key = self._keys(tenant).gateway_token(token_id)
        raw = self._run(lambda tr: (lambda v: bytes(v) if v.present() else None)(tr.get(key)))
        return None if raw is None else TokenRecord.from_json(tenant, token_id, raw)

    def list_tokens(self, tenant: str | None) -> list[TokenRecord]:
        if tenant is None:
            raise InvalidValue("with a FoundationDB backend, name the tenant: --tenant T")
        keys = self._keys(tenant)
        begin, end = keys.gateway_token_range()
        rows = self._run(lambda tr: [(bytes(kv.key), bytes(kv.value)) for kv in tr.get_range(begin, end)])
        return [TokenRecord.from_json(tenant, keys.gateway_token_id(k), v) for k, v in rows]

    def revoke(self, tenant: str, token_id: str, now: float) -> bool:
        keys = self._keys(tenant)
        key = keys.gateway_token(token_id)

        def body(tr: Any) -> bool:
            v = tr.get(key)
            if not v.present():
                return False
            rec = TokenRecord.from_json(tenant, token_id, bytes(v))
            if rec.revoked_at is None:
                tr.set(key, TokenRecord(**{**rec.__dict__, "revoked_at": now}).to_json())
            tr.add(keys.gateway_epoch(), _le64(1))
            return True

        return bool(self._run(body))

    def revocation_epoch(self, tenant: str) -> int:
        key = self._keys(tenant).gateway_epoch()
        return int(self._run(lambda tr: _int((lambda v: bytes(v) if v.present() else None)(tr.get(key)))))

    def set_quota(self, tenant: str, quota: Quota) -> None:
        keys = self._keys(tenant)

        def body(tr: Any) -> None:
            for name, value in (("events_per_day", quota.events_per_day), ("bytes_stored", quota.bytes_stored)):
                if value is None:
                    tr.clear(keys.gateway_quota(name))
                else:
                    tr.set(keys.gateway_quota(name), _le64(value))

        self._run(body)

    def _quota(self, tr: Any, tenant: str) -> Quota:
        keys = self._keys(tenant)
        vals = [tr.snapshot.get(keys.gateway_quota(n)) for n in ("events_per_day", "bytes_stored")]
        ev, nb = (_int(bytes(v)) if v.present() else None for v in vals)
        return Quota(ev, nb)

    def get_quota(self, tenant: str) -> Quota:
        return Quota(*self._run(lambda tr: tuple(self._quota(tr, tenant).__dict__.values())))

    def _usage(self, tr: Any, tenant: str, now: float) -> Usage:
        keys = self._keys(tenant)
        day = tr.snapshot.get(keys.gateway_usage("events", _day(now)))
        nbytes = tr.snapshot.get(keys.gateway_usage("bytes"))
        return Usage(_int(bytes(day)) if day.present() else 0, _int(bytes(nbytes)) if nbytes.present() else 0)

    def usage(self, tenant: str, now: float) -> Usage:
        u = self._run(lambda tr: self._usage(tr, tenant, now))
        return Usage(u.events_today, u.bytes_stored)

    def charge(self, tenant: str, events: int, nbytes: int, now: float) -> None:
        keys = self._keys(tenant)

        def body(tr: Any) -> None:
            # Snapshot reads and atomic adds: appenders never conflict on the counters; concurrent batches may
            # together overshoot a limit by what they carry.
            check_quota(self._quota(tr, tenant), self._usage(tr, tenant, now), events, nbytes, now)
            tr.add(keys.gateway_usage("events", _day(now)), _le64(events))
            tr.add(keys.gateway_usage("bytes"), _le64(nbytes))

        self._run(body)

    def ping(self) -> None:
        self._run(lambda tr: tr.get_read_version().wait())

    def close(self) -> None:
        pass
