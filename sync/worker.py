"""One guard for every worker loop of the agent: errors become states, failures back off and the step runs
again, pause and stop are seen by every loop.

Modelled on Maestral's ``_handle_sync_thread_errors``: a loop is a *step* (one unit of work, returning how long
to wait before the next one) run by ``Worker.run``, which never lets an exception end the thread.  What a step
raises is classified into an ``ErrorKind`` and reported; the next attempt follows a capped, jittered backoff.
A worker therefore recovers by itself — after the disk was full, after the log was read-only, after the cache
was busy — and reports "ok" again, which clears the error its earlier failure set.
"""

from __future__ import annotations

import enum
import errno
import logging
import random
import threading
from dataclasses import dataclass
from typing import Callable

import apsw

from cxsync.sync.errors import CxError
from cxsync.sync.port import PermanentLogError, TransientLogError

log = logging.getLogger("cxsync.worker")


class ErrorKind(enum.Enum):
    """Why a worker is not doing its job right now.  ``state`` is what the agent's status makes of it."""

    OFFLINE = "offline"  # the event log cannot be reached: queued events wait
    BUSY = "busy"  # another writer holds a database: waited for, never fatal
    DISK_FULL = "disk-full"
    READ_ONLY = "read-only"
    LOG_REFUSED = "log-refused"  # the log refuses the operation for good (closed, corrupt, not a log)
    CONFIG = "config"  # sync cannot start: its configuration
    AUTH = "auth"  # sync needs a credential
    FAILED = "failed"  # anything else: a bug, reported with its message

    @property
    def state(self) -> str:
        return {ErrorKind.OFFLINE: "offline", ErrorKind.BUSY: "syncing", ErrorKind.AUTH: "needs-auth"}.get(
            self, "error")


@dataclass(frozen=True)
class Failure:
    kind: ErrorKind
    title: str
    hint: str


def classify(exc: BaseException, where: str = "") -> Failure:
    """The kind, title and hint of a worker failure (titles name the worker; hints say what happens next)."""
    prefix = f"{where}: " if where else ""
    # The root cause may hide behind what it triggered: SQLite rolls back by itself on SQLITE_FULL, and the
    # context manager's own ROLLBACK then fails with "no transaction is active".
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in chain and len(chain) < 8:
        chain.append(e)
        e = e.__cause__ or e.__context__

    def any_of(*types: type[BaseException], err: int | None = None) -> BaseException | None:
        for c in chain:
            if isinstance(c, types) or (err is not None and isinstance(c, OSError) and c.errno == err):
                return c
        return None

    full = any_of(apsw.FullError, err=errno.ENOSPC)
    if full is not None:
        return Failure(ErrorKind.DISK_FULL, f"{prefix}the disk is full ({full})",
                       "free some space: capture and sync resume by themselves")
    ro = any_of(apsw.ReadOnlyError, err=errno.EROFS)
    if ro is not None:
        return Failure(ErrorKind.READ_ONLY, f"{prefix}a database is read-only ({ro})",
                       "make it writable again: the agent reopens it by itself")
    busy = any_of(apsw.BusyError, apsw.LockedError)
    if busy is not None:
        return Failure(ErrorKind.BUSY, f"{prefix}a database is busy ({busy})", "another writer holds it: waiting")
    if getattr(exc, "needs_auth", False):  # e.g. the gateway refused the token (sync/http_log.py)
        hint = exc.hint if isinstance(exc, CxError) and exc.hint else "run `cxsync login`"
        return Failure(ErrorKind.AUTH, f"{prefix}{exc}", hint)
    if isinstance(exc, TransientLogError):
        return Failure(ErrorKind.OFFLINE, f"{prefix}cannot reach the event log: {exc}",
                       "working offline; queued events are sent and remote ones read on reconnect")
    if isinstance(exc, PermanentLogError):
        return Failure(ErrorKind.LOG_REFUSED, f"{prefix}the event log refused: {exc}",
                       "see `cxsync status --json` and the log file")
    if isinstance(exc, CxError):
        return Failure(ErrorKind.FAILED, f"{prefix}{exc.title}", exc.hint or "see the log file")
    return Failure(ErrorKind.FAILED, f"{prefix}{type(exc).__name__}: {exc}", "see the log file; retrying")


