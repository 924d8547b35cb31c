"""Long-poll waiters held cheaply: one watcher thread per watched stream, fanning out to asyncio futures.

The port's ``wait`` blocks (a FoundationDB watch, a file notification), so the gateway never calls it once per
waiting agent.  For each (tenant, stream) with at least one waiter, one named daemon thread blocks in
``log.wait(stream, lowest cursor waited on, slice)``; when it returns True, every waiter of that stream is
released on the event loop in one hop.  A waiter whose cursor is the lowest is certainly satisfied; the others
(ahead of it: a cursor of another stream, a client that read further) re-check with a zero-timeout ``wait`` and
register again if nothing is newer for them.  The thread ends when its stream has no waiter left.

A thousand agents waiting on their own and their team's streams cost a future and a dict entry each, plus one
thread per distinct stream — not a thread per request.  ``slice`` (1 s) bounds how late a waiter registering
below the cursor a watcher already blocks on is noticed, and how long a shutdown waits for the threads.

Revocation: futures are indexed by token id; ``fail_token`` ends them with ``Revoked`` at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Callable

from cxsync.sync.port import EventLog, LogError

log = logging.getLogger(__name__)

WATCH_SLICE = 1.0


class Revoked(Exception):
    """The waiter's token was revoked (or expired) while it waited."""


@dataclass(eq=False)
class _Waiter:
    after: bytes  # b"" for "from the start"
    token_id: str
    future: asyncio.Future[bool]


@dataclass(eq=False)
class _Watch:
    tenant: str
    stream: str
    waiters: set[_Waiter] = field(default_factory=set)
    thread: threading.Thread | None = None
    changed: threading.Event = field(default_factory=threading.Event)  # a waiter came or went


class WaitHub:
    def __init__(self, get_log: Callable[[str], EventLog], slice_seconds: float = WATCH_SLICE) -> None:
        self._get_log = get_log
        self._slice = slice_seconds
        self._lock = threading.Lock()
        self._watches: dict[tuple[str, str], _Watch] = {}
        self._by_token: dict[str, set[_Waiter]] = {}
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- figures for /metrics and the benchmark ---------------------------------------------------------------

    def waiter_count(self) -> int:
        with self._lock:
            return sum(len(w.waiters) for w in self._watches.values())

    def watcher_count(self) -> int:
        with self._lock:
            return sum(1 for w in self._watches.values() if w.thread is not None)

    def tokens_waiting(self) -> dict[str, set[str]]:
        """tenant -> token ids with an open long-poll (what the revocation check looks at)."""
        out: dict[str, set[str]] = {}
        with self._lock:
            for (tenant, _), watch in self._watches.items():
                for w in watch.waiters:
                    out.setdefault(tenant, set()).add(w.token_id)
        return out

    # ---- waiting ---------------------------------------------------------------------------------------------

    async def wait(self, tenant: str, stream: str, after: bytes | None, timeout: float, token_id: str) -> bool:
        """True when the stream holds something newer than ``after``; False after ``timeout``; Revoked."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        deadline = loop.time() + timeout
        event_log = self._get_log(tenant)
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0 or self._stop.is_set():
                return False
            waiter = _Waiter(after or b"", token_id, loop.create_future())
            self._register(tenant, stream, waiter)
            try:
                certain = await asyncio.wait_for(asyncio.shield(waiter.future), remaining)
            except asyncio.TimeoutError:
                return False
            finally:
                self._unregister(tenant, stream, waiter)
            if certain:
                return True
            # Released because something newer than a lower cursor arrived: is it newer than ours?
            from anyio import to_thread

            if await to_thread.run_sync(event_log.wait, stream, after, 0.0):
                return True

    def fail_token(self, token_id: str) -> int:
        """End every long-poll of ``token_id`` with Revoked; the number ended."""
        with self._lock:
            waiters = list(self._by_token.get(token_id, ()))
        if waiters and self._loop is not None:
            self._loop.call_soon_threadsafe(_settle, waiters, Revoked())
        return len(waiters)

    def close(self) -> None:
        """Release every waiter (False) and stop the watcher threads within one slice."""
        self._stop.set()
        with self._lock:
            waiters = [w for watch in self._watches.values() for w in watch.waiters]
            threads = [w.thread for w in self._watches.values() if w.thread is not None]
        if waiters and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(_settle, waiters, False)
        for t in threads:
            t.join(timeout=self._slice + 5)

    # ---- internals -------------------------------------------------------------------------------------------

    def _register(self, tenant: str, stream: str, waiter: _Waiter) -> None:
        with self._lock:
            watch = self._watches.setdefault((tenant, stream), _Watch(tenant, stream))
            watch.waiters.add(waiter)
            watch.changed.set()
            self._by_token.setdefault(waiter.token_id, set()).add(waiter)
            if watch.thread is None and not self._stop.is_set():
                watch.thread = threading.Thread(target=self._watch, args=(watch,), daemon=True,
                                                name=f"cxsync-gw-watch-{tenant}-{stream}")
                watch.thread.start()

    def _unregister(self, tenant: str, stream: str, waiter: _Waiter) -> None:
        with self._lock:
            watch = self._watches.get((tenant, stream))
            if watch is not None:
                watch.waiters.discard(waiter)
                watch.changed.set()
            mine = self._by_token.get(waiter.token_id)
            if mine is not None:
                mine.discard(waiter)
                if not mine:
                    del self._by_token[waiter.token_id]

    def _watch(self, watch: _Watch) -> None:
        event_log = self._get_log(watch.tenant)
        while True:
            with self._lock:
                watch.changed.clear()
                pending = [w for w in watch.waiters if not w.future.done()]
                if not watch.waiters or self._stop.is_set():
                    watch.thread = None
                    if not watch.waiters:
                        self._watches.pop((watch.tenant, watch.stream), None)
                    return
            if not pending:  # released, not yet unregistered by their coroutines
                watch.changed.wait(self._slice)
                continue
            lowest = min(w.after for w in pending)
            try:
                newer = event_log.wait(watch.stream, lowest or None, self._slice)
            except LogError as exc:  # the log is down: waiters time out; keep watching at a slow pace
                log.warning("watching %s/%s failed: %s", watch.tenant, watch.stream, exc)
                self._stop.wait(self._slice)
                continue
            if newer and self._loop is not None:
                released = threading.Event()
                self._loop.call_soon_threadsafe(_release, pending, lowest, released)
                released.wait(self._slice)  # the same waiters must not be released twice


def _release(waiters: list[_Waiter], lowest: bytes, released: threading.Event) -> None:
    for w in waiters:
        if not w.future.done():
            w.future.set_result(w.after <= lowest)
    released.set()


def _settle(waiters: list[_Waiter], outcome: bool | BaseException) -> None:
    for w in waiters:
        if not w.future.done():
            if isinstance(outcome, BaseException):
                w.future.set_exception(outcome)
            else:
                w.future.set_result(outcome)
