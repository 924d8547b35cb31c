"""The agent process: named worker threads sharing one stop event.

    watcher   watchdog observers on every transcript root; handlers only enqueue paths
    ingest    startup rescan, then ingests dirty files (debounced) — the only thread that reads transcripts
    push      drains the outbox into the event log (woken by ingest, sync-now, resume, timers)
    pull:<s>  one per subscribed stream: pull until caught up, then block in the log's wait
    clock     notices wake-from-sleep (wall clock jumped past the monotonic clock) and re-arms sync
    control   the local control channel

Every wait is on an Event with a timeout; nothing polls while nothing changes.  Crash-only: stopping is a
courtesy — offsets, outbox rows and cursors are committed with the rows they cover.
"""

from __future__ import annotations

import errno
import json
import logging
import logging.handlers
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from cxsync.agent import app
from cxsync.agent.config import Config
from cxsync.sync.errors import CxError
from cxsync.agent.lock import AGENT, InstanceLock, holder
from cxsync.agent.paths import private_rotating_log, secure_file
from cxsync.sync.clock import utcnow_iso

log = logging.getLogger("cxsync.agent")

DEBOUNCE = 0.05
SLEEP_JUMP = 30.0  # seconds of wall clock beyond the monotonic clock that mean "the machine slept"
CLOCK_INTERVAL = 60.0
UNREADABLE_RESCAN = 10.0  # seconds between rescans while a transcript folder cannot be read (no event says when)


class AlreadyRunning(CxError):
    exit_code = 0

    def __init__(self, pid: int) -> None:
        super().__init__(f"already running (pid {pid})")
        self.pid = pid


def setup_file_logging(cfg: Config, level: int = logging.INFO) -> logging.Handler:
    cfg.paths.ensure()
    handler = private_rotating_log(cfg.paths.log_file, max_bytes=1_000_000, backups=5)
    secure_file(cfg.paths.log_file)  # a log left by an older cxsync may have been created readable by others
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"))
    handler.setLevel(level)
    root = logging.getLogger("cxsync")
    root.addHandler(handler)
    root.setLevel(min(level, root.level or level) if root.level else level)
    return handler


class _Enqueue:
    """A watchdog handler that only records which paths changed and wakes the ingest thread."""

    # Our own reads of a transcript raise "opened" and "closed_no_write": reacting to them would re-read the
    # file forever.  Only changes count.
    CHANGES = frozenset({"created", "modified", "moved", "deleted", "closed"})

    def __init__(self, sink: Callable[[str, bool], None]) -> None:
        self.sink = sink

    def dispatch(self, event: Any) -> None:
        if event.event_type not in self.CHANGES:
            return
        for attr in ("src_path", "dest_path"):
            p = getattr(event, attr, None)
            if not p:
                continue
            p = os.fsdecode(p)
            if event.is_directory:
                if event.event_type in ("created", "moved"):
                    self.sink(p, True)
            elif p.endswith(".jsonl"):
                self.sink(p, False)


