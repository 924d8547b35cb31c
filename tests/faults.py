"""``FaultyLog``: wraps any EventLog and injects the failures the sync engine must survive.

The faults, in the order they are checked on each append:

* ``unavailable(True)`` — every call (append, read, wait) raises ``TransientLogError`` until ``unavailable(False)``.
* scheduled, first in first out: ``fail_next_append(applied=False)`` — the append never reached the log;
  ``fail_next_append(applied=True)`` — it was applied, then reported failed (FoundationDB's
  ``commit_unknown_result``: the case that writes twice if appends are not idempotent); ``fail_mid_batch(n)`` —
  only the first ``n`` events of the batch were appended (several transactions, the connection lost between them).
* ``random_failures(rate, applied_fraction, reads=False)`` — each append (and read, if asked) fails with
  probability ``rate``; a failed append was applied with probability ``applied_fraction``.  Seeded: the same
  seed and the same calls give the same faults.
* ``fail_reads(n)`` — the next ``n`` reads raise.

Everything else is delegated unchanged.  ``counters`` says what happened.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass
from typing import Sequence

from cxsync.sync.events import ContextEvent
from cxsync.sync.port import EventLog, LogEntry, TransientLogError


@dataclass
class FaultCounters:
    appends: int = 0  # append calls, failed or not
    reads: int = 0
    waits: int = 0
    events_delegated: int = 0  # events handed to the inner log's append (replays included)
    lost: int = 0  # appends failed before reaching the log
    applied_then_failed: int = 0  # appends applied, then reported failed
    mid_batch: int = 0  # appends cut after their first n events
    read_failures: int = 0
    unavailable: int = 0  # calls refused while unavailable

    @property
    def injected(self) -> int:
        """Every failure the wrapper raised."""
        return self.lost + self.applied_then_failed + self.mid_batch + self.read_failures + self.unavailable


_LOST, _APPLIED, _MID = "lost", "applied", "mid"


class FaultyLog:
    def __init__(self, inner: EventLog, seed: int = 0) -> None:
        self.inner = inner
        self.tenant = inner.tenant
        self.counters = FaultCounters()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._scheduled: deque[tuple[str, int]] = deque()
        self._down = False
        self._rate = 0.0
        self._applied_fraction = 0.0
        self._random_reads = False
        self._read_failures_left = 0

    def __repr__(self) -> str:
        return f"FaultyLog({self.inner!r})"

    # ---- scheduling faults ---------------------------------------------------------------------------------

    def fail_next_append(self, applied: bool = False) -> None:
        with self._lock:
            self._scheduled.append((_APPLIED if applied else _LOST, 0))

    def fail_mid_batch(self, after_n: int) -> None:
        if after_n < 0:
            raise ValueError(f"after_n must be >= 0, got {after_n}")
        with self._lock:
            self._scheduled.append((_MID, after_n))

    def unavailable(self, down: bool = True) -> None:
        with self._lock:
            self._down = down

    def random_failures(self, rate: float, applied_fraction: float = 0.5, *, reads: bool = False) -> None:
        if not (0.0 <= rate <= 1.0 and 0.0 <= applied_fraction <= 1.0):
            raise ValueError("rate and applied_fraction are probabilities in [0, 1]")
        with self._lock:
            self._rate, self._applied_fraction, self._random_reads = rate, applied_fraction, reads

    def fail_reads(self, n: int) -> None:
        with self._lock:
            self._read_failures_left += n

    def clear(self) -> None:
        """No more faults (counters are kept)."""
        with self._lock:
            self._scheduled.clear()
            self._down = False
            self._rate = 0.0
            self._random_reads = False
            self._read_failures_left = 0

    # ---- the port ------------------------------------------------------------------------------------------

    def append(self, stream: str, events: Sequence[ContextEvent]) -> list[bytes]:
        events = list(events)
        with self._lock:
            self.counters.appends += 1
            self._refuse_if_down()
            fault = self._scheduled.popleft() if self._scheduled else self._random_append_fault()
        if fault is None:
            return self._delegate(stream, events)
        kind, n = fault
        if kind == _LOST:
            self._count("lost")
            raise TransientLogError("injected fault: the append did not reach the log")
        if kind == _APPLIED:
            self._delegate(stream, events)
            self._count("applied_then_failed")
            raise TransientLogError("injected fault: commit result unknown (the append was applied)")
        self._delegate(stream, events[:n])
        self._count("mid_batch")
        raise TransientLogError(f"injected fault: connection lost after {min(n, len(events))} of {len(events)} events")

    def read(self, stream: str, after: bytes | None, limit: int = 1000) -> list[LogEntry]:
        with self._lock:
            self.counters.reads += 1
            self._refuse_if_down()
            fail = self._read_failures_left > 0
            if fail:
                self._read_failures_left -= 1
            elif self._random_reads and self._rng.random() < self._rate:
                fail = True
            if fail:
                self.counters.read_failures += 1
        if fail:
            raise TransientLogError("injected fault: read failed")
        return self.inner.read(stream, after, limit)

    def wait(self, stream: str, after: bytes | None, timeout: float) -> bool:
        with self._lock:
            self.counters.waits += 1
            self._refuse_if_down()
        return self.inner.wait(stream, after, timeout)

    def close(self) -> None:
        self.inner.close()

    # ---- internals -----------------------------------------------------------------------------------------

    def _refuse_if_down(self) -> None:
        if self._down:
            self.counters.unavailable += 1
            raise TransientLogError("injected fault: the log is unavailable")

    def _random_append_fault(self) -> tuple[str, int] | None:
        if self._rate <= 0 or self._rng.random() >= self._rate:
            return None
        return (_APPLIED if self._rng.random() < self._applied_fraction else _LOST), 0

    def _delegate(self, stream: str, events: list[ContextEvent]) -> list[bytes]:
        cursors = self.inner.append(stream, events)
        with self._lock:
            self.counters.events_delegated += len(events)
        return cursors

    def _count(self, field: str) -> None:
        with self._lock:
            setattr(self.counters, field, getattr(self.counters, field) + 1)
