"""An in-memory FoundationDB cluster: versioned storage, the resolver, commit batches, watches, faults.

One :class:`Cluster` stands for one ``fdb.cluster`` file.  Every ``Database`` opened on the same path shares it,
like separate clients of one real cluster.  One re-entrant lock guards all of its state; commits are resolved in
batches on the network thread, as commit proxies do, so a batch shares one commit version and its transactions
are told apart by the 2-byte batch order of their versionstamps.
"""

from __future__ import annotations

import bisect
import os
import random
import struct
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Optional, Union

from . import atomic
from .errors import (
    COMMIT_UNKNOWN_RESULT,
    FUTURE_VERSION,
    NOT_COMMITTED,
    OPERATION_CANCELLED,
    TOO_MANY_WATCHES,
    TRANSACTION_TIMED_OUT,
    TRANSACTION_TOO_OLD,
    EmuError,
)
from .futures import NETWORK, NativeFuture

if TYPE_CHECKING:
    from .database import CommitRequest, EmuDatabase

Range = tuple[bytes, bytes]

VERSIONS_PER_SECOND = 1_000_000
MVCC_WINDOW_VERSIONS = 5 * VERSIONS_PER_SECOND  # MAX_READ_TRANSACTION_LIFE_VERSIONS: the 5 s rule
INITIAL_VERSION = 1_000_000_000_000  # a cluster that has been up a while: the high bytes of stamps are not zero
MAX_BATCH = 4096


@dataclass(frozen=True)
class FaultPlan:
    """Client "buggify": what fails, how often; deterministic for a given seed and call order.

    commit_failure_rate   probability that a commit which would succeed fails instead ...
    unknown_result_fraction  ... and of those failures, the share reported as 1021 commit_unknown_result
                          (the rest are 1020 not_committed, not applied)
    unknown_result_applied  of the 1021s, the share that was in fact applied (default: all of them, the case
                          that makes a non-idempotent retry write twice)
    read_failure_rate     probability that a storage read (get, get_key, one get_range chunk) fails with one of
                          read_error_codes
    commit_timeout_rate   for transactions with a timeout set: probability that the commit is applied and the
                          caller still gets 1031 (the timer fired while the commit was in flight)
    """

    commit_failure_rate: float = 0.0
    unknown_result_fraction: float = 0.0
    unknown_result_applied: float = 1.0
    read_failure_rate: float = 0.0
    read_error_codes: tuple[int, ...] = (1009, 1037)
    commit_timeout_rate: float = 0.0
    seed: Optional[int] = 0


@dataclass
class Stats:
    """Counters, readable as attributes or ``stats["name"]``."""

    commits: int = 0  # transactions whose writes were applied (including applied-then-1021/1031)
    read_only_commits: int = 0
    commit_batches: int = 0
    conflicts: int = 0  # genuine 1020s from the resolver
    too_old: int = 0  # 1007 from reads or commits
    injected_1020: int = 0
    injected_1021_applied: int = 0
    injected_1021_not_applied: int = 0
    injected_1031_applied: int = 0
    injected_read_errors: int = 0
    grvs: int = 0
    reads: int = 0
    retries: int = 0  # on_error calls that reset the transaction for another attempt
    watches_armed: int = 0
    watches_fired: int = 0
    backoffs: list[float] = field(default_factory=list)  # delays computed by on_error (before backoff_scale)

    def __getitem__(self, name: str) -> Any:
        return getattr(self, name)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Store:
    """Multi-version key-value storage: per key, a list of (version, value or None) in version order."""

    def __init__(self) -> None:
        self._keys: list[bytes] = []  # sorted; every key with any retained history
        self._hist: dict[bytes, list[tuple[int, Optional[bytes]]]] = {}

    def get(self, key: bytes, version: int) -> Optional[bytes]:
        h = self._hist.get(key)
        if h:
            for v, value in reversed(h):
                if v <= version:
                    return value
        return None

    def latest(self, key: bytes) -> Optional[bytes]:
        h = self._hist.get(key)
        return h[-1][1] if h else None

    def write(self, key: bytes, value: Optional[bytes], version: int) -> bool:
        """Record a new value at ``version``; returns whether the latest value changed."""
        h = self._hist.get(key)
        if h is None:
            if value is None:
                return False
            bisect.insort(self._keys, key)
            self._hist[key] = [(version, value)]
            return True
        changed = h[-1][1] != value
        if h[-1][0] == version:
            h[-1] = (version, value)
        else:
            h.append((version, value))
        return changed

    def live_keys(self, begin: bytes, end: bytes) -> list[bytes]:
        i, j = bisect.bisect_left(self._keys, begin), bisect.bisect_left(self._keys, end)
        return [k for k in self._keys[i:j] if self._hist[k][-1][1] is not None]

    def scan(self, begin: bytes, end: bytes, version: int, reverse: bool) -> Iterator[tuple[bytes, bytes]]:
        keys = self._keys
        i, j = bisect.bisect_left(keys, begin), bisect.bisect_left(keys, end)
        for idx in (range(j - 1, i - 1, -1) if reverse else range(i, j)):
            k = keys[idx]
            value = self.get(k, version)
            if value is not None:
                yield k, value

    def compact(self, keys: set[bytes], horizon: int) -> None:
        """Forget versions nobody may read any more (older than the MVCC window)."""
        for k in keys:
            h = self._hist.get(k)
            if not h:
                continue
            idx = 0
            while idx + 1 < len(h) and h[idx + 1][0] <= horizon:
                idx += 1
            if idx:
                del h[:idx]
            if len(h) == 1 and h[0][1] is None and h[0][0] <= horizon:
                del self._hist[k]
                i = bisect.bisect_left(self._keys, k)
                del self._keys[i]