class Supervisor:
    def __init__(self, config: Config, *, force_polling: bool | None = None) -> None:
        self.cfg = config
        self.stop_event = threading.Event()
        self.force_polling = (os.environ.get("CXSYNC_POLLING") == "1") if force_polling is None else force_polling
        self._lock = InstanceLock(config.paths.lock_file, AGENT)
        self._dirty: set[str] = set()
        self._rescan = False
        self._dirty_lock = threading.Lock()
        self._dirty_event = threading.Event()
        self._push_wake = threading.Event()
        self._pull_wakes: dict[str, threading.Event] = {}
        self._threads: list[threading.Thread] = []
        self._observers: list[Any] = []
        self._handler: Any = None  # the watchdog handler, once the watchers run
        self._paused = False
        self._publish_lock = threading.Lock()
        self._needs_auth = False
        self._components: dict[str, str] = {}
        self._error: dict[str, Any] | None = None
        self._state = "idle"
        self._started_at = time.time()
        self._watched = 0
        self._observer_kind = "none"
        self._credential_backend: str | None = None
        self.clock_interval = CLOCK_INTERVAL
        self.unreadable_rescan = UNREADABLE_RESCAN
        self.knowledge_interval = 30.0
        self.wall_clock: Callable[[], float] = time.time  # replaceable: tests simulate a suspend
        self.wakeups = 0
        self.cache: Any = None
        self.engine: Any = None
        self.control: Any = None
        self.log_handler: logging.Handler | None = None

    # ---- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        paths = self.cfg.paths.ensure()
        if not self._lock.acquire():
            raise AlreadyRunning(holder(paths.lock_file) or -1)
        self._started_at = time.time()
        self.log_handler = setup_file_logging(self.cfg)
        log.info("agent starting (pid %d, machine %s)", os.getpid(), self.cfg.identity.machine)
        self.cache = app.writable_cache(self.cfg)
        self.ingestor = app.ingestor(self.cfg, self.cache)
        self.ingestor.stop = self.stop_event  # stopping never waits for the end of a long file
        self._start_sync()
        from cxsync.agent.control import ControlServer

        self.control = ControlServer(paths, self.handle_command)
        self.control.start()
        self._spawn("ingest", self._ingest_loop)
        self._spawn("clock", self._clock_loop)
        if self.cfg.backup.daily:
            self._spawn("backup", self._backup_loop)
        self._spawn("knowledge", self._knowledge_loop)
        self._start_watchers()
        self._spawn("credentials", self._probe_credentials)
        self._publish_state()

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=self._guard(name, target), name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def _guard(self, name: str, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception as exc:  # noqa: BLE001 - a dead worker is reported, not silent
                from cxsync.cache.db import environment_error  # a full disk says so, not its exception

                log.exception("worker %s died", name)
                known = environment_error(exc)
                self._set_error(f"worker {name} stopped: {known.title if known else exc}",
                                (known.hint + "; then restart the agent") if known and known.hint else
                                "see the log file; restart the agent")
        return run

    def _start_sync(self) -> None:
        if not self.cfg.sync.enabled:
            return
        from cxsync.sync.engine import SyncEngine

        from cxsync.sync.errors import NoCredentials

        try:
            event_log = app.open_log(self.cfg, lazy=True)
        except NoCredentials as exc:
            log.error("sync needs a credential: %s", exc.title)
            self._needs_auth = True
            self._set_error(exc.title, exc.hint)
            return
        except Exception as exc:  # noqa: BLE001 - sync failing to start must not stop capture
            hint = getattr(exc, "hint", "") or "check [sync] in the config; capture and search keep working"
            title = getattr(exc, "title", None) or str(exc).split(": install")[0]
            log.error("sync disabled: %s", title)
            self._set_error(f"sync cannot start: {title}", hint)
            return
        self.engine = SyncEngine(self.cache, event_log, tenant=self.cfg.identity.tenant,
                                 subscribe=self.cfg.sync.subscribe, batch_events=self.cfg.sync.batch_events,
                                 batch_bytes=self.cfg.sync.batch_bytes)
        self._spawn("push", lambda: self.engine.push_loop(self.stop_event, self._push_wake,
                                                          on_state=self._component("push")))
        for stream in self.cfg.sync.subscribe:
            wake = self._pull_wakes.setdefault(stream, threading.Event())
            self._spawn(f"pull:{stream}", self._puller(stream, wake))
        self._push_wake.set()

    def _puller(self, stream: str, wake: threading.Event) -> Callable[[], None]:
        def run() -> None:
            self.engine.pull_loop(stream, self.stop_event, wake, on_state=self._component(f"pull:{stream}"))
        return run

    def _start_watchers(self) -> None:
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        from cxsync.agent.discovery import projects_dir

        targets = []
        for root in self.ingestor.roots:
            d = projects_dir(root)
            target = d if d.is_dir() else root if root.is_dir() else None
            if target is None:
                log.warning("transcript root %s does not exist yet; it is rescanned at start-up", root)
                continue
            targets.append(target)
        kind = "polling" if self.force_polling else "native"
        observer: Any = PollingObserver(timeout=2.0) if self.force_polling else Observer()
        handler = self._handler = _Enqueue(self._enqueue)
        try:
            for t in targets:
                observer.schedule(handler, str(t), recursive=True)
            observer.start()
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
            log.error("the OS refused more file watches (%s). Raise the limits, e.g. `sudo sysctl "
                      "fs.inotify.max_user_watches=524288 fs.inotify.max_user_instances=1024`; falling back to "
                      "polling every 2 s meanwhile", os.strerror(exc.errno))
            self._set_error("file watch limit reached: polling instead",
                            "sudo sysctl fs.inotify.max_user_watches=524288 fs.inotify.max_user_instances=1024")
            try:
                observer.stop()
            except Exception:  # noqa: BLE001
                pass
            observer = PollingObserver(timeout=2.0)
            for t in targets:
                observer.schedule(handler, str(t), recursive=True)
            observer.start()
            kind = "polling"
        observer.name = "watcher"
        self._observers.append(observer)
        self._observer_kind = kind

    def stop(self, timeout: float = 10.0) -> list[str]:
        """Stop every worker within ``timeout`` seconds; return the names of those that did not finish."""
        self.stop_event.set()
        self._dirty_event.set()
        self._push_wake.set()
        for w in self._pull_wakes.values():
            w.set()
        deadline = time.monotonic() + timeout
        for o in self._observers:
            o.stop()
        if self.control is not None:
            self.control.close()
        stragglers = []
        for t in self._threads + self._observers:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                stragglers.append(t.name)
        if stragglers:
            log.warning("threads still running at shutdown: %s", ", ".join(stragglers))
        if self.engine is not None:
            try:
                self.engine.log.close()
            except Exception:  # noqa: BLE001
                pass
        try:
            self.cfg.paths.agent_state.unlink(missing_ok=True)
        except OSError:
            pass
        if self.cache is not None and not stragglers:
            self.cache.close()
        self._lock.release()
        log.info("agent stopped")
        if self.log_handler is not None:
            logging.getLogger("cxsync").removeHandler(self.log_handler)
            self.log_handler.close()
        return stragglers

    # ---- commands -------------------------------------------------------------------------------------------

    def pause(self) -> None:
        self._paused = True
        self._publish_state()

    def resume(self) -> None:
        self._paused = False
        self._rescan = True
        self._dirty_event.set()
        self.sync_now()

    def sync_now(self) -> None:
        if self._paused:
            return
        self._push_wake.set()
        for w in self._pull_wakes.values():
            w.set()

    def handle_command(self, cmd: str) -> dict[str, Any]:
        if cmd == "pause":
            self.pause()
        elif cmd == "resume":
            self.resume()
        elif cmd == "sync-now":
            self.sync_now()
        elif cmd == "stop":
            return {"ok": True, "status": {**self.snapshot(), "state": "stopping"}, "_then": self.stop_event.set}
        return {"ok": True, "status": self.snapshot()}

    def snapshot(self) -> dict[str, Any]:
        from cxsync.agent import status

        self._publish_state()
        return status.collect(self.cfg)

    # ---- state ----------------------------------------------------------------------------------------------

    def _component(self, name: str) -> Callable[[str, BaseException | None], None]:
        def report(state: str, exc: BaseException | None) -> None:
            if getattr(exc, "needs_auth", False):  # the gateway refused the token (sync/http_log.py)
                state = "needs-auth"
            previous = self._components.get(name)
            if previous != state:
                self._components[name] = state
                if previous == "offline" and state == "ok":
                    self.sync_now()  # the log is back: the other loops need not wait out their backoff
                self._publish_state()
            elif self._compute_state() != self._state:  # e.g. syncing -> idle once a push drained the outbox
                self._publish_state()
        return report

    def _set_error(self, title: str, hint: str) -> None:
        self._error = {"title": title, "hint": hint, "at": utcnow_iso("seconds")}
        self._publish_state()

    def _compute_state(self) -> str:
        if self._paused:
            return "paused"
        comp = set(self._components.values())
        if self._needs_auth or "needs-auth" in comp:
            return "needs-auth"
        if self._error and self._error["title"].startswith(("sync cannot start", "worker ")):
            return "error"
        if "error" in comp:
            return "error"
        if "offline" in comp:
            return "offline"
        if "busy" in comp or self._dirty_event.is_set() or (self.engine is not None and self._push_wake.is_set()):
            return "syncing"
        return "idle"

    def _publish_state(self) -> None:
        # Serialised: two threads publishing at once could otherwise leave the older state in the file.
        with self._publish_lock:
            self._write_state()

    def _write_state(self) -> None:
        state = self._compute_state()
        self._state = state
        ing = getattr(self, "ingestor", None)
        data = {"pid": os.getpid(), "started_at": self._started_at, "state": state, "paused": self._paused,
                "watched": self._watched, "observer": self._observer_kind, "error": self._error,
                "credential_backend": self._credential_backend,
                "roots": [str(r) for r in getattr(ing, "roots", [])],
                "unreadable": [p for p, _ in ing.problems.unreadable] if ing is not None else []}
        path = self.cfg.paths.agent_state
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data), encoding="utf-8")
            secure_file(tmp)
            os.replace(tmp, path)
        except OSError as exc:
            log.debug("cannot write %s: %s", path, exc)

    def _probe_credentials(self) -> None:
        try:
            from cxsync.agent import credentials

            self._credential_backend = credentials.backend_name()
        except Exception as exc:  # noqa: BLE001 - status reports it; capture goes on
            self._credential_backend = f"unavailable ({type(exc).__name__})"
        self._publish_state()

    # ---- workers --------------------------------------------------------------------------------------------

    def _enqueue(self, path: str, is_dir: bool) -> None:
        with self._dirty_lock:
            if is_dir:
                self._rescan = True
            else:
                self._dirty.add(path)
        self._dirty_event.set()

    def _ingest_loop(self) -> None:
        self._full_scan(initial=True)
        while not self.stop_event.is_set():
            # A folder that cannot be read sends no event when it becomes readable: look again now and then.
            woke = self._dirty_event.wait(self.unreadable_rescan if self.ingestor.problems.unreadable else None)
            if self.stop_event.is_set():
                return
            if not woke:
                with self._dirty_lock:
                    self._rescan = True
            if self._paused:
                self._dirty_event.clear()
                self._publish_state()
                continue
            self.stop_event.wait(DEBOUNCE)  # let a burst of writes settle into one read
            self._dirty_event.clear()
            with self._dirty_lock:
                dirty, self._dirty = self._dirty, set()
                rescan, self._rescan = self._rescan, False
            if rescan:
                self._full_scan()
            wrote = False
            for p in sorted(dirty):
                tf = self.ingestor.classify(Path(p))
                if tf is None:
                    continue
                stats = self.ingestor.ingest_file(tf)
                wrote |= bool(stats.messages or stats.records)
            if wrote:
                self._push_wake.set()
            self._publish_state()

    def _full_scan(self, initial: bool = False) -> None:
        locked = {p for p, _ in self.ingestor.problems.unreadable}
        files = self.ingestor.scan()
        # A folder the OS refused to watch while unreadable is watched on its own once it can be read.
        for folder in locked - {p for p, _ in self.ingestor.problems.unreadable}:
            if os.path.isdir(folder):
                for o in self._observers if self._handler is not None else []:
                    try:
                        o.schedule(self._handler, folder, recursive=True)
                    except OSError as exc:
                        log.warning("cannot watch %s: %s", folder, exc.strerror or exc)
        self._watched = len(files)
        if initial:
            self.cache.set_state(import_total=len(files), import_done=0)
        wrote = False
        for i, tf in enumerate(files, 1):
            if self.stop_event.is_set():
                return
            stats = self.ingestor.ingest_file(tf)
            wrote |= bool(stats.messages or stats.records)
            if initial and (i % 20 == 0 or i == len(files)):
                self.cache.set_state(import_done=i)
        # Files we tailed that are gone: stop tailing, keep everything captured.
        present = {str(tf.path) for tf in files}
        for f in self.cache.files():
            if f["status"] == "active" and f["path"] not in present and not os.path.exists(f["path"]):
                self.cache.mark_file_deleted(f["path"])
        if wrote:
            self._push_wake.set()
        self._publish_state()

    def _knowledge_loop(self) -> None:
        """Extraction over what was captured since the last pass: one cheap check when nothing was."""
        from cxsync.agent.extract import run

        ident = app.identity(self.cfg)
        while not self.stop_event.wait(self.knowledge_interval):
            if self._paused:
                continue
            try:
                n = run(self.cache, ident)
                if n:
                    log.info("extracted %d knowledge item(s)", n)
                    self._push_wake.set()
            except Exception:  # noqa: BLE001 - extraction is best effort; capture and sync go on
                log.exception("knowledge extraction failed")

    def _backup_loop(self) -> None:
        from cxsync.cache.backup import run_daily

        run_daily(self.cfg.paths.cache_db, self.cfg.backup_dir, self.cfg.backup.keep, self.stop_event)

    def _clock_loop(self) -> None:
        # The monotonic clock stops while the machine sleeps; the wall clock does not.
        last_wall, last_mono = self.wall_clock(), time.monotonic()
        while not self.stop_event.wait(self.clock_interval):
            wall, mono = self.wall_clock(), time.monotonic()
            if (wall - last_wall) - (mono - last_mono) > SLEEP_JUMP:
                log.info("the machine woke from sleep: rescanning and re-arming sync")
                self.wakeups += 1
                self._enqueue("", True)
                self.sync_now()
            last_wall, last_mono = wall, mono
