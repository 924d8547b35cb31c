"""A log that connects on first use and reconnects after failures: being offline at start-up is normal.

Opening a log can fail transiently (a share not mounted yet, a cluster not reachable); the sync loops already
back off and retry on ``TransientLogError``, so the wrapper only has to turn "cannot open" into that error and
try again on the next call.  Configuration errors (permanent) surface unchanged.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

from cxsync.sync.events import ContextEvent
from cxsync.sync.port import EventLog, LogEntry, TransientLogError


class LazyLog:
    def __init__(self, tenant: str, opener: Callable[[], EventLog]) -> None:
        self.tenant = tenant
        self._opener = opener
        self._log: EventLog | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return repr(self._log) if self._log is not None else f"LazyLog(tenant={self.tenant!r}, not connected)"

    def connect(self) -> EventLog:
        with self._lock:
            if self._log is None:
                try:
                    self._log = self._opener()
                except TransientLogError:
                    raise
                except OSError as exc:
                    raise TransientLogError(f"cannot open the event log: {exc}") from exc
            return self._log

    def append(self, stream: str, events: Sequence[ContextEvent]) -> list[bytes]:
        return self.connect().append(stream, events)

    def read(self, stream: str, after: bytes | None, limit: int = 1000) -> list[LogEntry]:
        return self.connect().read(stream, after, limit)

    def wait(self, stream: str, after: bytes | None, timeout: float) -> bool:
        return self.connect().wait(stream, after, timeout)

    def identity(self) -> str | None:
        from cxsync.sync.port import log_identity

        return log_identity(self.connect())

    @property
    def connected(self) -> bool:
        return self._log is not None

    def close(self) -> None:
        with self._lock:
            if self._log is not None:
                self._log.close()
                self._log = None

    def __getattr__(self, name: str) -> Any:  # adapter extras (e.g. stats) when connected
        if self._log is None:
            raise AttributeError(name)
        return getattr(self._log, name)
