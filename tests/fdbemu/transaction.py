"""The emulated client: a database handle and its transactions.

One :class:`EmuTransaction` plays the three client layers behind an ``FDBTransaction*``:
``ThreadSafeTransaction`` (write errors are deferred to the next future-returning call or the commit),
``ReadYourWritesTransaction`` (own writes are visible, conflict ranges, watches, the timeout and the
"cancelled until reset" states) and NativeAPI ``Transaction`` (one read version, size limits, ``onError``
back-off).  Every entry point takes the cluster lock, so transactions may be shared between threads.
"""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import Any, Iterator, Optional

from . import atomic
from .cluster import Range, WatchRecord, coalesce
from .database import (
    DEFAULT_BACKOFF,
    FUTURE_VERSION_RETRY_DELAY,
    INT_MAX,
    KEY_SIZE_LIMIT,
    SYSTEM_KEY_SIZE_LIMIT,
    TRANSACTION_SIZE_LIMIT,
    TXN_OPTION_CODES,
    VALUE_SIZE_LIMIT,
    CommitRequest,
    EmuDatabase,
    _int_option,
)
from .errors import (
    ACCESSED_UNREADABLE,
    BACKOFF_RETRY,
    CLIENT_INVALID_OPERATION,
    EXACT_MODE_WITHOUT_LIMITS,
    IMMEDIATE_RETRY,
    INVALID_MUTATION_TYPE,
    INVALID_OPTION,
    INVERTED_RANGE,
    KEY_OUTSIDE_LEGAL_RANGE,
    KEY_TOO_LARGE,
    NO_COMMIT_VERSION,
    RANGE_LIMITS_INVALID,
    READ_VERSION_ALREADY_SET,
    SHORT_RETRY,
    TRANSACTION_CANCELLED,
    TRANSACTION_TIMED_OUT,
    TRANSACTION_TOO_LARGE,
    USED_DURING_COMMIT,
    VALUE_TOO_LARGE,
    VERSION_INVALID,
    WATCHES_DISABLED,
    EmuError,
)
from .futures import NETWORK, NativeFuture
from .writemap import KNOWN, OPS, UNREADABLE, WriteMap

# Byte targets per streaming mode, and the ITERATOR progression (fdb_c.cpp, fdb_transaction_get_range_impl).
_MODE_BYTES = {0: -1, 1: 256, 2: 1000, 3: 4096, 4: 80000}
_ITERATION_BYTES = (256, 1000, 4096, 6144, 9216, 13824, 20736, 31104, 46656, 69984, 80000)


