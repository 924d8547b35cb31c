"""The FoundationDB EventLog adapter, on the official ``foundationdb`` binding.

Append is idempotent in one transaction per bounded group of events: the event-id dedup key is read and written
in the same transaction as the versionstamped log key, the stream head, the seed's view keys and the quota
counters, so a retry after ``commit_unknown_result`` (1021) finds the dedup keys and returns the original cursors
instead of writing twice.  Read pages the stream in short transactions bounded by the stream's explicit key
range.  Wait watches the per-stream head key, which every append rewrites with ``set_versionstamped_value``.

Only this module and ``keys.py`` import ``fdb``; the binding's native layer (``libfdb_c``) is loaded on the first
``FdbEventLog``, so the rest of cxsync starts and works without it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import fdb
import fdb.tuple

from cxsync.sync.events import CodecError, ContextEvent, decode, encode
from cxsync.sync.keys import EventViews, Keys, versionstamped_cursor_param
from cxsync.sync.port import (
    LogEntry,
    undecodable,
    LogError,
    PermanentLogError,
    QuotaExceeded,
    TransientLogError,
    check_cursor,
    check_read,
    validate_stream,
)

SUPPORTED_API_VERSIONS = (730, 800)
DEFAULT_API_VERSION = 730
ENV_CLUSTER_FILE = "CXSYNC_FDB_CLUSTER_FILE"
ENV_API_VERSION = "CXSYNC_FDB_API_VERSION"

# FoundationDB's hard limits, and the margins cxsync keeps under them.
KEY_LIMIT = 10_000
VALUE_LIMIT = 100_000
CHUNK_BYTES = 90_000  # below VALUE_LIMIT: a chunk never trips 2103
MAX_EVENT_BYTES = 8_000_000  # one event must fit a 10 MB transaction with its keys and views
DEFAULT_MAX_BATCH_BYTES = 2_000_000  # FDB advises ~1 MB transactions; 2 MB keeps appends far from 10 MB / 5 s
MAX_BATCH_EVENTS = 500  # bounds dedup reads per transaction; user versions stay far below 65,535
READ_PAGE_KEYS = 256
READ_PAGE_BYTES = 4_000_000  # chunked events make keys an unreliable measure of a page's cost

_MANIFEST = b"\x00"  # first byte of a chunked entry; never a codec version (those start at 1)
_TOO_LARGE = {2101: "transaction_too_large", 2102: "key_too_large", 2103: "value_too_large"}
_TOO_OLD = 1007

INSTALL_HINT = (
    "install the FoundationDB client library (libfdb_c) for this platform: the 'foundationdb-clients' package "
    "(.deb/.rpm, or the macOS .pkg / Windows .msi) from FoundationDB's GitHub releases, of the same major.minor "
    "version as the cluster; and pin the Python binding to match it: foundationdb==7.3.* with api_version 730 for "
    "a 7.3 cluster, foundationdb==8.0.* (api_version 730 or 800) for an 8.0 cluster"
)


class LogConfigError(LogError):
    """The log cannot be used as configured (not the events' fault: fix the set-up, then retry)."""

    def __str__(self) -> str:
        return f"{self.title}: {self.hint}" if self.hint else self.title


class FdbUnavailable(LogConfigError):
    """The FoundationDB client library cannot be loaded or does not match the binding."""


@dataclass(frozen=True)
class Quota:
    """Per-tenant limits, stored in the tenant's metadata keys; None leaves a limit unset (unlimited)."""

    max_events: int | None = None
    max_bytes: int | None = None


@dataclass
class _Planned:
    """One new event's writes, computed before any transaction (keys built, sizes checked)."""

    event: ContextEvent
    user_version: int
    value_key: bytes
    value: bytes  # the encoded event, or a chunk manifest
    dedup_key: bytes
    views: EventViews
    self_ref: bytes  # set_versionstamped_value parameter: (stream, this event's versionstamp)
    index_ref: bytes  # the same plus the knowledge kind, for the knowledge index
    stored_bytes: int  # what the quota counts: the encoded event size
    chunks: list[tuple[bytes, bytes]] = field(default_factory=list)


# ---- process-wide binding state: the API version and network options are set once per process -------------

_binding_lock = threading.Lock()
_network_tls: Mapping[str, Any] | None = None
_network_opened = False

_TLS_OPTIONS = {  # tls key -> (network option setter, kind), in the order they are set: password before key
    "password": ("set_tls_password", str),
    "cert_path": ("set_tls_cert_path", str),
    "key_path": ("set_tls_key_path", str),
    "ca_path": ("set_tls_ca_path", str),
    "verify_peers": ("set_tls_verify_peers", bytes),
    "disable_plaintext": ("set_tls_disable_plaintext_connection", bool),
}
_TLS_ALIASES = {"cert": "cert_path", "key": "key_path", "ca": "ca_path"}  # the config file's tls_cert/_key/_ca


def select_api_version(requested: int | None = None) -> int:
    """Select the binding's API version once per process: the requested one, else ``CXSYNC_FDB_API_VERSION``,
    else the one already selected, else 730.  Loading ``fdb.impl`` loads ``libfdb_c``: its absence becomes a
    clear ``FdbUnavailable``."""
    if requested is None:
        env = os.environ.get(ENV_API_VERSION, "").strip()
        if env:
            try:
                requested = int(env)
            except ValueError:
                raise LogConfigError(f"{ENV_API_VERSION}={env!r} is not a number",
                                     f"use one of {SUPPORTED_API_VERSIONS}") from None
    with _binding_lock:
        if fdb.is_api_version_selected():
            current = int(fdb.get_api_version())
            if requested is not None and requested != current:
                raise LogConfigError(
                    f"FoundationDB API version {current} is already selected in this process; {requested} was "
                    "requested",
                    "the binding selects one API version per process: use the same api_version everywhere",
                )
            if current not in SUPPORTED_API_VERSIONS:
                raise LogConfigError(f"this process selected FoundationDB API version {current}",
                                     f"cxsync needs one of {SUPPORTED_API_VERSIONS}")
            return current
        version = DEFAULT_API_VERSION if requested is None else requested
        if version not in SUPPORTED_API_VERSIONS:
            raise LogConfigError(f"FoundationDB API version {version} is not supported by cxsync",
                                 f"use one of {SUPPORTED_API_VERSIONS}")
        try:
            fdb.api_version(version)
        except Exception as exc:  # the binding raises a bare Exception (or OSError) when libfdb_c is missing
            loaded = "fdb.impl" in sys.modules  # a failed import leaves nothing behind
            title = ("the installed FoundationDB client library does not match the Python binding" if loaded
                     else "the FoundationDB client library could not be loaded")
            raise FdbUnavailable(f"{title} ({exc})", INSTALL_HINT) from exc
        return version


def _canonical_tls(tls: Mapping[str, Any] | None) -> dict[str, Any]:
    out = {_TLS_ALIASES.get(k, k): v for k, v in (tls or {}).items() if v is not None}
    unknown = sorted(set(out) - set(_TLS_OPTIONS))
    if unknown:
        raise LogConfigError(f"unknown FoundationDB TLS option(s) {unknown}",
                             f"known: {sorted(_TLS_OPTIONS)} (or cert, key, ca)")
    return out


def _apply_tls(tls: Mapping[str, Any] | None) -> None:
    """TLS settings are network options: they only take effect before the first database is opened."""
    global _network_tls
    wanted = _canonical_tls(tls)
    if _network_opened:
        if wanted and wanted != (_network_tls or {}):
            raise LogConfigError(
                "FoundationDB TLS options must be set before the first database is opened in this process",
                "give every FdbEventLog of the process the same tls settings",
            )
        return
    for name, (setter, kind) in _TLS_OPTIONS.items():
        if name not in wanted:
            continue
        value = wanted[name]
        option = getattr(fdb.options, setter)
        try:
            if kind is bool:
                if value:
                    option()
            elif kind is bytes:
                option(value.encode() if isinstance(value, str) else bytes(value))
            else:
                option(str(value))
        except fdb.FDBError as exc:
            raise LogConfigError(f"FoundationDB rejected TLS option {name!r}: {exc}",
                                 "check the certificate, key and CA paths and the key password") from exc
    _network_tls = wanted


def _open_database(cluster_file: str | None, tls: Mapping[str, Any] | None) -> Any:
    global _network_opened
    with _binding_lock:
        _apply_tls(tls)
        try:
            db = fdb.open(cluster_file)
        except fdb.FDBError as exc:
            raise LogConfigError(f"cannot open the FoundationDB cluster file {cluster_file or '(default)'}: {exc}",
                                 f"point {ENV_CLUSTER_FILE} or the fdb target at a readable fdb.cluster") from exc
        _network_opened = True
        return db


def _le64(n: int) -> bytes:
    return n.to_bytes(8, "little", signed=True)


def _int_value(raw: Any) -> int | None:
    return None if raw is None else int.from_bytes(bytes(raw)[:8].ljust(8, b"\x00"), "little", signed=True)


def _get(tr: Any, key: bytes) -> bytes | None:
    v = tr.get(key)
    return bytes(v) if v.present() else None


# ---- the adapter ------------------------------------------------------------------------------------------


class FdbEventLog:
    """EventLog on a FoundationDB cluster; one instance per tenant, safe to share between threads."""

    def __init__(
        self,
        tenant: str,
        *,
        cluster_file: str | None = None,
        api_version: int | None = None,
        tls: Mapping[str, Any] | None = None,
        database: Any = None,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        quota: Quota | None = None,
        retry_limit: int = 50,
        operation_timeout: float = 30.0,
        watch_fallback_interval: float = 1.0,
    ) -> None:
        self.keys = Keys(tenant)  # validates the tenant name before anything touches the network
        self.tenant = tenant
        self.api_version = select_api_version(api_version)
        self.cluster_file = cluster_file if cluster_file is not None else os.environ.get(ENV_CLUSTER_FILE) or None
        self.database = database if database is not None else _open_database(self.cluster_file, tls)
        self.max_batch_bytes = max(1, int(max_batch_bytes))
        self.retry_limit = retry_limit
        self.operation_timeout = operation_timeout
        self.watch_fallback_interval = watch_fallback_interval
        self._closed = threading.Event()
        self._watches: set[Any] = set()
        self._watch_lock = threading.Lock()
        self._identity: tuple[str, float] | None = None
        if quota is not None:
            self.set_quota(quota)

    # ---- the retry loop ----------------------------------------------------------------------------------

    def _run(self, body: Any, event_ids: Sequence[str] = (), timeout: float | None = None,
             on_retry: Any = None) -> Any:
        """Run ``body(tr)`` in a transaction until it succeeds; ``tr.on_error`` decides what is retryable and
        backs off.  ``body`` commits itself when it writes.  Bounded by ``retry_limit`` and a transaction
        timeout, so an unreachable cluster becomes a TransientLogError instead of a hang.  ``on_retry(exc)``
        may adapt the next attempt (a read shrinks its page after ``transaction_too_old``)."""
        if self._closed.is_set():
            raise PermanentLogError(f"{self!r} is closed")
        tr = self.database.create_transaction()
        # set once: from API 610 on, the timeout and its clock survive on_error, so it bounds every attempt
        tr.options.set_timeout(max(1, int((self.operation_timeout if timeout is None else timeout) * 1000)))
        attempts = 0
        while True:
            try:
                return body(tr)
            except fdb.FDBError as exc:
                attempts += 1
                if exc.code in _TOO_LARGE:
                    raise PermanentLogError(f"FoundationDB refused the write: {_TOO_LARGE[exc.code]} ({exc.code})",
                                            event_ids) from exc
                if attempts > self.retry_limit:
                    raise TransientLogError(f"FoundationDB: gave up after {attempts} attempts: {exc}") from exc
                try:
                    tr.on_error(exc).wait()
                except fdb.FDBError as final:
                    raise self._map_error(final, event_ids) from final
                if on_retry is not None:
                    on_retry(exc)

    @staticmethod
    def _map_error(exc: Any, event_ids: Sequence[str]) -> LogError:
        code = int(exc.code)
        if code in _TOO_LARGE:
            return PermanentLogError(f"FoundationDB refused the write: {_TOO_LARGE[code]} ({code})", event_ids)
        if 2000 <= code < 3000:  # client/API misuse: the same call fails the same way
            return PermanentLogError(f"FoundationDB rejected the operation: {exc}", event_ids)
        if code in (1021, 1031):  # the commit may have landed: the dedup keys make the caller's retry safe
            return TransientLogError(f"FoundationDB commit outcome unknown ({exc}); a retry is safe")
        return TransientLogError(f"FoundationDB unavailable or busy: {exc}")

    # ---- append ------------------------------------------------------------------------------------------

    def append(self, stream: str, events: Sequence[ContextEvent]) -> list[bytes]:
        """One transaction per group of at most ``max_batch_bytes`` / 500 events, each idempotent on its own.
        A failure in a later group leaves the earlier groups appended; retrying the batch returns their
        cursors.  QuotaExceeded names the first new event that does not fit and every new event after it."""
        validate_stream(stream)
        if not events:
            return []
        wrong = [e.event_id for e in events if e.tenant != self.tenant]
        if wrong:
            raise PermanentLogError(f"events of another tenant cannot be appended to tenant {self.tenant!r}", wrong)
        first: dict[str, int] = {}  # event_id -> index of its first occurrence in the batch
        unique: list[ContextEvent] = []
        for e in events:
            if e.event_id not in first:
                first[e.event_id] = len(unique)
                unique.append(e)
        blobs = self._encode_all(stream, unique)
        cursors: list[bytes] = []
        for group in self._groups(unique, blobs):
            cursors.extend(self._append_group(stream, group))
        return [cursors[first[e.event_id]] for e in events]

    def _encode_all(self, stream: str, events: list[ContextEvent]) -> list[bytes]:
        """Encode and check every event up front so that an unfit event fails the batch before any write."""
        blobs: list[bytes] = []
        bad: list[str] = []
        reasons: list[str] = []
        for e in events:
            try:
                blob = encode(e)
                views = self.keys.views_for(stream, e)
                keys = [self.keys.event_id(stream, e.event_id), *views.keys(),
                        *(self.keys.shared("decisions", kid) for kid, _ in views.shares)]
            except (CodecError, ValueError, TypeError) as exc:
                bad.append(e.event_id)
                reasons.append(str(exc))
                blobs.append(b"")
                continue
            if len(blob) > MAX_EVENT_BYTES:
                bad.append(e.event_id)
                reasons.append(f"encoded size {len(blob)} B exceeds {MAX_EVENT_BYTES} B")
            elif any(len(k) > KEY_LIMIT for k in keys):
                bad.append(e.event_id)
                reasons.append(f"a key exceeds FoundationDB's {KEY_LIMIT} B key limit")
            blobs.append(blob)
        if bad:
            raise PermanentLogError(f"{len(bad)} event(s) cannot be stored: {'; '.join(reasons[:3])}", bad)
        return blobs

    def _groups(self, events: list[ContextEvent], blobs: list[bytes]) -> list[list[tuple[ContextEvent, bytes]]]:
        """Split a batch into transactions bounded by bytes and count; an oversized event travels alone."""
        groups: list[list[tuple[ContextEvent, bytes]]] = [[]]
        size = 0
        for e, blob in zip(events, blobs, strict=True):
            cost = len(blob) + 512  # keys, dedup, views and head: a few hundred bytes per event
            if groups[-1] and (size + cost > self.max_batch_bytes or len(groups[-1]) >= MAX_BATCH_EVENTS):
                groups.append([])
                size = 0
            groups[-1].append((e, blob))
            size += cost
        return groups

    def _plan(self, stream: str, user_version: int, event: ContextEvent, blob: bytes) -> _Planned:
        k = self.keys
        views = k.views_for(stream, event)
        kind = views.knowledge[1] if views.knowledge else ""
        p = _Planned(event=event, user_version=user_version,
                     value_key=k.log_key_versionstamped(stream, user_version), value=blob,
                     dedup_key=k.event_id(stream, event.event_id), views=views,
                     self_ref=k.view_ref_versionstamped(stream, user_version),
                     index_ref=k.view_ref_versionstamped(stream, user_version, kind), stored_bytes=len(blob))
        if len(blob) > VALUE_LIMIT:
            # a transcript line can be megabytes: the log entry becomes a manifest, the bytes go to chunk keys
            # written in the same transaction, so a reader sees all of them or none
            pieces = [blob[i:i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)]
            p.value = _MANIFEST + fdb.tuple.pack((len(pieces), len(blob), hashlib.sha256(blob).digest()))
            p.chunks = [(k.chunk_key_versionstamped(stream, user_version, i), piece)
                        for i, piece in enumerate(pieces)]
        return p

    def _append_group(self, stream: str, group: list[tuple[ContextEvent, bytes]]) -> list[bytes]:
        plans = [self._plan(stream, uv, e, blob) for uv, (e, blob) in enumerate(group)]
        ids = [p.event.event_id for p in plans]
        head_key = self.keys.head(stream)

        def body(tr: Any) -> list[bytes]:
            # the dedup reads are real (not snapshot) reads: two appenders of the same event conflict, and
            # the loser's retry finds the winner's dedup key
            found = [tr.get(p.dedup_key) for p in plans]
            existing = {p.event.event_id: bytes(v) for p, v in zip(plans, found, strict=True) if v.present()}
            new = [p for p in plans if p.event.event_id not in existing]
            if not new:
                return [existing[i] for i in ids]
            self._check_quota(tr, new)
            shares = self._resolve_shares(tr, new)  # reads first: a read after a versionstamped write is 1036
            for p in new:
                tr.set_versionstamped_key(p.value_key, p.value)
                for ck, piece in p.chunks:
                    tr.set_versionstamped_key(ck, piece)
                tr.set_versionstamped_value(p.dedup_key, versionstamped_cursor_param(p.user_version))
                for vk in p.views.refs:
                    tr.set_versionstamped_value(vk, p.self_ref)
                if p.views.index_key is not None:
                    tr.set_versionstamped_value(p.views.index_key, p.index_ref)
            for key, value, stamped in shares:
                (tr.set_versionstamped_value if stamped else tr.set)(key, value)
            # a blind write (no read): appenders never conflict on the head; watchers wake on every change
            tr.set_versionstamped_value(head_key, versionstamped_cursor_param(new[-1].user_version))
            tr.add(self.keys.usage("events"), _le64(len(new)))
            tr.add(self.keys.usage("bytes"), _le64(sum(p.stored_bytes for p in new)))
            stamp = tr.get_versionstamp()  # must be requested before commit; resolves after it
            tr.commit().wait()
            vs = bytes(stamp.wait())
            mine = {p.event.event_id: vs + p.user_version.to_bytes(2, "big") for p in new}
            return [existing.get(i) or mine[i] for i in ids]

        result: list[bytes] = self._run(body, ids)
        return result

    def _resolve_shares(self, tr: Any, new: list[_Planned]) -> list[tuple[bytes, bytes, bool]]:
        """(key, value, versionstamped?) for every share view: it references the knowledge's extraction, found
        in this very transaction or through the knowledge index.  A team share whose kind is unknown files
        nothing; a project share of unknown knowledge references the share event itself."""
        extracted = {p.views.knowledge[0]: p for p in new if p.views.knowledge}
        wanted = {kid for p in new for kid, _ in p.views.shares if kid not in extracted}
        # snapshot: the index entry of an id is written once; a conflict on it would only cost retries
        looked = {kid: tr.snapshot.get(self.keys.knowledge(kid)) for kid in sorted(wanted)}
        out: list[tuple[bytes, bytes, bool]] = []
        for p in new:
            for kid, target in p.views.shares:
                if kid in extracted:
                    q = extracted[kid]
                    key = self.keys.share_target(target, (q.views.knowledge or ("", ""))[1] or None, kid)
                    if key is not None:
                        out.append((key, q.self_ref, True))
                elif looked[kid].present():
                    src, cursor, extra = self.keys.unpack_view_ref(bytes(looked[kid]))
                    key = self.keys.share_target(target, str(extra[0]) if extra else None, kid)
                    if key is not None:
                        out.append((key, self.keys.view_ref(src, cursor), False))
                else:
                    key = self.keys.share_target(target, None, kid)
                    if key is not None:
                        out.append((key, p.self_ref, True))
        return out

    def _check_quota(self, tr: Any, new: list[_Planned]) -> None:
        """Snapshot reads keep appenders from conflicting on the counters; the price is that concurrent
        appenders may together overshoot a limit by their in-flight batches."""
        snap = tr.snapshot
        limits = {n: snap.get(self.keys.limit(n)) for n in ("events", "bytes")}
        max_events = _int_value(limits["events"].value) if limits["events"].present() else None
        max_bytes = _int_value(limits["bytes"].value) if limits["bytes"].present() else None
        if max_events is None and max_bytes is None:
            return
        used_events = _int_value(_get(snap, self.keys.usage("events"))) or 0
        used_bytes = _int_value(_get(snap, self.keys.usage("bytes"))) or 0
        for i, p in enumerate(new):
            used_events += 1
            used_bytes += p.stored_bytes
            if (max_events is not None and used_events > max_events) or (
                    max_bytes is not None and used_bytes > max_bytes):
                # order is kept: the first event that does not fit and every new one after it are refused
                refused = [q.event.event_id for q in new[i:]]
                raise QuotaExceeded(
                    f"tenant {self.tenant!r} quota exceeded (limits: {max_events} events, {max_bytes} bytes;"
                    f" used: {used_events - 1} events, {used_bytes - p.stored_bytes} bytes): "
                    f"{len(refused)} event(s) not appended", refused)

    def set_quota(self, quota: Quota) -> None:
        """Write the tenant's limits (an operator action; every agent of the tenant obeys them)."""
        def body(tr: Any) -> None:
            for name, value in (("events", quota.max_events), ("bytes", quota.max_bytes)):
                if value is None:
                    tr.clear(self.keys.limit(name))
                else:
                    tr.set(self.keys.limit(name), _le64(int(value)))
            tr.commit().wait()

        self._run(body)

    def usage(self) -> dict[str, int]:
        """The tenant's usage counters, as the quota check sees them."""
        def body(tr: Any) -> dict[str, int]:
            return {n: _int_value(_get(tr, self.keys.usage(n))) or 0 for n in ("events", "bytes")}

        result: dict[str, int] = self._run(body)
        return result

    # ---- read --------------------------------------------------------------------------------------------

    def read(self, stream: str, after: bytes | None, limit: int = 1000) -> list[LogEntry]:
        after = check_read(stream, after, limit)
        begin, end = self.keys.log_range(stream)
        selector = (fdb.KeySelector.first_greater_than(self.keys.log_key(stream, after)) if after is not None
                    else fdb.KeySelector.first_greater_or_equal(begin))
        out: list[LogEntry] = []
        page = [READ_PAGE_KEYS]

        def shrink(exc: Any) -> None:
            if exc.code == _TOO_OLD:  # a page of large events outlived the 5 s window: ask for less
                page[0] = max(1, page[0] // 4)

        while len(out) < limit:
            left = limit - len(out)
            entries, last_key, exhausted = self._run(
                lambda tr, sel=selector, n=left: self._read_page(tr, stream, sel, end, min(n, page[0])),
                on_retry=shrink)
            out.extend(entries)
            if exhausted or last_key is None:
                break
            selector = fdb.KeySelector.first_greater_than(last_key)  # a fresh, short transaction per page
        return out

    def _read_page(self, tr: Any, stream: str, selector: Any, end: bytes,
                   want: int) -> tuple[list[LogEntry], bytes | None, bool]:
        """One page: (entries, key of the last entry, True if the stream has nothing more)."""
        kvs = list(tr.get_range(selector, end, limit=want))
        exhausted = len(kvs) < want
        # chunk ranges are requested together before any is waited on; the page stops early once it holds
        # READ_PAGE_BYTES (the manifest says how large a chunked event is before its chunks are read)
        pending: list[tuple[bytes, bytes, Any]] = []
        size = 0
        last_key: bytes | None = None
        for kv in kvs:
            key, value = bytes(kv.key), bytes(kv.value)
            cursor = self.keys.cursor_of(stream, key)
            chunks = None
            entry_size = len(value)
            if value[:1] == _MANIFEST:
                entry_size = int(fdb.tuple.unpack(value[1:])[1])
                if pending and size + entry_size > READ_PAGE_BYTES:
                    exhausted = False
                    break
                cb, ce = self.keys.chunk_range(stream, cursor)
                chunks = tr.get_range(cb, ce)
            pending.append((cursor, value, chunks))
            last_key = key
            size += entry_size
        entries = [self._entry(stream, c, v, ch) for c, v, ch in pending]
        return entries, last_key, exhausted

    def _entry(self, stream: str, cursor: bytes, value: bytes, chunks: Any) -> LogEntry:
        """Decode one entry; a corrupt or foreign one is handed on as undecodable, never failing the page
        (it would fail every read the same way and stall the stream)."""
        try:
            if chunks is not None:
                count, total, digest = fdb.tuple.unpack(value[1:])
                blob = b"".join(bytes(kv.value) for kv in chunks)
                if len(blob) != total or hashlib.sha256(blob).digest() != digest:
                    raise CodecError(f"chunked entry incomplete: {len(blob)} of {total} bytes in {count} chunks")
                value = blob
            event = decode(value)
        except (CodecError, ValueError) as exc:
            return undecodable(cursor, "", value, f"unreadable event at {stream} cursor {cursor.hex()}: {exc}")
        if event.tenant != self.tenant:  # cannot happen through append: a key written by hand or another tool
            return undecodable(cursor, event.event_id, value, f"event {event.event_id} at {stream} cursor"
                               f" {cursor.hex()} belongs to tenant {event.tenant!r}, not {self.tenant!r}")
        return LogEntry(cursor, event, value)

    # ---- identity ----------------------------------------------------------------------------------------

    IDENTITY_TTL = 2.0  # seconds an identity read is trusted: a check per pull page, not a transaction each

    def identity(self) -> str:
        """The tenant log's id, created with its first use and read again every few seconds: a tenant whose
        keys were cleared (or a cluster that was replaced) answers with a new one."""
        now = time.monotonic()
        cached = self._identity
        if cached is not None and now - cached[1] < self.IDENTITY_TTL:
            return cached[0]
        key = self.keys.log_id()

        def body(tr: Any) -> str:
            value = _get(tr, key)
            if value is not None:
                return value.decode()
            fresh = uuid.uuid4().hex
            tr.set(key, fresh.encode())
            tr.commit().wait()
            return fresh

        ident: str = self._run(body)
        self._identity = (ident, now)
        return ident

    # ---- wait --------------------------------------------------------------------------------------------

    def head(self, stream: str) -> bytes | None:
        """The cursor of the newest event of the stream (None if empty)."""
        key = self.keys.head(validate_stream(stream))
        result: bytes | None = self._run(lambda tr: _get(tr, key))
        return result

    def wait(self, stream: str, after: bytes | None, timeout: float) -> bool:
        validate_stream(stream)
        after = check_cursor(after)
        key = self.keys.head(stream)
        deadline = time.monotonic() + max(0.0, timeout)
        fallback = 0.05

        def arm(tr: Any) -> tuple[bool, Any]:
            head = _get(tr, key)
            if head is not None and (after is None or head > after):
                return True, None
            if deadline - time.monotonic() <= 0:
                return False, None  # nothing to wait for: no watch, no commit
            # the watch compares with the value this transaction read and is armed by its commit
            watch = tr.watch(key)
            tr.commit().wait()
            return False, watch

        while True:
            # the arming transaction's timeout also bounds its watch: let it outlive this wait
            newer, watch = self._run(arm, timeout=max(0.0, deadline - time.monotonic()) + self.operation_timeout)
            if newer:
                return True
            if watch is None:
                return False
            remaining = deadline - time.monotonic()
            outcome = self._wait_watch(watch, remaining) if remaining > 0 else "timeout"
            if outcome == "timeout" or self._closed.is_set():
                watch.cancel()
                return False
            if outcome == "error":
                # too many watches or a watch error: poll the head at a bounded, growing interval instead
                pause = min(fallback, max(0.0, deadline - time.monotonic()))
                fallback = min(fallback * 2, self.watch_fallback_interval)
                if self._closed.wait(pause) or time.monotonic() >= deadline:
                    return False
            # "fired" (or after a fallback pause): a wake-up is only a hint, so re-read the head

    def _wait_watch(self, watch: Any, timeout: float) -> str:
        fired = threading.Event()
        with self._watch_lock:
            self._watches.add(watch)
        try:
            if self._closed.is_set():  # closed before close() could see this watch
                return "timeout"
            watch.on_ready(lambda _f: fired.set())
            if not fired.wait(timeout):
                return "timeout"
            try:
                watch.wait()
            except fdb.FDBError:
                return "error"  # 1032 too_many_watches, 1101 cancelled, or a transient cluster error
            return "fired"
        finally:
            with self._watch_lock:
                self._watches.discard(watch)

    # ---- lifecycle ---------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop waiters and refuse further calls.  The Database stays: the binding caches it per process."""
        self._closed.set()
        with self._watch_lock:
            watches = list(self._watches)
        for w in watches:
            try:
                w.cancel()
            except fdb.FDBError:
                pass  # already fired or released: nothing to stop

    def __repr__(self) -> str:
        return f"FdbEventLog({self.tenant!r}, cluster_file={self.cluster_file!r})"

    def __enter__(self) -> FdbEventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
