"""The emulated client's futures and its network thread.

``libfdb_c`` resolves futures on its network thread and runs ``fdb_future_set_callback`` callbacks there (or at
once, in the caller, when the future is already ready).  The emulation keeps that shape: the binding's own
``fdb-network-thread`` runs :meth:`Network.run`, which executes commit batches, timers (``on_error`` back-off)
and future callbacks.  No extra thread is started, so a thread-leak check sees exactly what the real binding
would leave behind.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import sys
import threading
import time
import traceback
from typing import Any, Callable, Optional

from .errors import FUTURE_NOT_SET, FUTURE_RELEASED, OPERATION_CANCELLED

_STOP = object()


class Network:
    """A run loop fed through a ``SimpleQueue`` (whose ``put`` is safe from ``__del__``, where futures die)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._timer_lock = threading.Lock()
        self._seq = itertools.count()
        self.is_setup = False
        self.running = False
        self.thread_ident: Optional[int] = None

    def call_soon(self, fn: Callable[[], None]) -> None:
        self._queue.put(fn)

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        if delay <= 0:
            self._queue.put(fn)
            return
        with self._timer_lock:
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), fn))
        self._queue.put(None)  # wake the loop so it recomputes its timeout

    def on_network_thread(self) -> bool:
        return threading.get_ident() == self.thread_ident

    def run(self) -> None:
        self.thread_ident = threading.get_ident()
        self.running = True
        try:
            while True:
                timeout = self._run_due_timers()
                try:
                    task = self._queue.get(timeout=timeout)
                except queue.Empty:
                    continue
                if task is _STOP:
                    return
                if task is not None:
                    _run_task(task)
        finally:
            self.running = False

    def stop(self) -> None:
        self._queue.put(_STOP)

    def _run_due_timers(self) -> Optional[float]:
        while True:
            with self._timer_lock:
                if not self._timers:
                    return None
                deadline, _, fn = self._timers[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    return wait
                heapq.heappop(self._timers)
            _run_task(fn)


def _run_task(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:  # a failing task must not kill the network thread (libfdb_c would abort instead)
        sys.stderr.write("fdbemu: unhandled error on the network thread:\n")
        traceback.print_exc(file=sys.stderr)


NETWORK = Network()


class NativeFuture:
    """One ``FDBFuture``: ready with a value or an error code, callbacks run once on readiness."""

    __slots__ = ("kind", "_lock", "_done", "_error", "_value", "_callbacks", "released", "on_cancel", "keepalive")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._lock = threading.Lock()
        self._done = False
        self._error = 0
        self._value: Any = None
        self._callbacks: list[Callable[[], None]] = []
        self.released = False
        self.on_cancel: Optional[Callable[[], None]] = None
        self.keepalive: list[Any] = []  # ctypes buffers lent to the binding

    @classmethod
    def ready(cls, kind: str, value: Any = None) -> "NativeFuture":
        f = cls(kind)
        f._done, f._value = True, value
        return f

    @classmethod
    def failed(cls, kind: str, code: int) -> "NativeFuture":
        f = cls(kind)
        f._done, f._error = True, code
        return f

    def is_ready(self) -> bool:
        return self._done

    def set_result(self, value: Any = None) -> bool:
        return self._finish(0, value)

    def set_error(self, code: int) -> bool:
        return self._finish(code, None)

    def _finish(self, code: int, value: Any) -> bool:
        with self._lock:
            if self._done:
                return False
            self._done, self._error, self._value = True, code, value
            callbacks, self._callbacks = self._callbacks, []
            self.on_cancel = None
        for cb in callbacks:  # never run user code under an emulation lock: hand it to the network thread
            NETWORK.call_soon(cb)
        return True

    def add_callback(self, cb: Callable[[], None]) -> None:
        with self._lock:
            if not self._done:
                self._callbacks.append(cb)
                return
        cb()  # already ready: fdb_future_set_callback calls back at once, from the calling thread

    def cancel(self) -> None:
        hook = self.on_cancel
        if self.set_error(OPERATION_CANCELLED) and hook is not None:
            hook()

    def outcome(self) -> tuple[int, Any]:
        """(error code, value) for the ``fdb_future_get_*`` family."""
        if not self._done:
            return FUTURE_NOT_SET, None
        if self._error:
            return self._error, None
        if self.released:
            return FUTURE_RELEASED, None
        return 0, self._value

    def wait(self, timeout: Optional[float] = None) -> bool:
        if self._done:
            return True
        ev = threading.Event()
        self.add_callback(ev.set)
        return ev.wait(timeout)
