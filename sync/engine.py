"""The sync engine: push drains the outbox into the log, pull applies the log into the cache.

Both sides are crash-only.  A pushed row is marked acked only after the log answered; if we die in between, the
next push re-sends it and the log's idempotency (by event_id) returns the original cursor.  A pulled page is
applied in the same SQLite transaction as the stream cursor that covers it.  Own events coming back from the log
are already in the ``events`` table and are skipped by ``apply``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from cxsync.sync.clock import utcnow_iso
from cxsync.sync import events as ev
from cxsync.sync.port import EventLog, LogError, PermanentLogError, TransientLogError

log = logging.getLogger("cxsync.sync")


def _now() -> str:
    return utcnow_iso("milliseconds")


class Backoff:
    """Capped exponential backoff with full jitter: delay ∈ [0, min(cap, base·2ⁿ)]."""

    def __init__(self, base: float = 0.5, cap: float = 60.0, rng: random.Random | None = None) -> None:
        self.base, self.cap, self.failures = base, cap, 0
        self.rng = rng or random.Random()

    def next(self) -> float:
        delay = min(self.cap, self.base * (2 ** self.failures))
        self.failures += 1
        return self.rng.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.failures = 0


@dataclass
class PushResult:
    pushed: int = 0
    quarantined: int = 0
    remaining: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class PullResult:
    applied: int = 0
    skipped: int = 0
    read: int = 0
    caught_up: bool = True


class SyncEngine:
    def __init__(self, cache: Any, event_log: EventLog, *, tenant: str, subscribe: Sequence[str],
                 batch_events: int = 500, batch_bytes: int = 4_000_000, page: int = 500,
                 on_applied: Callable[[int], None] | None = None) -> None:
        self.cache = cache
        self.log = event_log
        self.tenant = tenant
        self.subscribe = list(subscribe)
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self.page = page
        self.on_applied = on_applied
        self._push_lock = threading.Lock()

    # ---- push -----------------------------------------------------------------------------------------------

    def push_batch(self) -> PushResult:
        """Send one bounded batch from the outbox.  Raises TransientLogError when the log is unreachable."""
        res = PushResult()
        with self._push_lock:
            rows = self.cache.pending(self.batch_events, self.batch_bytes)
            by_stream: dict[str, list[Any]] = {}
            for r in rows:
                by_stream.setdefault(r.stream, []).append(r)
            for stream, srows in by_stream.items():
                res.pushed += self._push_rows(stream, srows, res)
            res.remaining = self.cache.outbox_counts()["pending"]
        if res.pushed:
            self.cache.set_state(last_push=_now())
        return res

    def _push_rows(self, stream: str, rows: list[Any], res: PushResult) -> int:
        good, events = [], []
        for r in rows:
            try:
                events.append(ev.decode(r.payload))
                good.append(r)
            except ev.CodecError as exc:
                self._quarantine([r], f"undecodable stored event: {exc}", res)
        if not good:
            return 0
        try:
            cursors = self.log.append(stream, events)
        except TransientLogError as exc:
            self.cache.record_failure([r.seq for r in good], str(exc), quarantine=False)
            raise
        except PermanentLogError as exc:
            bad = set(exc.event_ids)
            if bad:
                offenders = [r for r in good if r.event_id in bad]
                self._quarantine(offenders, str(exc), res)
                rest = [r for r in good if r.event_id not in bad]
                return self._push_rows(stream, rest, res) if rest else 0
            if len(good) == 1:
                self._quarantine(good, str(exc), res)
                return 0
            # No culprit named: split the batch until the offending events are isolated.
            mid = len(good) // 2
            return self._push_rows(stream, good[:mid], res) + self._push_rows(stream, good[mid:], res)
        self.cache.ack([(r.seq, c) for r, c in zip(good, cursors)])
        return len(good)

    def _quarantine(self, rows: list[Any], error: str, res: PushResult) -> None:
        log.error("quarantined %d outbox event(s): %s", len(rows), error)
        self.cache.record_failure([r.seq for r in rows], error, quarantine=True)
        self.cache.set_state(last_error={"title": f"{len(rows)} event(s) refused by the log: {error}",
                                         "hint": "they stay in the outbox; see `cxsync status --json`",
                                         "at": _now()})
        res.quarantined += len(rows)
        res.errors.append(error)

    def push_all(self) -> PushResult:
        total = PushResult()
        while True:
            r = self.push_batch()
            total.pushed += r.pushed
            total.quarantined += r.quarantined
            total.errors += r.errors
            total.remaining = r.remaining
            if r.remaining == 0 or (r.pushed == 0 and r.quarantined == 0):
                return total

    # ---- pull -----------------------------------------------------------------------------------------------

    def pull_page(self, stream: str) -> PullResult:
        res = PullResult()
        cursor = self.cache.cursor(stream)
        entries = self.log.read(stream, cursor, self.page)
        res.read = len(entries)
        if entries:
            mine = [e.event for e in entries if e.event.tenant == self.tenant]
            if len(mine) != len(entries):
                log.error("ignored %d event(s) of another tenant on stream %s", len(entries) - len(mine), stream)
            a = self.cache.apply(mine, "remote", cursor=(stream, entries[-1].cursor))
            res.applied, res.skipped = a.applied, a.skipped
            if a.applied and self.on_applied:
                self.on_applied(a.applied)
        res.caught_up = len(entries) < self.page
        now = _now()
        info = self.cache.get_state("streams", {}) or {}
        st = info.get(stream, {})
        st["last_pull"] = now
        if res.caught_up:
            st["caught_up_at"] = now
        info[stream] = st
        self.cache.set_state(streams=info, last_pull=now)
        return res

    def pull_stream(self, stream: str) -> PullResult:
        total = PullResult()
        while True:
            r = self.pull_page(stream)
            total.applied += r.applied
            total.skipped += r.skipped
            total.read += r.read
            if r.caught_up:
                return total

    def sync_once(self) -> dict[str, Any]:
        """Push everything pending, then pull every subscribed stream until caught up."""
        push = self.push_all()
        pulls = {s: self.pull_stream(s) for s in self.subscribe}
        if not push.errors:
            self.cache.set_state(last_error=None)
        return {
            "pushed": push.pushed, "quarantined": push.quarantined, "outbox": push.remaining,
            "pulled": {s: {"read": p.read, "applied": p.applied, "skipped": p.skipped} for s, p in pulls.items()},
        }

    # ---- loops (run by the agent's worker threads) ----------------------------------------------------------

    def push_loop(self, stop: threading.Event, wake: threading.Event, backoff: Backoff | None = None,
                  on_state: Callable[[str, BaseException | None], None] | None = None) -> None:
        """Drain the outbox whenever woken; on transient errors retry on a timer (re-armed, not only on writes)."""
        backoff = backoff or Backoff()
        delay: float | None = 0.0
        while not stop.is_set():
            if delay is None:
                wake.wait()  # idle: nothing to send until ingest, sync-now or resume sets it
            elif delay > 0:
                wake.wait(delay)
            if stop.is_set():
                return
            wake.clear()
            try:
                if on_state and self.cache.outbox_counts()["pending"]:
                    on_state("busy", None)  # status says "syncing" while a push is in flight
                r = self.push_batch()
                backoff.reset()
                if on_state:
                    on_state("ok", None)
                delay = 0.0 if r.remaining and r.pushed else None
            except TransientLogError as exc:
                delay = backoff.next()
                log.warning("push failed (%s); retrying in %.1fs", exc, delay)
                self.cache.set_state(last_error={"title": f"cannot reach the event log: {exc}",
                                                 "hint": "working offline; queued events are sent on reconnect",
                                                 "at": _now()})
                if on_state:
                    on_state("offline", exc)
            except Exception as exc:  # noqa: BLE001 - a worker never dies silently
                delay = backoff.next()
                log.exception("push error")
                if on_state:
                    on_state("error", exc)

    def pull_loop(self, stream: str, stop: threading.Event, wake: threading.Event, wait_timeout: float = 30.0,
                  backoff: Backoff | None = None, wait_slice: float = 2.0,
                  on_state: Callable[[str, BaseException | None], None] | None = None) -> None:
        """Pull until caught up, then block in the log's wait (a watch, or a file notification)."""
        backoff = backoff or Backoff()
        while not stop.is_set():
            try:
                r = self.pull_stream(stream)
                backoff.reset()
                if on_state:
                    on_state("ok", None)
                del r
                # The log's wait is the only blocking call; wake also breaks it at the next timeout boundary.
                chunk = min(wait_timeout, wait_slice)  # bounds how long a stop waits
                deadline = time.monotonic() + wait_timeout
                while not stop.is_set() and not wake.is_set() and time.monotonic() < deadline:
                    if self.log.wait(stream, self.cache.cursor(stream), chunk):
                        break
                wake.clear()
            except (TransientLogError, LogError) as exc:
                delay = backoff.next()
                log.warning("pull of %s failed (%s); retrying in %.1fs", stream, exc, delay)
                self.cache.set_state(last_error={"title": f"cannot read stream {stream}: {exc}",
                                                 "hint": "working offline; will catch up on reconnect",
                                                 "at": _now()})
                if on_state:
                    on_state("offline", exc)
                wake.wait(delay)  # a retry timer that sync-now (or a reconnect seen by push) cuts short
                wake.clear()
            except Exception as exc:  # noqa: BLE001
                delay = backoff.next()
                log.exception("pull error on %s", stream)
                if on_state:
                    on_state("error", exc)
                wake.wait(delay)  # a retry timer that sync-now (or a reconnect seen by push) cuts short
                wake.clear()
