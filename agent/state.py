"""The one owner of the agent's state: what each worker is doing, the one last error, pause.

Workers report through ``report(component, state, failure)`` (the worker guard does it for them); the overall
state and the last error are *derived* from the components' current reports, so an error disappears as soon as
the worker that raised it reports "ok" again — a stale error cannot survive a recovery.  Conditions that stay
true until the agent restarts (sync could not start, a credential is missing, file watches fell back to polling)
are components too, which simply never recover.

The snapshot is written atomically to ``agent.json`` for ``cxsync status`` and the tray (``cxsync.agent.status``
reads it into the one ``Status`` type).
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cxsync.sync.worker import ErrorKind, Failure


_BLOCK = 4096


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass
class _Component:
    state: str = "ok"  # ok | busy | syncing | offline | error
    failure: Failure | None = None
    since: float = 0.0


class AgentState:
    """Thread-safe; every change is published (``publish`` is called with the new snapshot)."""

    def __init__(self, path: Path, *, secure: Callable[[Path], None] | None = None) -> None:
        self.path = path
        self._secure = secure
        self._lock = threading.RLock()
        self._components: dict[str, _Component] = {}
        self._paused = False
        self._busy_hint: Callable[[], bool] = lambda: False
        self.facts: dict[str, Any] = {"pid": os.getpid(), "started_at": time.time()}
        self.state = "idle"
        # Nothing is published before the agent can be talked to: a snapshot is what tells `cxsync status`
        # (and `cxsync stop`) that the agent runs, so it must not appear before the control channel does.
        self.ready = False
        self.on_recovered: Callable[[str, _Component], None] | None = None

    # ---- reports ------------------------------------------------------------------------------------------

    def report(self, component: str, state: str, failure: Failure | None = None) -> None:
        with self._lock:
            prev = self._components.get(component)
            if state == "busy" and prev is not None and prev.failure is not None:
                return  # a retry under way is not a recovery: the failure stands until the step succeeds
            if prev is not None and prev.state == state and prev.failure == failure:
                if self._compute() != self.state:  # e.g. syncing -> idle once the outbox drained
                    self.publish()
                return
            self._components[component] = _Component(state, failure, time.time())
            recovered = prev is not None and prev.failure is not None and state == "ok"
            self.publish()
        if recovered and self.on_recovered is not None and prev is not None:
            self.on_recovered(component, prev)

    def reporter(self, component: str) -> Callable[[str, Failure | None], None]:
        return lambda state, failure: self.report(component, state, failure)

    def fail(self, component: str, kind: ErrorKind, title: str, hint: str) -> None:
        """A condition that holds until the agent restarts (or until ``component`` reports ok)."""
        self.report(component, kind.state, Failure(kind, title, hint))

    def clear(self, component: str) -> None:
        self.report(component, "ok", None)

    def set_paused(self, paused: bool) -> None:
        with self._lock:
            self._paused = paused
            self.publish()

    def set_busy_hint(self, hint: Callable[[], bool]) -> None:
        """Work queued but not yet picked up (dirty files, a push woken) also reads as syncing."""
        self._busy_hint = hint

    def open(self) -> None:
        """The agent is ready for commands: publish from now on."""
        with self._lock:
            self.ready = True
            self.publish()

    def update(self, **facts: Any) -> None:
        with self._lock:
            self.facts.update(facts)
            self.publish()

    # ---- derived ------------------------------------------------------------------------------------------

    def failures(self) -> dict[str, Failure]:
        with self._lock:
            return {n: c.failure for n, c in self._components.items() if c.failure is not None}

    def last_error(self) -> dict[str, Any] | None:
        """The most recent failure still current, or None: recovered failures are gone."""
        with self._lock:
            current = [(c.since, n, c.failure) for n, c in self._components.items() if c.failure is not None]
        if not current:
            return None
        since, name, f = max(current, key=lambda x: x[0])
        return {"title": f.title, "hint": f.hint, "kind": f.kind.value, "component": name, "at": _iso(since)}

    def _compute(self) -> str:
        if self._paused:
            return "paused"
        states = {c.state for c in self._components.values()}
        if "needs-auth" in states:
            return "needs-auth"
        if "error" in states:
            return "error"
        if "offline" in states:
            return "offline"
        if states & {"busy", "syncing"} or self._busy_hint():
            return "syncing"
        return "idle"

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            self.state = self._compute()
            return {**self.facts, "state": self.state, "paused": self._paused, "error": self.last_error(),
                    "workers": {n: {"state": c.state, "error": c.failure.title if c.failure else None}
                                for n, c in sorted(self._components.items())}}

    def publish(self) -> None:
        with self._lock:
            if not self.ready:
                return
            text = json.dumps(self.snapshot())
            # Padded to whole blocks, so that on a full disk the snapshot can still be rewritten in place (the
            # blocks are already the file's): status tells the truth exactly when the disk is full.
            body = (text + " " * (-len(text) % _BLOCK)).encode()
            tmp = self.path.with_name(self.path.name + ".tmp")
            try:
                tmp.write_bytes(body)
                if self._secure is not None:
                    self._secure(tmp)
                os.replace(tmp, self.path)
            except OSError:
                tmp.unlink(missing_ok=True)
                self._write_in_place(body)

    def _write_in_place(self, body: bytes) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY)
        except OSError:
            return
        try:
            if os.fstat(fd).st_size >= len(body):
                os.pwrite(fd, body.ljust(os.fstat(fd).st_size), 0)
        except OSError:  # even that failed: status reads the previous snapshot
            pass
        finally:
            os.close(fd)