class EmuTransaction:
    def __init__(self, db: EmuDatabase) -> None:
        self.db = db
        self.cluster = db.cluster
        self.options = replace(db.defaults)
        self.retries = 0
        self.backoff = DEFAULT_BACKOFF
        self.creation = self.cluster.now()
        self.reset_error: Optional[int] = None  # RYW resetPromise: 1031 timed out, 1025 cancelled, 2017
        self._new_attempt()

    def _new_attempt(self) -> None:
        self.read_version: Optional[int] = None
        self.writes = WriteMap()
        self.mutations: list[tuple[Any, ...]] = []
        self.mutation_bytes = 0
        self.read_conflicts: list[Range] = []
        self.write_conflicts: list[Range] = []
        self.deferred_error: Optional[int] = None
        self.commit_started = False
        self.commit_request: Optional[CommitRequest] = None
        self.committed_version = -1
        self.vs_futures: list[NativeFuture] = []
        self.watches: list[WatchRecord] = []
        self.touched = False

    # ---- states and checks ---------------------------------------------------------------------------------

    def _discard(self, code: int) -> None:
        """Uncommitted watches and pending versionstamp futures die with the attempt."""
        for rec in self.watches:
            if not rec.done:
                rec.done = True
                rec.future.set_error(code)
        self.watches = []
        for f in self.vs_futures:
            f.set_error(code)
        self.vs_futures = []

    def _poison(self, code: int) -> None:
        if self.reset_error is None:
            self.reset_error = code
            self._discard(code)

    def _abort_commit(self, code: int) -> None:
        req = self.commit_request
        if req is not None and not req.cancelled:
            req.abort(self.cluster, code)

    def _check_timeout(self) -> None:
        t = self.options.timeout_ms
        if t and self.reset_error is None and self.cluster.now() >= self.creation + t / 1000.0:
            self._poison(TRANSACTION_TIMED_OUT)

    def _check_usable(self) -> None:
        if self.commit_started:  # RYW checkUsedDuringCommit: also fails an in-flight commit
            if not self.options.commit_protection_disabled:
                self._abort_commit(USED_DURING_COMMIT)
            self._poison(USED_DURING_COMMIT)
            raise EmuError(USED_DURING_COMMIT)
        self._check_timeout()
        if self.reset_error is not None:
            raise EmuError(self.reset_error)

    def _check_future_op(self) -> None:
        if self.deferred_error is not None:  # ThreadSafeTransaction: checkDeferredError() first
            raise EmuError(self.deferred_error)
        self._check_usable()

    def _defer(self, code: int) -> None:
        if self.deferred_error is None:
            self.deferred_error = code

    def _max_read_key(self) -> bytes:
        o = self.options
        return b"\xff\xff" if (o.read_system_keys or o.access_system_keys) else b"\xff"

    def _max_write_key(self) -> bytes:
        return b"\xff\xff" if self.options.access_system_keys else b"\xff"

    @staticmethod
    def _key_limit(key: bytes) -> int:
        return SYSTEM_KEY_SIZE_LIMIT if key.startswith(b"\xff") else KEY_SIZE_LIMIT

    def _check_write_key(self, key: bytes) -> None:
        if key >= self._max_write_key():
            raise EmuError(KEY_OUTSIDE_LEGAL_RANGE)
        if len(key) > self._key_limit(key):
            raise EmuError(KEY_TOO_LARGE)

    # ---- reads ---------------------------------------------------------------------------------------------

    def _use_ryw(self, snapshot: bool) -> bool:
        o = self.options
        return not o.ryw_disabled and not (snapshot and not o.snapshot_ryw)

    def _rv(self) -> int:
        if self.read_version is None:
            self.read_version = self.cluster.get_read_version()
        return self.read_version

    def _storage(self) -> int:
        """The read version, after the checks a storage server makes (1007, 1009, injected read errors)."""
        rv = self._rv()
        self.cluster.check_read(rv)
        return rv

    def _add_read_conflict(self, begin: bytes, end: bytes, snapshot: bool, use_ryw: bool) -> None:
        if snapshot or begin >= end:
            return
        if use_ryw:
            self.read_conflicts.extend(self.writes.dependent_segments(begin, end))
        else:
            self.read_conflicts.append((begin, end))

    def _read(self, key: bytes, snapshot: bool) -> Optional[bytes]:
        store = self.cluster.store
        use_ryw = self._use_ryw(snapshot)
        if use_ryw:
            w = self.writes
            entry = w.entries.get(key)
            if w.key_unreadable(key):
                if not (self.options.bypass_unreadable and entry is not None and entry.kind == UNREADABLE):
                    raise EmuError(ACCESSED_UNREADABLE)
                return entry.value
            entry = w.lookup(key)
            if entry is None:
                value = store.get(key, self._storage())
            elif entry.kind == KNOWN:
                return entry.value  # the transaction's own write: no read conflict
            else:
                value = entry.resolve(store.get(key, self._storage()))
        else:
            value = store.get(key, self._storage())
        self._add_read_conflict(key, key + b"\x00", snapshot, False)
        return value

    def _iter(self, begin: bytes, end: bytes, reverse: bool, use_ryw: bool, rv: int) -> Iterator[tuple[bytes, bytes]]:
        """Key-values in [begin, end) as this transaction sees them, in key order (or reversed)."""
        store = self.cluster.store
        stored = store.scan(begin, end, rv, reverse)
        if not use_ryw:
            yield from stored
            return
        w = self.writes
        local = w.keys_in(begin, end, reverse)
        li = 0
        nxt = next(stored, None)
        while True:
            while nxt is not None and (nxt[0] in w.entries or w.is_cleared(nxt[0])):
                nxt = next(stored, None)
            lk = local[li] if li < len(local) else None
            if nxt is None and lk is None:
                return
            if lk is not None and (nxt is None or (lk > nxt[0] if reverse else lk < nxt[0])):
                li += 1
                entry = w.entries[lk]
                if entry.kind == KNOWN:
                    value = entry.value
                elif entry.kind == OPS:
                    value = entry.resolve(store.get(lk, rv))
                else:
                    value = b""  # unreadable: the caller's span check raises 1036
                if value is not None:
                    yield lk, value
            else:
                assert nxt is not None
                yield nxt
                nxt = next(stored, None)

    def _resolve(self, norm_key: bytes, offset: int, use_ryw: bool, rv: int) -> bytes:
        """A key selector, or_equal already folded into ``norm_key`` (k + 0x00)."""
        maxk = self._max_read_key()
        if offset >= 1:
            n = offset
            for k, _ in self._iter(norm_key, maxk, False, use_ryw, rv):
                n -= 1
                if n == 0:
                    return k
            return maxk
        n = 1 - offset
        for k, _ in self._iter(b"", min(norm_key, maxk), True, use_ryw, rv):
            n -= 1
            if n == 0:
                return k
        return b""

    def get(self, key: bytes, snapshot: bool) -> NativeFuture:
        with self.cluster.lock:
            try:
                self._check_future_op()
                if key >= self._max_read_key():
                    raise EmuError(KEY_OUTSIDE_LEGAL_RANGE)
                self.touched = True
                if len(key) > self._key_limit(key):
                    return NativeFuture.ready("value", None)  # no key that large can exist
                return NativeFuture.ready("value", self._read(key, bool(snapshot)))
            except EmuError as e:
                return NativeFuture.failed("value", e.code)

    def get_key(self, key: bytes, or_equal: bool, offset: int, snapshot: bool) -> NativeFuture:
        with self.cluster.lock:
            try:
                self._check_future_op()
                maxk = self._max_read_key()
                if key > maxk:
                    raise EmuError(KEY_OUTSIDE_LEGAL_RANGE)
                self.touched = True
                snapshot = bool(snapshot)
                use_ryw = self._use_ryw(snapshot)
                rv = self._storage()
                norm = key + b"\x00" if or_equal else key
                found = self._resolve(norm, offset, use_ryw, rv)
                if offset >= 1:
                    span = (norm, found + b"\x00" if found < maxk else maxk)
                else:
                    span = (found, norm)
                if use_ryw and self.writes.unreadable_in(*span):
                    raise EmuError(ACCESSED_UNREADABLE)
                self._add_read_conflict(span[0], span[1], snapshot, use_ryw)
                return NativeFuture.ready("key", found)
            except EmuError as e:
                return NativeFuture.failed("key", e.code)

    def get_range(self, bkey: bytes, b_or_equal: bool, b_offset: int, ekey: bytes, e_or_equal: bool,
                  e_offset: int, limit: int, target_bytes: int, mode: int, iteration: int, snapshot: bool,
                  reverse: bool) -> NativeFuture:
        with self.cluster.lock:
            try:
                self._check_future_op()
                return NativeFuture.ready("kvs", self._get_range(
                    bkey, bool(b_or_equal), b_offset, ekey, bool(e_or_equal), e_offset, limit, target_bytes,
                    mode, iteration, bool(snapshot), bool(reverse)))
            except EmuError as e:
                return NativeFuture.failed("kvs", e.code)

    def _get_range(self, bkey: bytes, b_or_equal: bool, b_offset: int, ekey: bytes, e_or_equal: bool,
                   e_offset: int, limit: int, target_bytes: int, mode: int, iteration: int, snapshot: bool,
                   reverse: bool) -> tuple[list[tuple[bytes, bytes]], bool]:
        if limit < 0 or target_bytes < 0:
            raise EmuError(RANGE_LIMITS_INVALID)
        byte_limit = _byte_limit(mode, iteration, target_bytes, limit)
        maxk = self._max_read_key()
        if bkey > maxk or ekey > maxk:
            raise EmuError(KEY_OUTSIDE_LEGAL_RANGE)
        self.touched = True
        use_ryw = self._use_ryw(snapshot)
        rv = self._storage()
        bnorm = bkey + b"\x00" if b_or_equal else bkey
        enorm = ekey + b"\x00" if e_or_equal else ekey
        if b_offset >= e_offset and bnorm >= enorm:
            return [], False  # RYW short-cut: provably empty, no conflict range
        bk = self._resolve(bnorm, b_offset, use_ryw, rv)
        ek = self._resolve(enorm, e_offset, use_ryw, rv)
        rows: list[tuple[bytes, bytes]] = []
        more = stopped = False
        if bk < ek:
            it = self._iter(bk, ek, reverse, use_ryw, rv)
            budget = byte_limit
            for kv in it:
                rows.append(kv)
                if budget > 0:
                    budget = max(0, budget - len(kv[0]) - len(kv[1]))
                if (limit and len(rows) >= limit) or (byte_limit > 0 and budget == 0):
                    stopped = True
                    more = next(it, None) is not None
                    break
            # The read conflict range is what was scanned: a limited read ends at its last row.
            begin = bnorm if b_offset >= 1 else bk
            end = enorm if e_offset <= 1 else (ek + b"\x00" if ek < maxk else maxk)
            if stopped:
                if reverse:
                    begin = rows[-1][0]
                else:
                    end = rows[-1][0] + b"\x00"
        else:  # the selectors crossed: both resolutions were scanned
            begin = min(bnorm, bk, ek, enorm)
            end = max(bnorm, bk + b"\x00", ek + b"\x00", enorm)
        if use_ryw and self.writes.unreadable_in(begin, end):
            raise EmuError(ACCESSED_UNREADABLE)
        self._add_read_conflict(begin, end, snapshot, use_ryw)
        return rows, more

    def get_read_version(self) -> NativeFuture:
        with self.cluster.lock:
            try:
                self._check_future_op()
                return NativeFuture.ready("int64", self._rv())
            except EmuError as e:
                return NativeFuture.failed("int64", e.code)

    def set_read_version(self, version: int) -> None:
        with self.cluster.lock:
            try:
                self._check_usable()
                if self.read_version is not None:
                    raise EmuError(READ_VERSION_ALREADY_SET)
                if version <= 0:
                    raise EmuError(VERSION_INVALID)
            except EmuError as e:
                self._defer(e.code)
                return
            self.read_version = version

    def watch(self, key: bytes) -> NativeFuture:
        with self.cluster.lock:
            try:
                self._check_future_op()
                if self.options.ryw_disabled:
                    raise EmuError(WATCHES_DISABLED)
                if key >= self._max_read_key():
                    raise EmuError(KEY_OUTSIDE_LEGAL_RANGE)
                if len(key) > self._key_limit(key):
                    raise EmuError(KEY_TOO_LARGE)
                value = self._read(key, False)  # the value this transaction sees, own writes included
            except EmuError as e:
                return NativeFuture.failed("void", e.code)
            future = NativeFuture("void")
            self.watches.append(WatchRecord(key, value, future, self.db))
            return future

    def _own_write(self, begin: bytes, end: bytes) -> None:
        """A watch reports changes made by its own transaction at once (before commit)."""
        for rec in self.watches:
            if rec.done or not begin <= rec.key < end:
                continue
            entry = self.writes.lookup(rec.key)
            if entry is None or entry.kind != KNOWN or entry.value != rec.expected:
                rec.done = True
                self.cluster.stats.watches_fired += 1
                rec.future.set_result(None)

    # ---- writes (errors are deferred) ----------------------------------------------------------------------

    def _add_write_conflict(self, begin: bytes, end: bytes) -> None:
        if self.options.next_write_no_conflict:
            self.options.next_write_no_conflict = False
            return
        self.write_conflicts.append((begin, end))

    def set(self, key: bytes, value: bytes) -> None:
        with self.cluster.lock:
            try:
                self._check_usable()
                self._check_write_key(key)
                if len(value) > VALUE_SIZE_LIMIT:
                    raise EmuError(VALUE_TOO_LARGE)
            except EmuError as e:
                self._defer(e.code)
                return
            self.touched = True
            self.mutations.append(("set", key, value))
            self.mutation_bytes += len(key) + len(value)
            self.writes.set(key, value)
            self._add_write_conflict(key, key + b"\x00")
            self._own_write(key, key + b"\x00")

    def clear(self, key: bytes) -> None:
        with self.cluster.lock:
            try:
                self._check_usable()
                if key >= self._max_write_key():
                    raise EmuError(KEY_OUTSIDE_LEGAL_RANGE)
            except EmuError as e:
                self._defer(e.code)
                return
            if len(key) > self._key_limit(key):
                return  # nothing that large exists
            self.touched = True
            self.mutations.append(("clear", key))
            self.mutation_bytes += len(key)
            self.writes.set(key, None)
            self._add_write_conflict(key, key + b"\x00")
            self._own_write(key, key + b"\x00")

    def clear_range(self, begin: bytes, end: bytes) -> None:
        with self.cluster.lock:
            try:
                if begin > end:
                    raise EmuError(INVERTED_RANGE)
                self._check_usable()
                maxk = self._max_write_key()
                if begin > maxk or end > maxk:
                    raise EmuError(KEY_OUTSIDE_LEGAL_RANGE)
            except EmuError as e:
                self._defer(e.code)
                return
            # No stored key is longer than the limit: cut longer bounds to an equivalent range.
            begin = begin[: self._key_limit(begin) + 1]
            end = end[: self._key_limit(end) + 1]
            if begin >= end:
                return
            self.touched = True
            self.mutations.append(("clear_range", begin, end))
            self.mutation_bytes += len(begin) + len(end)
            self.writes.clear_range(begin, end)
            self._add_write_conflict(begin, end)
            self._own_write(begin, end)

    def atomic_op(self, key: bytes, param: bytes, op: int) -> None:
        with self.cluster.lock:
            try:
                self._check_usable()
                if op not in atomic.VALID_OPS:
                    raise EmuError(INVALID_MUTATION_TYPE)
                if op == atomic.SET_VERSIONSTAMPED_KEY:
                    body, pos = atomic.split_versionstamp_param(key)
                    self._check_write_key(body)
                    if len(param) > VALUE_SIZE_LIMIT:
                        raise EmuError(VALUE_TOO_LARGE)
                elif op == atomic.SET_VERSIONSTAMPED_VALUE:
                    self._check_write_key(key)
                    body, pos = atomic.split_versionstamp_param(param)
                    if len(body) > VALUE_SIZE_LIMIT:
                        raise EmuError(VALUE_TOO_LARGE)
                else:
                    self._check_write_key(key)
                    if len(param) > VALUE_SIZE_LIMIT:
                        raise EmuError(VALUE_TOO_LARGE)
            except EmuError as e:
                self._defer(e.code)
                return
            self.touched = True
            if op == atomic.SET_VERSIONSTAMPED_KEY:
                # The final key is known only at commit: the client conflicts on, and cannot read, every key
                # the stamp could produce (getVersionstampKeyRange).
                low = atomic.fill_versionstamp(body, pos, struct.pack(">QH", self.read_version or 0, 0))
                high = atomic.fill_versionstamp(body, pos, b"\xff" * 10) + b"\x00"
                self.mutations.append((op, body, pos, param))
                self.mutation_bytes += len(body) + len(param)
                self.writes.unreadable_ranges.append((low, high))
                self._add_write_conflict(low, high)
                self._own_write(low, high)
            elif op == atomic.SET_VERSIONSTAMPED_VALUE:
                self.mutations.append((op, key, body, pos))
                self.mutation_bytes += len(key) + len(body)
                self.writes.set_unreadable(key, body)
                self._add_write_conflict(key, key + b"\x00")
                self._own_write(key, key + b"\x00")
            else:
                self.mutations.append((op, key, param))
                self.mutation_bytes += len(key) + len(param)
                self.writes.atomic(key, op, param)  # no read: atomic ops add no read conflict
                self._add_write_conflict(key, key + b"\x00")
                self._own_write(key, key + b"\x00")

    def add_conflict_range(self, begin: bytes, end: bytes, kind: int) -> int:
        if begin > end:
            return INVERTED_RANGE  # KeyRangeRef construction fails in fdb_c itself: returned, not deferred
        if kind not in (0, 1):
            return CLIENT_INVALID_OPERATION
        with self.cluster.lock:
            try:
                self._check_usable()
                maxk = self._max_read_key() if kind == 0 else self._max_write_key()
                if begin > maxk or end > maxk:
                    raise EmuError(KEY_OUTSIDE_LEGAL_RANGE)
            except EmuError as e:
                self._defer(e.code)
                return 0
            if begin < end:
                (self.read_conflicts if kind == 0 else self.write_conflicts).append((begin, end))
        return 0

    def set_option(self, code: int, param: Optional[bytes]) -> int:
        if code not in TXN_OPTION_CODES:
            return INVALID_OPTION
        with self.cluster.lock:
            try:
                self._apply_option(code, param)
            except EmuError as e:
                self._defer(e.code)
        return 0

    def _apply_option(self, code: int, param: Optional[bytes]) -> None:
        o = self.options
        if code == 30:
            o.next_write_no_conflict = True
        elif code == 51:
            if self.touched:
                raise EmuError(CLIENT_INVALID_OPERATION)  # must be set before any read or write
            o.ryw_disabled = True
        elif code == 301:
            o.access_system_keys = True
        elif code == 302:
            o.read_system_keys = True
        elif code == 500:
            o.timeout_ms = _int_option(param, 0, INT_MAX)  # measured from creation (or reset), not from now
        elif code == 501:
            o.retry_limit = _int_option(param, -1, INT_MAX)
        elif code == 502:
            o.max_retry_delay = _int_option(param, 0, INT_MAX) / 1000.0
            self.backoff = min(self.backoff, o.max_retry_delay)
        elif code == 503:
            o.size_limit = _int_option(param, 32, TRANSACTION_SIZE_LIMIT)
        elif code == 505:
            o.automatic_idempotency = True
        elif code in (600, 601):
            o.snapshot_ryw = code == 600
        elif code == 701:
            o.commit_protection_disabled = True
        elif code == 1100:
            o.bypass_unreadable = True

    # ---- commit, versionstamp, retry -----------------------------------------------------------------------

    def size(self) -> int:
        """Mutations plus (coalesced) conflict ranges: what the 10 MB limit is checked against."""
        n = self.mutation_bytes
        for b, e in coalesce(self.read_conflicts) + coalesce(self.write_conflicts):
            n += len(b) + len(e)
        return n

    def get_approximate_size(self) -> NativeFuture:
        with self.cluster.lock:
            try:
                self._check_future_op()
                return NativeFuture.ready("int64", self.size())
            except EmuError as e:
                return NativeFuture.failed("int64", e.code)

    def get_versionstamp(self) -> NativeFuture:
        with self.cluster.lock:
            try:
                self._check_usable()  # must be called before commit: afterwards it is used_during_commit
            except EmuError as e:
                return NativeFuture.failed("key", e.code)
            future = NativeFuture("key")
            self.vs_futures.append(future)
            return future

    def commit(self) -> NativeFuture:
        future = NativeFuture("void")
        with self.cluster.lock:
            try:
                self._check_future_op()
            except EmuError as e:
                if not self.commit_started:
                    self.commit_started = True
                    self._discard(e.code)
                future.set_error(e.code)
                return future
            self.commit_started = True
            if not self.mutations and not self.write_conflicts:
                # Read-only: nothing goes to the cluster, it cannot conflict, and it has no commit version.
                self.committed_version = -1
                for f in self.vs_futures:
                    f.set_error(NO_COMMIT_VERSION)
                self.vs_futures = []
                for rec in self.watches:
                    self.cluster.arm_watch(rec)
                self.watches = []
                self.cluster.stats.read_only_commits += 1
                future.set_result(None)
                return future
            if self.size() > self.options.size_limit:
                self._discard(TRANSACTION_TOO_LARGE)
                future.set_error(TRANSACTION_TOO_LARGE)
                return future
            reads = coalesce(self.read_conflicts)
            if reads and self.read_version is None:
                self.read_version = self.cluster.get_read_version()
            req = CommitRequest(self, self.read_version, reads, coalesce(self.write_conflicts), future)
            self.watches, self.vs_futures = [], []
            self.commit_request = req
            self.cluster.submit(req)
            return future

    def get_committed_version(self) -> int:
        return self.committed_version

    def on_error(self, code: int) -> NativeFuture:
        with self.cluster.lock:
            self._check_timeout()
            if self.reset_error is not None:
                return NativeFuture.failed("void", self.reset_error)
            o = self.options
            limit_hit = o.retry_limit != -1 and self.retries >= o.retry_limit
            self.retries += 1
            delay: Optional[float] = None
            if not limit_hit:
                if code in BACKOFF_RETRY:
                    delay = self.backoff * self.cluster.jitter.random()
                    self.backoff = min(self.backoff * 2, o.max_retry_delay)
                elif code in SHORT_RETRY:
                    delay = min(FUTURE_VERSION_RETRY_DELAY, o.max_retry_delay)
                elif code in IMMEDIATE_RETRY:
                    delay = 0.0
            if delay is None:
                self._poison(TRANSACTION_CANCELLED)  # API >= 610: cancelled until reset()
                return NativeFuture.failed("void", code)
            self._abort_commit(TRANSACTION_CANCELLED)
            self._discard(TRANSACTION_CANCELLED)
            self._new_attempt()  # options, retry count, back-off and the timeout's start survive on_error
            self.cluster.stats.retries += 1
            self.cluster.stats.backoffs.append(delay)
            scaled = delay * self.cluster.backoff_scale
            if scaled <= 0:
                return NativeFuture.ready("void")
            future = NativeFuture("void")

            def wake() -> None:
                future.set_result(None)

            NETWORK.call_later(scaled, wake)
            return future

    def reset(self) -> None:
        with self.cluster.lock:
            self._abort_commit(TRANSACTION_CANCELLED)
            self._discard(TRANSACTION_CANCELLED)
            self.options = replace(self.db.defaults)
            self.retries = 0
            self.backoff = DEFAULT_BACKOFF
            self.creation = self.cluster.now()
            self.reset_error = None
            self._new_attempt()

    def cancel(self) -> None:
        with self.cluster.lock:
            self._abort_commit(TRANSACTION_CANCELLED)
            self._poison(TRANSACTION_CANCELLED)

    def destroy(self) -> None:
        with self.cluster.lock:
            if self.commit_request is None:  # an in-flight commit still lands; uncommitted watches die
                self._discard(TRANSACTION_CANCELLED)

    # ---- estimates ----------------------------------------------------------------------------------------

    def estimated_range_size(self, begin: bytes, end: bytes) -> NativeFuture:
        with self.cluster.lock:
            try:
                self._check_future_op()
            except EmuError as e:
                return NativeFuture.failed("int64", e.code)
            total = sum(len(k) + len(v) for k, v in self.cluster.store.scan(begin, end, self.cluster.version, False))
            return NativeFuture.ready("int64", total)

    def range_split_points(self, begin: bytes, end: bytes, chunk_size: int, limit: int = -1) -> NativeFuture:
        with self.cluster.lock:
            try:
                self._check_future_op()
            except EmuError as e:
                return NativeFuture.failed("keys", e.code)
            points, acc = [begin], 0
            for k, v in self.cluster.store.scan(begin, end, self.cluster.version, False):
                acc += len(k) + len(v)
                if acc >= chunk_size and k > points[-1]:
                    points.append(k)
                    acc = 0
                    if 0 <= limit <= len(points):
                        break
            if points[-1] != end:
                points.append(end)
            return NativeFuture.ready("keys", points)


def _byte_limit(mode: int, iteration: int, target_bytes: int, limit: int) -> int:
    """The byte target of one range request (-1: none), as fdb_c derives it from the streaming mode."""
    if mode == -2:  # WANT_ALL transfers like SERIAL
        mode = 4
    if mode == -1:
        if iteration <= 0:
            raise EmuError(CLIENT_INVALID_OPERATION)
        mode_bytes = _ITERATION_BYTES[min(iteration, len(_ITERATION_BYTES)) - 1]
    elif mode in _MODE_BYTES:
        mode_bytes = _MODE_BYTES[mode]
    else:
        raise EmuError(CLIENT_INVALID_OPERATION)
    if target_bytes == 0:
        target_bytes = -1
    if mode == 0 and limit == 0 and target_bytes == -1:
        raise EmuError(EXACT_MODE_WITHOUT_LIMITS)
    if target_bytes != -1 and mode_bytes != -1:
        return min(target_bytes, mode_bytes)
    return mode_bytes if mode_bytes != -1 else target_bytes
