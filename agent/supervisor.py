"""The agent process: named worker threads sharing one stop event.

    watcher   watchdog observers on every transcript root; handlers only enqueue paths
    ingest    startup rescan, then ingests dirty files (debounced) — the only thread that reads transcripts
    push      drains the outbox into the event log (woken by ingest, sync-now, resume, timers)
    pull:<s>  one per subscribed stream: pull until caught up, then block in the log's wait
    clock     notices wake-from-sleep (wall clock jumped past the monotonic clock) and re-arms sync
    control   the local control channel

Every wait is on an Event with a timeout; nothing polls while nothing changes.  Crash-only: stopping is a
courtesy — offsets, outbox rows and cursors are committed with the rows they cover.

The loops run under one guard (``cxsync.sync.worker.Worker``): a failure becomes a state, the step runs again
after a backoff, and pause and stop are seen by every loop through one ``Gate``.  ``AgentState`` is the one
owner of the agent's state and its last error, which clears when the worker that raised it recovers.
"""

from __future__ import annotations

import errno
import logging
import logging.handlers
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from cxsync.agent import app
from cxsync.agent.config import Config
from cxsync.agent.lock import AGENT, InstanceLock, holder
from cxsync.agent.paths import Paths, private_rotating_log, secure_file
from cxsync.agent.state import AgentState
from cxsync.agent.status import Status
from cxsync.sync.errors import CxError
from cxsync.sync.worker import Backoff, ErrorKind, Gate, Worker

log = logging.getLogger("cxsync.agent")

DEBOUNCE = 0.05
SLEEP_JUMP = 30.0  # seconds of wall clock beyond the monotonic clock that mean "the machine slept"
CLOCK_INTERVAL = 60.0
UNREADABLE_RESCAN = 10.0  # seconds between rescans while a transcript folder cannot be read (no event says when)


@contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    """Block SIGTERM/SIGINT in this thread while the workers are started: they inherit the mask, so the kernel
    delivers a stop signal to the thread that waits for it.  Delivered to a worker, Python would run the handler
    only when the main thread next woke — `cxsync run` waits in an hour-long Event.wait: a stop that never came.
    A signal that arrives meanwhile is held, and delivered when the mask is restored."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: console events reach the main thread anyway
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


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
        self.gate = Gate(self.stop_event)
        self.state = AgentState(config.paths.agent_state, secure=secure_file)
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
        self._initial_scan = True
        self._handler: Any = None  # the watchdog handler, once the watchers run
        self.workers: dict[str, Worker] = {}
        self.backoff_base = 0.5  # replaceable: tests shorten the recovery of their workers
        self.backoff_cap = 30.0
        self.clock_interval = CLOCK_INTERVAL
        self.unreadable_rescan = UNREADABLE_RESCAN
        self.knowledge_interval = 30.0
        self.wall_clock: Callable[[], float] = time.time  # replaceable: tests simulate a suspend
        self.wakeups = 0
        self._clock_wake = threading.Event()  # only stop sets it: the clock step runs on its interval
        self._knowledge_wake = threading.Event()  # likewise for knowledge extraction
        self._knowledge_first = True
        self._clock_last: tuple[float, float] | None = None
        self.cache: Any = None
        self.engine: Any = None
        self.control: Any = None
        self.log_handler: logging.Handler | None = None

    # ---- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        paths = self.cfg.paths.ensure()
        if not self._lock.acquire():  # waits out a status probe and one-shot commands (see agent.lock)
            raise AlreadyRunning(holder(paths.lock_file) or -1)
        with _stop_signals_blocked():  # every thread started from here on inherits the mask
            self._start(paths)

    def _start(self, paths: Paths) -> None:
        self.state.set_busy_hint(self._work_queued)
        self.state.on_recovered = self._recovered
        self.state.update(target=self.cfg.sync.target)  # status shows the agent's own target, not the caller's
        self.state.update(started_at=time.time(), watched=0, observer="none", credential_backend=None,
                          roots=[], log_replaced=None)
        self.log_handler = setup_file_logging(self.cfg)
        log.info("agent starting (pid %d, machine %s)", os.getpid(), self.cfg.identity.machine)
        self.cache = app.writable_cache(self.cfg)
        self.ingestor = app.ingestor(self.cfg, self.cache)
        self.ingestor.stop = self.stop_event  # stopping never waits for the end of a long file
        self.state.update(roots=[str(r) for r in self.ingestor.roots], unreadable=[])
        self._retry_undecodable()
        self._start_sync()
        from cxsync.agent.control import ControlServer

        self.control = ControlServer(paths, self.handle_command)
        self.control.start()
        # Watch before the start-up scan: a line written between the scan and the watch would wait for the
        # next write.  What the watch reports during the scan is read again, harmlessly (offsets).
        self._start_watchers()
        self._spawn(Worker("ingest", self._ingest_step, gate=self.gate, wake=self._dirty_event,
                           report=self.state.reporter("ingest"), backoff=self._backoff(),
                           on_failure=self._ingest_failed))
        self._spawn(Worker("clock", self._clock_step, gate=self.gate, wake=self._clock_wake, pausable=False,
                           report=self.state.reporter("clock"), backoff=self._backoff()))
        if self.cfg.backup.daily:
            self._spawn_thread("backup", self._backup_loop)
        self._spawn(Worker("knowledge", self._knowledge_step, gate=self.gate, wake=self._knowledge_wake,
                           report=self.state.reporter("knowledge"), backoff=self._backoff()))
        self._spawn_thread("credentials", self._probe_credentials)
        self.state.open()

    def _backoff(self) -> Backoff:
        return Backoff(base=self.backoff_base, cap=self.backoff_cap)

    def _spawn(self, worker: Worker) -> None:
        self.workers[worker.name] = worker
        self._spawn_thread(worker.name, worker.run)

    def _spawn_thread(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def _retry_undecodable(self) -> None:
        """After an upgrade, what an older version kept aside may now decode: try it once at start-up."""
        try:
            r = self.cache.retry_undecodable()
        except Exception:  # noqa: BLE001 - capture must start anyway; rebuild retries too
            log.exception("cannot retry the undecodable events")
            return
        if r["applied"]:
            log.info("applied %d event(s) an earlier version could not read; %d still kept aside",
                     r["applied"], r["kept"])

    def _start_sync(self) -> None:
        if not self.cfg.sync.enabled:
            return
        from cxsync.sync.engine import SyncEngine

        from cxsync.sync.errors import NoCredentials

        try:
            event_log = app.open_log(self.cfg, lazy=True)
        except NoCredentials as exc:
            log.error("sync needs a credential: %s", exc.title)
            self.state.fail("sync", ErrorKind.AUTH, exc.title, exc.hint)
            return
        except Exception as exc:  # noqa: BLE001 - sync failing to start must not stop capture
            hint = getattr(exc, "hint", "") or "check [sync] in the config; capture and search keep working"
            title = getattr(exc, "title", None) or str(exc).split(": install")[0]
            log.error("sync disabled: %s", title)
            self.state.fail("sync", ErrorKind.CONFIG, f"sync cannot start: {title}", hint)
            return
        self.engine = SyncEngine(self.cache, event_log, tenant=self.cfg.identity.tenant,
                                 subscribe=self.cfg.sync.subscribe, batch_events=self.cfg.sync.batch_events,
                                 batch_bytes=self.cfg.sync.batch_bytes,
                                 on_log_changed=lambda info: self.state.update(log_replaced=info))
        self._spawn(self.engine.push_worker(self.gate, self._push_wake, backoff=self._backoff(),
                                            report=self.state.reporter("push")))
        for stream in self.cfg.sync.subscribe:
            wake = self._pull_wakes.setdefault(stream, threading.Event())
            self._spawn(self.engine.pull_worker(stream, self.gate, wake, backoff=self._backoff(),
                                                report=self.state.reporter(f"pull:{stream}")))
        self._push_wake.set()

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
            # A warning that stays true while the agent runs: shown as the last error, not an error state.
            self.state.report("watcher", "ok", None)
            self._watch_warning = ("file watch limit reached: polling instead",
                                   "sudo sysctl fs.inotify.max_user_watches=524288 fs.inotify.max_user_instances=1024")
            self.state.update(warning={"title": self._watch_warning[0], "hint": self._watch_warning[1]})
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
        self.state.update(observer=kind)

    def stop(self, timeout: float = 10.0) -> list[str]:
        """Stop every worker within ``timeout`` seconds; return the names of those that did not finish."""
        self.gate.stop()
        self._dirty_event.set()
        self._clock_wake.set()
        self._knowledge_wake.set()
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
        self.state.ready = False  # a straggler's report must not bring the snapshot back
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
        """Capture, push and pull all stop at their next step; a pull blocked in the log's wait is woken."""
        self.gate.pause()
        self.state.set_paused(True)
        for w in self._pull_wakes.values():
            w.set()

    def resume(self) -> None:
        self.gate.resume()
        self.state.set_paused(False)
        with self._dirty_lock:
            self._rescan = True
        self._dirty_event.set()
        self.sync_now()

    @property
    def paused(self) -> bool:
        return self.gate.paused

    def sync_now(self) -> None:
        if self.gate.paused:
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

    def snapshot(self) -> Status:
        from cxsync.agent import status

        self.state.publish()
        return status.collect(self.cfg)

    # ---- state ----------------------------------------------------------------------------------------------

    def _recovered(self, component: str, previous: Any) -> None:
        if previous.state == "offline":
            self.sync_now()  # the log is back: the other loops need not wait out their backoff

    def _work_queued(self) -> bool:
        return self._dirty_event.is_set() or (self.engine is not None and self._push_wake.is_set())

    def _probe_credentials(self) -> None:
        try:
            from cxsync.agent import credentials

            backend = credentials.backend_name()
        except Exception as exc:  # noqa: BLE001 - status reports it; capture goes on
            backend = f"unavailable ({type(exc).__name__})"
        self.state.update(credential_backend=backend)

    # ---- workers --------------------------------------------------------------------------------------------

    def _enqueue(self, path: str, is_dir: bool) -> None:
        with self._dirty_lock:
            if is_dir:
                self._rescan = True
            else:
                self._dirty.add(path)
        self._dirty_event.set()

    def _ingest_step(self) -> float | None:
        """One round of capture (the worker guard runs it when ``_dirty_event`` is set, and again after a
        failure): the start-up scan first, then the files that changed."""
        # A folder that cannot be read sends no event when it becomes readable: look again now and then.
        again = self.unreadable_rescan if self.ingestor.problems.unreadable else None
        if self._initial_scan:
            self._full_scan(initial=True)
            self._initial_scan = False
            return self.unreadable_rescan if self.ingestor.problems.unreadable else None
        woken = self._dirty_event.is_set()
        self.stop_event.wait(DEBOUNCE)  # let a burst of writes settle into one read
        self._dirty_event.clear()
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
            rescan, self._rescan = self._rescan or (again is not None and not woken), False
        try:
            if rescan:
                self._full_scan()
            wrote = False
            for p in sorted(dirty):
                if self.gate.stopped:
                    break
                tf = self.ingestor.classify(Path(p))
                if tf is None:
                    continue
                stats = self.ingestor.ingest_file(tf)
                wrote |= bool(stats.messages or stats.records)
        except BaseException:
            with self._dirty_lock:  # nothing taken is lost: the retry reads these files again
                self._dirty |= dirty
                self._rescan |= rescan
            raise
        if wrote:
            self._push_wake.set()
        self.state.publish()
        return self.unreadable_rescan if self.ingestor.problems.unreadable else None

    def _ingest_failed(self, exc: BaseException) -> None:
        # Offsets are committed with the rows they cover: a full rescan after a failure re-reads only what is new.
        with self._dirty_lock:
            self._rescan = True

    def _full_scan(self, initial: bool = False) -> None:
        locked = {p for p, _ in self.ingestor.problems.unreadable}
        files = self.ingestor.scan()
        # A folder the OS refused to watch while unreadable is watched on its own once it can be read.
        for folder in locked - {p for p, _ in self.ingestor.problems.unreadable}:
            if os.path.isdir(folder) and self._handler is not None:
                for o in self._observers:
                    try:
                        o.schedule(self._handler, folder, recursive=True)
                    except OSError as exc:
                        log.warning("cannot watch %s: %s", folder, exc.strerror or exc)
        self.state.update(watched=len(files), unreadable=[p for p, _ in self.ingestor.problems.unreadable])
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
        self.state.publish()

    def _knowledge_step(self) -> float:
        """Extraction over what was captured since the last pass: one cheap check when nothing was."""
        from cxsync.agent.extract import run

        if self._knowledge_first:  # the first pass waits an interval: the start-up scan comes first
            self._knowledge_first = False
            return self.knowledge_interval
        try:
            n = run(self.cache, app.identity(self.cfg))
            if n:
                log.info("extracted %d knowledge item(s)", n)
                self._push_wake.set()
        except Exception:  # noqa: BLE001 - extraction is best effort; capture and sync go on
            log.exception("knowledge extraction failed")
        return self.knowledge_interval

    def _backup_loop(self) -> None:
        from cxsync.cache.backup import run_daily

        run_daily(self.cfg.paths.cache_db, self.cfg.backup_dir, self.cfg.backup.keep, self.stop_event)

    def _clock_step(self) -> float:
        # The monotonic clock stops while the machine sleeps; the wall clock does not.
        wall, mono = self.wall_clock(), time.monotonic()
        if self._clock_last is not None:
            last_wall, last_mono = self._clock_last
            if (wall - last_wall) - (mono - last_mono) > SLEEP_JUMP:
                log.info("the machine woke from sleep: rescanning and re-arming sync")
                self.wakeups += 1
                self._enqueue("", True)
                self.sync_now()
        self._clock_last = (wall, mono)
        return self.clock_interval
