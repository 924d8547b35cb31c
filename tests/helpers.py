"""Small helpers shared by the test suites."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterable, TypeVar

from cxsync.sync.events import SESSION_STARTED, ContextEvent

T = TypeVar("T")

FIXED_TIME = "2025-01-01T00:00:00.000000Z"


def wait_until(pred: Callable[[], T], timeout: float = 5.0, interval: float = 0.01, what: str = "") -> T:
    """Poll ``pred`` until it returns something truthy and return that; fail the test after ``timeout`` s.

    The one place where tests wait for something to happen: no bare sleeps elsewhere.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout} s: {what or getattr(pred, '__name__', pred)}")
        time.sleep(interval)


def make_event(tenant: str, key: str, **data: Any) -> ContextEvent:
    """A deterministic event whose id is ``key``: the same (tenant, key, data) always gives an equal event."""
    return ContextEvent(SESSION_STARTED, key, tenant, "alice", "laptop-1", FIXED_TIME, {"session": key, **data})


def make_events(tenant: str, keys: Iterable[str]) -> list[ContextEvent]:
    return [make_event(tenant, k) for k in keys]


def assert_no_new_threads(before: set[threading.Thread], timeout: float = 5.0) -> None:
    """Every thread started since ``before`` has ended (joined or stopped by a close)."""
    wait_until(lambda: not [t for t in threading.enumerate() if t not in before and t.is_alive()], timeout,
               what=f"threads left running: {[t.name for t in threading.enumerate() if t not in before]}")
