"""The sync engine: push drains the outbox into the log, pull applies the log into the cache.

Both sides are crash-only.  A pushed row is marked acked only after the log answered; if we die in between, the
next push re-sends it and the log's idempotency (by event_id) returns the original cursor.  A pulled page is
applied in the same SQLite transaction as the stream cursor that covers it.  Own events coming back from the log
are already in the ``events`` table and are skipped by ``apply``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from cxsync.sync.clock import utcnow_iso
from cxsync.sync import events as ev
from cxsync.sync.port import EventLog, LogEntry, PermanentLogError, TransientLogError, log_identity
from cxsync.sync.worker import Backoff, Failure, Gate, Worker

__all__ = ["Backoff", "PullResult", "PushResult", "SyncCache", "SyncEngine"]

log = logging.getLogger("cxsync.sync")


def _now() -> str:
    return utcnow_iso("milliseconds")


class PendingRow(Protocol):
    @property
    def seq(self) -> int: ...
    @property
    def stream(self) -> str: ...
    @property
    def event_id(self) -> str: ...
    @property
    def payload(self) -> bytes: ...


class PulledPage(Protocol):
    @property
    def applied(self) -> int: ...
    @property
    def skipped(self) -> int: ...
    @property
    def undecodable(self) -> int: ...


class SyncCache(Protocol):
    """What the engine needs of the cache (``cxsync.cache.Cache`` provides it): the seam mypy checks."""

    def pending(self, max_events: int = ..., max_bytes: int = ..., stream: str | None = ...
                ) -> Sequence[PendingRow]: ...
    def outbox_counts(self) -> dict[str, int]: ...
    def ack(self, acks: Sequence[tuple[int, bytes]]) -> None: ...
    def record_failure(self, seqs: Sequence[int], error: str, *, quarantine: bool) -> None: ...
    def set_state(self, **values: Any) -> None: ...
    def cursor(self, stream: str) -> bytes | None: ...
    def apply_pulled(self, stream: str, entries: Sequence[LogEntry], *, log_id: str | None = ...,
                     caught_up: bool = ..., behind: int = ...) -> PulledPage | None: ...
    def relink_log(self, log_id: str) -> dict[str, Any]: ...


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
    undecodable: int = 0  # kept aside in the cache, skipped: see ``Cache.undecodable``
    caught_up: bool = True


class SyncEngine:
    def __init__(self, cache: SyncCache, event_log: EventLog, *, tenant: str, subscribe: Sequence[str],
                 batch_events: int = 500, batch_bytes: int = 4_000_000, page: int = 500,
                 on_applied: Callable[[int], None] | None = None,
                 on_log_changed: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.cache = cache
        self.log = event_log
        self.tenant = tenant
        self.subscribe = list(subscribe)
        self.batch_events = batch_events
        self.batch_bytes = batch_bytes
        self.page = page
        self.on_applied = on_applied
        self.on_log_changed = on_log_changed
        self._push_lock = threading.Lock()
        self._link_lock = threading.Lock()
        self._linked: str | None = None  # the log identity the cache was last checked against
        self.log_changes: list[dict[str, Any]] = []

    # ---- the log's identity ---------------------------------------------------------------------------------

    def check_log(self) -> str | None:
        """The current log's identity, after making sure the cache is linked to it.  A log that was deleted,
        replaced or retargeted has a new identity: everything acked to the old one is queued again and every
        stream is read again from its start (both idempotent), and the change is reported."""
        ident = log_identity(self.log)
        if ident is None:
            return None
        if ident == self._linked:
            return ident
        # Never between a push's append and its ack: an event appended to the old log and acked after the
        # relink would count as published to the new one.  Acked before the relink, it is simply sent again.
        with self._push_lock, self._link_lock:
            if ident == self._linked:
                return ident
            change = self.cache.relink_log(ident)
            self._linked = ident
        if change["changed"]:
            info = {"at": _now(), "previous": change["previous"], "current": ident, "requeued": change["requeued"]}
            self.log_changes.append(info)
            log.warning("the event log %r is not the one this cache synced with (identity %s, was %s): it was"
                        " deleted or replaced; republishing %d event(s) and reading every stream again",
                        self.log, ident, change["previous"], change["requeued"])
            if self.on_log_changed is not None:
                self.on_log_changed(info)
        return ident

    # ---- push -----------------------------------------------------------------------------------------------

    def push_batch(self) -> PushResult:
        """Send one bounded batch from the outbox.  Raises TransientLogError when the log is unreachable."""
        res = PushResult()
        self.check_log()
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

    def _push_rows(self, stream: str, rows: list[PendingRow], res: PushResult) -> int:
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

    def _quarantine(self, rows: list[PendingRow], error: str, res: PushResult) -> None:
        log.error("quarantined %d outbox event(s): %s", len(rows), error)
        self.cache.record_failure([r.seq for r in rows], error, quarantine=True)
        # Not a worker error (nothing to recover from by waiting): kept with the quarantined rows' count.
        self.cache.set_state(quarantine_error={"title": f"{len(rows)} event(s) refused by the log: {error}",
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
        """Read one page after the stream's cursor and apply it with the cursor, in one cache transaction.
        Entries that cannot be decoded or materialised are kept aside by the cache, never stopping the stream."""
        res = PullResult()
        ident = self.check_log()
        cursor = self.cache.cursor(stream)
        entries = self.log.read(stream, cursor, self.page)
        res.read = len(entries)
        res.caught_up = len(entries) < self.page
        a = self.cache.apply_pulled(stream, entries, log_id=ident, caught_up=res.caught_up,
                                    behind=0 if res.caught_up else self.page)
        if a is None:  # the log changed under this page: the next page starts again from the new log
            res.caught_up = False
            return res
        res.applied, res.skipped, res.undecodable = a.applied, a.skipped, a.undecodable
        if a.undecodable:
            log.error("stream %s: %d event(s) could not be decoded or applied; kept aside and skipped (see"
                      " `cxsync status`; `cxsync rebuild` after an upgrade applies them)", stream, a.undecodable)
        if a.applied and self.on_applied:
            self.on_applied(a.applied)
        return res

    def pull_stream(self, stream: str, gate: Gate | None = None) -> PullResult:
        """Pull until caught up (or, with a ``gate``, until paused or stopped between two pages)."""
        total = PullResult()
        while True:
            r = self.pull_page(stream)
            total.applied += r.applied
            total.skipped += r.skipped
            total.read += r.read
            total.undecodable += r.undecodable
            total.caught_up = r.caught_up
            if r.caught_up or (gate is not None and not gate.running):
                return total

    def sync_once(self) -> dict[str, Any]:
        """Push everything pending, then pull every subscribed stream until caught up."""
        push = self.push_all()
        pulls = {s: self.pull_stream(s) for s in self.subscribe}
        out: dict[str, Any] = {
            "pushed": push.pushed, "quarantined": push.quarantined, "outbox": push.remaining,
            "pulled": {s: {"read": p.read, "applied": p.applied, "skipped": p.skipped,
                           "undecodable": p.undecodable} for s, p in pulls.items()},
        }
        if self.log_changes:
            out["log_replaced"] = self.log_changes[-1]
        return out

    # ---- loops (run by the agent's worker threads, under the one worker guard) -------------------------------

    def push_worker(self, gate: Gate, wake: threading.Event, *, backoff: Backoff | None = None,
                    report: Callable[[str, Failure | None], None] | None = None) -> Worker:
        """Drain the outbox whenever woken; after a failure retry on the guard's timer (not only on writes)."""
        def step() -> float | None:
            if report is not None and self.cache.outbox_counts()["pending"]:
                report("busy", None)  # status says "syncing" while a push is in flight
            r = self.push_batch()
            return 0.0 if r.remaining and r.pushed else None

        return Worker("push", step, gate=gate, wake=wake, report=report, backoff=backoff)

    def pull_worker(self, stream: str, gate: Gate, wake: threading.Event, *, wait_timeout: float = 30.0,
                    wait_slice: float = 2.0, backoff: Backoff | None = None,
                    report: Callable[[str, Failure | None], None] | None = None) -> Worker:
        """Pull until caught up, then block in the log's wait (a watch, or a file notification)."""
        def step() -> float | None:
            r = self.pull_stream(stream, gate)
            return None if r.caught_up else 0.0

        def idle() -> None:
            # The log's wait is the only blocking call; wake, pause and stop break it at a slice boundary.
            deadline = time.monotonic() + wait_timeout
            while gate.running and not wake.is_set() and time.monotonic() < deadline:
                if self.log.wait(stream, self.cache.cursor(stream), min(wait_timeout, wait_slice)):
                    return

        return Worker(f"pull:{stream}", step, gate=gate, wake=wake, report=report, backoff=backoff, idle=idle,
                      label=f"pull of {stream}")

    def push_loop(self, stop: threading.Event, wake: threading.Event, backoff: Backoff | None = None,
                  on_state: Callable[[str, Failure | None], None] | None = None, gate: Gate | None = None) -> None:
        self.push_worker(gate or Gate(stop), wake, backoff=backoff, report=on_state).run()

    def pull_loop(self, stream: str, stop: threading.Event, wake: threading.Event, wait_timeout: float = 30.0,
                  backoff: Backoff | None = None, wait_slice: float = 2.0,
                  on_state: Callable[[str, Failure | None], None] | None = None, gate: Gate | None = None) -> None:
        self.pull_worker(stream, gate or Gate(stop), wake, wait_timeout=wait_timeout, wait_slice=wait_slice,
                         backoff=backoff, report=on_state).run()