def coalesce(ranges: list[Range]) -> list[Range]:
    out: list[Range] = []
    for b, e in sorted(r for r in ranges if r[0] < r[1]):
        if out and b <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((b, e))
    return out


def intersects(a: list[Range], b: list[Range]) -> bool:
    """Both lists coalesced and sorted."""
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i][0] < b[j][1] and b[j][0] < a[i][1]:
            return True
        if a[i][1] <= b[j][1]:
            i += 1
        else:
            j += 1
    return False


class WatchRecord:
    __slots__ = ("key", "expected", "future", "db", "done", "armed")

    def __init__(self, key: bytes, expected: Optional[bytes], future: NativeFuture, db: "EmuDatabase") -> None:
        self.key, self.expected, self.future, self.db = key, expected, future, db
        self.done = False  # fired, failed or cancelled
        self.armed = False  # registered with the cluster (counts against max_watches)


class Cluster:
    def __init__(self, name: Optional[str]) -> None:
        self.name = name
        self.lock = threading.RLock()
        self.store = Store()
        self.stats = Stats()
        self.max_watches = 10_000  # per Database (client), unless the max_watches database option says otherwise
        self.mvcc_window = MVCC_WINDOW_VERSIONS
        self.backoff_scale = 1.0  # multiply on_error sleeps (0 = retry at once); Stats.backoffs keeps the real ones
        self.batch_interval = 0.0  # seconds a commit proxy waits to gather a batch
        self.forgotten = False
        self.jitter = random.Random(0x5EED)  # on_error back-off randomness
        self._clock_offset = 0.0
        self._t0 = time.monotonic()
        self._version = INITIAL_VERSION  # the newest version handed out (read version or committed batch)
        self._history: deque[tuple[int, list[Range]]] = deque()  # resolver: write conflict ranges by version
        self._touched: deque[tuple[int, set[bytes]]] = deque()  # keys written per version, for compaction
        self._faults: Optional[FaultPlan] = None
        self._fault_rng = random.Random(0)
        self._pending: list["CommitRequest"] = []
        self._commit_scheduled = False
        self._watches: dict[bytes, list[WatchRecord]] = {}

    # ---- clock and versions ------------------------------------------------------------------------------

    def now(self) -> float:
        """The cluster's clock (monotonic seconds); ``advance_time`` moves it forward without sleeping."""
        return time.monotonic() + self._clock_offset

    def advance_time(self, seconds: float) -> None:
        with self.lock:
            self._clock_offset += seconds

    def _time_version(self) -> int:
        return INITIAL_VERSION + int((self.now() - self._t0) * VERSIONS_PER_SECOND)

    def current_version(self) -> int:
        return max(self._version, self._time_version())

    @property
    def version(self) -> int:
        """The newest committed (or handed out) version."""
        with self.lock:
            return self._version

    def get_read_version(self) -> int:
        with self.lock:
            # Versions advance with time even when idle, as the master's do; a GRV never sees a partial batch
            # because batches are resolved atomically under the lock.
            self._version = self.current_version()
            self.stats.grvs += 1
            return self._version

    def check_read(self, read_version: int) -> None:
        """What a storage server checks before serving a read at ``read_version``; also read fault injection."""
        current = self.current_version()
        if read_version < current - self.mvcc_window:
            self.stats.too_old += 1
            raise EmuError(TRANSACTION_TOO_OLD)
        if read_version > current:
            raise EmuError(FUTURE_VERSION)
        # A version set by the client is now "seen": later commits must get a higher one.
        self._version = max(self._version, read_version)
        plan = self._faults
        if plan is not None and plan.read_failure_rate and self._fault_rng.random() < plan.read_failure_rate:
            self.stats.injected_read_errors += 1
            raise EmuError(self._fault_rng.choice(plan.read_error_codes))
        self.stats.reads += 1

    # ---- faults --------------------------------------------------------------------------------------------

    def set_faults(self, plan: Optional[FaultPlan]) -> None:
        with self.lock:
            self._faults = plan
            self._fault_rng = random.Random(plan.seed if plan is not None else 0)

    @property
    def faults(self) -> Optional[FaultPlan]:
        return self._faults

    # ---- commits -------------------------------------------------------------------------------------------

    def submit(self, request: "CommitRequest") -> None:
        """Queue a commit for the proxy (the network thread); the caller holds the lock."""
        self._pending.append(request)
        if not self._commit_scheduled:
            self._commit_scheduled = True
            NETWORK.call_later(self.batch_interval, self._process_batch)

    def _process_batch(self) -> None:
        with self.lock:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            self._commit_scheduled = bool(self._pending)
            if self._pending:
                NETWORK.call_soon(self._process_batch)
            live = [r for r in batch if not r.cancelled]
            if not live:
                return
            version = max(self._version + 1, self._time_version())
            self.stats.commit_batches += 1
            for order, request in enumerate(live):
                self._resolve(request, version, order)
            self._version = version
            self._compact()

    def _resolve(self, req: "CommitRequest", version: int, order: int) -> None:
        plan = self._faults
        fault = 0
        if plan is not None:
            if plan.commit_failure_rate and self._fault_rng.random() < plan.commit_failure_rate:
                fault = COMMIT_UNKNOWN_RESULT if self._fault_rng.random() < plan.unknown_result_fraction else NOT_COMMITTED
            elif req.has_timeout and plan.commit_timeout_rate and self._fault_rng.random() < plan.commit_timeout_rate:
                fault = TRANSACTION_TIMED_OUT
        if req.reads:
            assert req.read_version is not None
            if req.read_version < self.current_version() - self.mvcc_window:
                self.stats.too_old += 1
                req.finish(self, TRANSACTION_TOO_OLD)
                return
            if self._conflicts(req.read_version, req.reads):
                self.stats.conflicts += 1
                req.finish(self, NOT_COMMITTED)
                return
        if fault == NOT_COMMITTED:
            self.stats.injected_1020 += 1
            req.finish(self, NOT_COMMITTED)
            return
        if fault == COMMIT_UNKNOWN_RESULT and plan is not None and plan.unknown_result_applied < 1.0 \
                and self._fault_rng.random() >= plan.unknown_result_applied:
            self.stats.injected_1021_not_applied += 1
            req.finish(self, COMMIT_UNKNOWN_RESULT)
            return
        stamp = struct.pack(">QH", version, order)
        changed = self._apply(req.mutations, version, stamp)
        self._history.append((version, req.writes))
        self.stats.commits += 1
        self._notify(changed)
        if fault == COMMIT_UNKNOWN_RESULT and not req.idempotent:
            self.stats.injected_1021_applied += 1
            req.finish(self, COMMIT_UNKNOWN_RESULT)
        elif fault == TRANSACTION_TIMED_OUT:
            self.stats.injected_1031_applied += 1
            req.finish(self, TRANSACTION_TIMED_OUT)
        else:
            req.finish(self, 0, version, stamp)

    def _conflicts(self, read_version: int, reads: list[Range]) -> bool:
        for version, writes in reversed(self._history):
            if version <= read_version:
                return False
            if intersects(reads, writes):
                return True
        return False

    def _apply(self, mutations: list[tuple[Any, ...]], version: int, stamp: bytes) -> set[bytes]:
        store = self.store
        changed: set[bytes] = set()
        touched: set[bytes] = set()
        for m in mutations:
            kind = m[0]
            if kind == "set":
                _, key, value = m
            elif kind == "clear":
                _, key = m
                value = None
            elif kind == "clear_range":
                for key in store.live_keys(m[1], m[2]):
                    store.write(key, None, version)
                    changed.add(key)
                    touched.add(key)
                continue
            elif kind == atomic.SET_VERSIONSTAMPED_KEY:
                _, body, pos, value = m
                key = atomic.fill_versionstamp(body, pos, stamp)
            elif kind == atomic.SET_VERSIONSTAMPED_VALUE:
                _, key, body, pos = m
                value = atomic.fill_versionstamp(body, pos, stamp)
            else:
                _, key, param = m
                value = atomic.APPLY[kind](store.latest(key), param)
            if store.write(key, value, version):
                changed.add(key)
            touched.add(key)
        self._touched.append((version, touched))
        return changed

    def _compact(self) -> None:
        horizon = self.current_version() - self.mvcc_window
        while self._history and self._history[0][0] < horizon:
            self._history.popleft()
        while self._touched and self._touched[0][0] < horizon:
            _, keys = self._touched.popleft()
            self.store.compact(keys, horizon)

    # ---- watches -------------------------------------------------------------------------------------------

    def arm_watch(self, rec: WatchRecord) -> None:
        """Register a watch when its transaction commits (the caller holds the lock)."""
        if rec.done:
            return
        db = rec.db
        limit = db.max_watches if db.max_watches is not None else self.max_watches
        if db.outstanding_watches >= limit:
            rec.done = True
            rec.future.set_error(TOO_MANY_WATCHES)
            return
        if self.store.latest(rec.key) != rec.expected:
            self._fire(rec)
            return
        rec.armed = True
        db.outstanding_watches += 1
        self.stats.watches_armed += 1
        self._watches.setdefault(rec.key, []).append(rec)
        rec.future.on_cancel = lambda: self._cancel_watch(rec)

    def _cancel_watch(self, rec: WatchRecord) -> None:
        with self.lock:
            self._unregister(rec)

    def _unregister(self, rec: WatchRecord) -> None:
        rec.done = True
        if not rec.armed:
            return
        rec.armed = False
        rec.db.outstanding_watches -= 1
        recs = self._watches.get(rec.key)
        if recs is not None:
            try:
                recs.remove(rec)
            except ValueError:
                pass
            if not recs:
                del self._watches[rec.key]

    def _fire(self, rec: WatchRecord) -> None:
        self._unregister(rec)
        self.stats.watches_fired += 1
        rec.future.set_result(None)

    def _notify(self, changed: set[bytes]) -> None:
        if not self._watches:
            return
        for key in changed & self._watches.keys():
            current = self.store.latest(key)
            for rec in list(self._watches.get(key, ())):
                if current != rec.expected:  # rewriting the same value is not a change
                    self._fire(rec)

    # ---- inspection and shutdown ---------------------------------------------------------------------------

    def items(self, begin: bytes = b"", end: bytes = b"\xff\xff") -> list[tuple[bytes, bytes]]:
        """The latest committed key-values in [begin, end) (test inspection; no transaction)."""
        with self.lock:
            return list(self.store.scan(begin, end, self._version, False))

    def reset_stats(self) -> None:
        with self.lock:
            self.stats = Stats()

    def watch_count(self) -> int:
        with self.lock:
            return sum(len(v) for v in self._watches.values())

    def forget(self) -> None:
        """Detach (``reset_all``): outstanding watches fail with 1101 so no waiter hangs on a dead cluster."""
        with self.lock:
            self.forgotten = True
            recs = [r for v in self._watches.values() for r in v]
            for rec in recs:
                self._unregister(rec)
                rec.future.set_error(OPERATION_CANCELLED)


# ---- the registry: one cluster per cluster-file path ---------------------------------------------------------

PathLike = Union[str, bytes, "os.PathLike[str]", None]

_registry: dict[Optional[str], Cluster] = {}
_registry_lock = threading.Lock()


def _normalise(cluster_file: PathLike) -> Optional[str]:
    if cluster_file is None:
        return None
    if isinstance(cluster_file, bytes):
        cluster_file = cluster_file.decode()
    return os.path.abspath(os.fspath(cluster_file))


def cluster_for(cluster_file: PathLike = None) -> Cluster:
    key = _normalise(cluster_file)
    with _registry_lock:
        c = _registry.get(key)
        if c is None:
            c = _registry[key] = Cluster(key)
        return c


def forget_all() -> None:
    with _registry_lock:
        clusters = list(_registry.values())
        _registry.clear()
    for c in clusters:
        c.forget()