class Backoff:
    """Capped exponential backoff with jitter: delay ∈ [d/2, d], d = min(cap, base·2ⁿ)."""

    def __init__(self, base: float = 0.5, cap: float = 60.0, rng: random.Random | None = None) -> None:
        self.base, self.cap, self.failures = base, cap, 0
        self.rng = rng or random.Random()

    def next(self) -> float:
        delay = min(self.cap, self.base * (2 ** self.failures))
        self.failures += 1
        return self.rng.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.failures = 0


class Gate:
    """Running and paused, shared by every loop of one agent."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop_event = stop or threading.Event()
        self._cond = threading.Condition()
        self._paused = False

    @property
    def stopped(self) -> bool:
        return self.stop_event.is_set()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def running(self) -> bool:
        return not self._paused and not self.stop_event.is_set()

    def pause(self) -> None:
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stop_event.set()
            self._cond.notify_all()

    def wait_while_paused(self, recheck: float = 1.0) -> None:
        """Block while paused; return on resume or stop (``recheck`` also notices a stop event set directly)."""
        with self._cond:
            while self._paused and not self.stop_event.is_set():
                self._cond.wait(recheck)


Report = Callable[[str, "Failure | None"], None]
Step = Callable[[], "float | None"]


class Worker:
    """Runs ``step`` until stopped.  ``step`` returns the seconds to wait before it runs again (0: at once), or
    None to wait for ``wake`` (or for ``idle``, which blocks until there may be work, e.g. a log's wait)."""

    def __init__(self, name: str, step: Step, *, gate: Gate, wake: threading.Event, report: Report | None = None,
                 backoff: Backoff | None = None, pausable: bool = True, idle: Callable[[], None] | None = None,
                 on_failure: Callable[[BaseException], None] | None = None, label: str | None = None) -> None:
        self.name = name
        self.label = label or name  # how the log names it: "push", "pull of team"
        self.step = step
        self.gate = gate
        self.wake = wake
        self.report = report
        self.backoff = backoff or Backoff()
        self.pausable = pausable
        self.idle = idle or wake.wait
        self.on_failure = on_failure
        self.failures = 0  # total, for tests and status
        self.restarts = 0  # steps run again after a failure

    def run(self) -> None:
        delay: float | None = 0.0
        failed = False
        while not self.gate.stopped:
            try:
                if delay is None:
                    self.idle()
                elif delay > 0:
                    self.wake.wait(delay)
                self.wake.clear()
                if self.gate.stopped:
                    return
                if self.pausable and self.gate.paused:
                    self.gate.wait_while_paused()
                    delay = 0.0
                    continue
                if failed:
                    self.restarts += 1
                delay = self.step()
                failed = False
                self.backoff.reset()
                if self.report:
                    self.report("ok", None)
            except Exception as exc:  # noqa: BLE001 - the guard: a worker never dies, it reports and retries
                failed = True
                self.failures += 1
                delay = self.backoff.next()
                failure = classify(exc, self.name)
                if failure.kind in (ErrorKind.FAILED, ErrorKind.LOG_REFUSED):
                    log.exception("%s failed; retrying in %.1fs", self.label, delay)
                else:
                    log.warning("%s failed (%s); retrying in %.1fs", self.label, classify(exc).title, delay)
                if self.on_failure is not None:
                    try:
                        self.on_failure(exc)
                    except Exception:  # noqa: BLE001
                        log.exception("worker %s: failure hook failed", self.name)
                if self.report:
                    self.report(failure.kind.state, failure)
