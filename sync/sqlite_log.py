"""The embedded EventLog: one SQLite file shared by the processes of one machine.

WAL needs shared memory between its users, so every process that opens the file must run on the same host; a
file on a network share works for one machine at a time (and an unreachable share is a transient error).

Same semantics as the FoundationDB adapter, so the sync engine and the contract suite cannot tell them apart:

* **Cursors** are 12 bytes: an 8-byte big-endian commit version, 2 bytes of batch order (always 0 here: SQLite
  commits one transaction at a time) and a 2-byte big-endian user version, the event's position in its batch.
  The commit version is a single counter row bumped inside the ``BEGIN IMMEDIATE`` write transaction, so it is
  strictly increasing in commit order across every process: a reader's snapshot holds every version up to the
  highest it sees, and no later commit can land behind it.  The counter also moves to at least the current time
  in microseconds (like FoundationDB's ~1M versions/s), so a log that is deleted and recreated keeps handing out
  cursors above the ones its readers still hold.
* **Idempotency**: ``(tenant, stream, event_id)`` is unique; an append looks every id up in the same write
  transaction, so a replay (or a duplicate inside one batch) returns the original cursor and writes nothing.
  A batch of nothing but replays does not even bump the clock.
* **Tenant isolation**: the tenant is the first column of every key and of every query's ``WHERE``; events of
  another tenant are refused before anything is written.

Durability: WAL with ``synchronous=FULL``.  ``NORMAL`` would be faster, but the sync engine marks outbox rows
acked once ``append`` returns, so a commit lost to a power cut would lose events for good.

``wait`` — how a reader learns of a commit made by another process without polling tightly: after every commit
that wrote something, the writer rewrites a sidecar file ``<log>-head`` (8 bytes, the commit version: a content
change is the one kind of change every platform's notification reports).  A process-wide watchdog observer
(inotify on Linux, FSEvents on macOS, ReadDirectoryChangesW on Windows) watches the log's *directory* (so that a
sidecar deleted and recreated is still seen) and bumps a generation counter that waiting threads block on.
Watching the ``-wal`` file instead does not work: SQLite writes the frames there *before* it publishes the commit
in the shared-memory index, so a waiter woken by that write can look too early, see nothing, and sleep through
the commit.  Waiters never trust a wake-up either way: they re-run a cheap indexed "anything after my cursor?"
query.  A commit in the same process pokes its waiters directly, without the file-system round trip.

As a safety net for missed notifications a waiter re-checks every ``recheck_interval`` (1 s); where no
notification is available (``notify=False``, watch limits exhausted, a platform where watchdog would poll) it
re-checks every 50 ms — a bounded wait on a condition, never a spin.  The observer starts with the first wait that
has to block and stops when the last log of the process that waited is closed.

Several threads may share one ``SqliteEventLog`` (one connection behind a lock); each process opens its own.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterator, Sequence, cast

import apsw
import apsw.bestpractice

from cxsync.sync.events import CodecError, ContextEvent, decode, encode
from cxsync.sync.port import (
    LogEntry,
    undecodable,
    LogError,
    PermanentLogError,
    TransientLogError,
    check_cursor,
    check_read,
    validate_name,
    validate_stream,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
APPLICATION_ID = 0x63785367  # "cxSg": marks the file as a cxsync event log
MAX_BATCH = 1 << 16  # the user version is 2 bytes
DEFAULT_BUSY_TIMEOUT_MS = 5_000
DEFAULT_RECHECK_WITH_NOTIFY = 1.0
DEFAULT_RECHECK_WITHOUT_NOTIFY = 0.05

_CURSOR = struct.Struct(">QHH")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clock(
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT OR IGNORE INTO clock(id, version) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS events(
    seq INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    stream TEXT NOT NULL,
    cursor BLOB NOT NULL,
    event_id TEXT NOT NULL,
    payload BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_cursor ON events(tenant, stream, cursor);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_id ON events(tenant, stream, event_id);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta(key, value) VALUES ('log_id', lower(hex(randomblob(16))));
"""

# Failures that say "not now" rather than "never": another writer holds the lock, the disk or the share is
# gone for a moment, the file cannot be opened yet.
_TRANSIENT = (
    apsw.BusyError,
    apsw.LockedError,
    apsw.IOError,
    apsw.CantOpenError,
    apsw.FullError,
    apsw.ReadOnlyError,
    apsw.ProtocolError,
    apsw.InterruptError,
)
_PERMANENT = (apsw.CorruptError, apsw.NotADBError)


class SqliteEventLog:
    """An EventLog on a SQLite file (see the module docstring for the guarantees and the wake-up mechanism)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        tenant: str,
        *,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        notify: bool = True,
        recheck_interval: float | None = None,
    ) -> None:
        self.tenant = validate_name("tenant", tenant)
        self.path = Path(os.path.abspath(os.fspath(path)))
        self._busy_timeout_ms = busy_timeout_ms
        self._notify = notify
        self._recheck_interval = recheck_interval
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._closed = False
        self._signal = _Signal()
        self._subscribed = False
        self._head_file = Path(f"{self.path}-head")
        self._watch_dir, self._watch_files = _watch_target(self._head_file)
        self._conn: apsw.Connection | None = None
        self._file_id: tuple[int, int] | None = None
        self._identity: str | None = None
        with self._lock:
            self._connection()  # fail early with a clear message; later failures reconnect lazily

    def __repr__(self) -> str:
        return f"SqliteEventLog({str(self.path)!r}, tenant={self.tenant!r})"

    def __enter__(self) -> SqliteEventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the port ---------------------------------------------------------------------------------------

    def append(self, stream: str, events: Sequence[ContextEvent]) -> list[bytes]:
        validate_stream(stream)
        events = list(events)
        if not events:
            return []
        foreign = [e.event_id for e in events if e.tenant != self.tenant]
        if foreign:
            raise PermanentLogError(
                f"events of another tenant cannot be appended to tenant {self.tenant!r}'s log: {', '.join(foreign)}",
                foreign,
            )
        if len(events) > MAX_BATCH:
            raise PermanentLogError(
                f"a batch holds at most {MAX_BATCH} events, got {len(events)}: split it",
                [e.event_id for e in events[MAX_BATCH:]],
            )
        payloads = [encode(e) for e in events]  # compress outside the write lock
        with self._lock, self._sqlite("append to"):
            conn = self._connection()
            with _immediate(conn):
                cursors, version = self._append_locked(conn, stream, events, payloads)
        if version is not None:
            self._touch_head(version)
            _NOTIFIER.poke(self._watch_dir, self._watch_files)
        return cursors

    def read(self, stream: str, after: bytes | None, limit: int = 1000) -> list[LogEntry]:
        after = check_read(stream, after, limit)
        with self._lock, self._sqlite("read from"):
            rows = self._connection().execute(
                "SELECT cursor, event_id, payload FROM events WHERE tenant = ? AND stream = ? AND cursor > ?"
                " ORDER BY cursor LIMIT ?",
                (self.tenant, stream, after or b"", limit),
            ).fetchall()
        return [self._entry(stream, bytes(cast(bytes, c)), str(i), bytes(cast(bytes, p))) for c, i, p in rows]

    def wait(self, stream: str, after: bytes | None, timeout: float) -> bool:
        validate_stream(stream)
        after = check_cursor(after)
        deadline = time.monotonic() + max(0.0, timeout)
        if self._has_newer(stream, after):
            return True
        if timeout <= 0:
            return False
        notified = self._subscribe()
        interval = self._recheck_interval or (
            DEFAULT_RECHECK_WITH_NOTIFY if notified else DEFAULT_RECHECK_WITHOUT_NOTIFY
        )
        while True:
            # Take the generation *before* looking: a commit between the look and the wait still wakes us.
            generation = self._signal.generation()
            try:
                if self._has_newer(stream, after):
                    return True
            except PermanentLogError:
                if self._closed:
                    return False  # close() wakes waiters so that worker threads can stop
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._signal.wait_past(generation, min(remaining, interval))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                with suppress(apsw.Error):  # a courtesy; the next opener can do it
                    conn.pragma("optimize")
                conn.close()
        if self._subscribed:
            _NOTIFIER.unsubscribe(self._watch_dir, self._signal)
        self._signal.bump()

    # ---- internals --------------------------------------------------------------------------------------

    def _append_locked(
        self, conn: apsw.Connection, stream: str, events: list[ContextEvent], payloads: list[bytes]
    ) -> tuple[list[bytes], int | None]:
        """Cursors for ``events`` and the commit version if anything was written (the caller holds the write
        transaction)."""
        first_at: dict[str, int] = {}  # event_id -> position of its first occurrence in this batch
        for i, event in enumerate(events):
            first_at.setdefault(event.event_id, i)
        cursor_of: dict[str, bytes] = {}
        new: list[int] = []
        version = 0
        for event_id, i in first_at.items():
            row = conn.execute(
                "SELECT cursor FROM events WHERE tenant = ? AND stream = ? AND event_id = ?",
                (self.tenant, stream, event_id),
            ).fetchone()
            if row is None:
                new.append(i)
            else:
                cursor_of[event_id] = bytes(cast(bytes, row[0]))
        if new:
            clock = conn.execute(
                "UPDATE clock SET version = max(version + 1, ?) WHERE id = 1 RETURNING version",
                (time.time_ns() // 1000,),
            ).fetchone()
            if clock is None:  # created with the schema and never deleted: the file was tampered with
                raise PermanentLogError(f"{self.path} has lost its clock row: not a sound cxsync event log")
            version = int(cast(int, clock[0]))
            for i in new:
                cursor_of[events[i].event_id] = _CURSOR.pack(version, 0, i)
            conn.executemany(
                "INSERT INTO events(tenant, stream, cursor, event_id, payload) VALUES (?, ?, ?, ?, ?)",
                [(self.tenant, stream, cursor_of[events[i].event_id], events[i].event_id, payloads[i]) for i in new],
            )
        return [cursor_of[e.event_id] for e in events], version if new else None

    def _touch_head(self, version: int) -> None:
        """Tell waiting processes that a commit is visible (after COMMIT: earlier they could look too soon)."""
        try:
            fd = os.open(self._head_file, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.write(fd, version.to_bytes(8, "big"))
            finally:
                os.close(fd)
        except OSError as exc:  # waiters elsewhere fall back to their periodic re-check
            log.debug("cannot write %s: %s", self._head_file, exc)

    def _has_newer(self, stream: str, after: bytes | None) -> bool:
        with self._lock, self._sqlite("read from"):
            row = self._connection().execute(
                "SELECT 1 FROM events WHERE tenant = ? AND stream = ? AND cursor > ? LIMIT 1",
                (self.tenant, stream, after or b""),
            ).fetchone()
        return row is not None

    def _entry(self, stream: str, cursor: bytes, event_id: str, payload: bytes) -> LogEntry:
        """Decode one stored event; what cannot be decoded is handed on as such, never failing the page."""
        try:
            event = decode(payload)
        except CodecError as exc:
            return undecodable(cursor, event_id, payload, f"cannot decode event {event_id} at cursor"
                               f" {cursor.hex()} in stream {stream!r} of {self.path}: {exc}")
        if event.tenant != self.tenant:  # cannot happen through append; a hand-edited or damaged file
            return undecodable(cursor, event_id, payload, f"event {event_id} at cursor {cursor.hex()} in"
                               f" {self.path} belongs to tenant {event.tenant!r}, not {self.tenant!r}")
        return LogEntry(cursor, event, payload)

    def identity(self) -> str:
        """The id written when this log file was created (see ``_connection``: a replaced file is noticed)."""
        with self._lock, self._sqlite("read from"):
            self._connection()
            assert self._identity is not None
            return self._identity

    def _subscribe(self) -> bool:
        if not self._notify:
            return False
        with self._lock:
            if not self._subscribed and not self._closed:
                self._subscribed = _NOTIFIER.subscribe(self._watch_dir, self._watch_files, self._signal)
                self._notify = self._subscribed  # do not try (and fail) again on every wait
            return self._subscribed

    def _connection(self) -> apsw.Connection:
        """The open connection, (re)opened on demand: a share that went away may come back."""
        if self._closed:
            raise PermanentLogError(f"{self!r} is closed")
        if self._pid != os.getpid():
            raise PermanentLogError(f"{self!r} was opened in another process (fork): open a new log in this one")
        if self._conn is not None and self._file_id != _file_id(self.path):
            # The file was deleted or replaced under us: an open handle would go on writing into an unlinked
            # inode that nobody reads.  Reopen (creating a new log, with a new identity, if it is gone).
            log.warning("%s was deleted or replaced; reopening it", self.path)
            self._drop_connection()
        if self._conn is None:
            self._conn = self._open()
            self._file_id = _file_id(self.path)
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with suppress(apsw.Error):
                conn.close()

    def _open(self) -> apsw.Connection:
        parent = self.path.parent
        if not parent.is_dir():
            what = "is not a directory" if parent.exists() else "does not exist"
            raise TransientLogError(
                f"cannot open the sqlite event log {self.path}: its folder {parent} {what}"
                " (an unmounted share? create the folder or fix sync.target)"
            )
        try:
            # Created 0600 before SQLite opens it: SQLite gives -wal and -shm the database file's mode.
            if not self.path.exists():
                with suppress(FileExistsError):
                    os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            conn = apsw.Connection(str(self.path), flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
        except apsw.NotADBError as exc:
            # Raised here rather than on first use when apsw.bestpractice hooks run at connect time.
            raise PermanentLogError(f"{self.path} is not a database (not a cxsync event log): {exc}") from exc
        except (apsw.Error, OSError) as exc:
            raise TransientLogError(f"cannot open the sqlite event log {self.path}: {exc}") from exc
        try:
            self._configure(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _configure(self, conn: apsw.Connection) -> None:
        # Per connection rather than apsw.bestpractice.apply(): that is process-wide and belongs to the agent.
        with self._sqlite("open"):
            conn.set_busy_timeout(self._busy_timeout_ms)
            apsw.bestpractice.connection_dqs(conn)
            ready = self._is_current_log(conn)  # read only, before anything writes to a file that may not be ours
            mode = conn.pragma("journal_mode", "wal")
            if str(mode).lower() != "wal":
                log.warning("%s: WAL is not available here (journal_mode=%s); sharing is slower", self.path, mode)
            conn.pragma("synchronous", "FULL")
            conn.pragma("journal_size_limit", 64 << 20)
            if not ready:
                with _immediate(conn):  # two processes creating the schema at once: one does it, one waits
                    if not self._is_current_log(conn):
                        conn.execute(_SCHEMA)
                        conn.pragma("application_id", APPLICATION_ID)
                        conn.pragma("user_version", SCHEMA_VERSION)
            self._identity = self._read_identity(conn)
            apsw.bestpractice.connection_optimize(conn)

    @staticmethod
    def _read_identity(conn: apsw.Connection) -> str:
        """The log's identity, created with it (logs from before identities get theirs on first connect)."""
        def read() -> str | None:
            if conn.execute("SELECT 1 FROM sqlite_schema WHERE type='table' AND name='meta'").fetchone() is None:
                return None
            row = conn.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
            return str(row[0]) if row else None

        ident = read()
        if ident is None:
            with _immediate(conn):
                conn.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('log_id', ?)", (uuid.uuid4().hex,))
            ident = read()
        assert ident is not None
        return ident

    def _is_current_log(self, conn: apsw.Connection) -> bool:
        """True for a log of this schema, False for a new (empty) file; refuse anything else."""
        app_id = conn.pragma("application_id")
        version = conn.pragma("user_version")
        if app_id == APPLICATION_ID:
            if version > SCHEMA_VERSION:
                raise PermanentLogError(
                    f"{self.path} was written by a newer cxsync (log schema {version}, this one knows"
                    f" {SCHEMA_VERSION})"
                )
            return bool(version == SCHEMA_VERSION)
        if app_id != 0:
            raise PermanentLogError(f"{self.path} is another application's SQLite database, not a cxsync event log")
        tables = sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'"))
        if tables:
            raise PermanentLogError(
                f"{self.path} is another SQLite database (tables {', '.join(tables)}), not a cxsync event log:"
                " point sync.target at a file of its own"
            )
        return False

    @contextmanager
    def _sqlite(self, action: str) -> Iterator[None]:
        """Translate SQLite failures into the port's errors (callers hold ``self._lock``)."""
        try:
            yield
        except LogError:
            raise
        except _PERMANENT as exc:
            raise PermanentLogError(f"cannot {action} the sqlite event log {self.path}: {exc}") from exc
        except apsw.ConnectionClosedError as exc:
            raise PermanentLogError(f"{self!r} is closed") from exc
        except apsw.Error as exc:
            if isinstance(exc, (apsw.IOError, apsw.CantOpenError, apsw.ReadOnlyError, apsw.FullError)):
                # The file may have gone with its share, or the handle was opened while the file was read-only
                # (SQLite then stays read-only for good): reopen on the next call instead of reusing it.
                self._drop_connection()
            if isinstance(exc, (apsw.BusyError, apsw.LockedError)):
                kind = "busy"
            elif isinstance(exc, _TRANSIENT):
                kind = "unavailable"
            else:  # not known to be transient, but retrying beats dropping the outbox: the engine backs off
                kind = "failed"
            raise TransientLogError(f"cannot {action} the sqlite event log {self.path} ({kind}): {exc}") from exc


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


@contextmanager
def _immediate(conn: apsw.Connection) -> Iterator[None]:
    """A write transaction that takes the write lock up front: no deadlock-prone read-to-write upgrade."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if not conn.getautocommit():
            with suppress(apsw.Error):  # keep the original error; a broken connection rolls back anyway
                conn.execute("ROLLBACK")
        raise


# ---- change notification ----------------------------------------------------------------------------------


class _Signal:
    """A generation counter: ``bump`` wakes every thread waiting for the generation to move on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    def generation(self) -> int:
        with self._cond:
            return self._generation

    def bump(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait_past(self, generation: int, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._generation != generation, timeout)


def _watch_target(head_file: Path) -> tuple[str, frozenset[str]]:
    """The directory to watch and the files in it whose change means "a commit happened"."""
    real = os.path.realpath(head_file)  # watchdog reports paths under the resolved directory
    return os.path.dirname(real), frozenset({real})


class _DirHandler:
    """Fans the file events of one watched directory out to the signals of the logs that live in it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[_Signal, frozenset[str]] = {}

    def add(self, files: frozenset[str], signal: _Signal) -> None:
        with self._lock:
            self._subs[signal] = files

    def remove(self, signal: _Signal) -> bool:
        """Forget ``signal``; True when nobody is left."""
        with self._lock:
            self._subs.pop(signal, None)
            return not self._subs

    def fire(self, paths: set[str]) -> None:
        with self._lock:
            targets = [sig for sig, files in self._subs.items() if files & paths]
        for sig in targets:
            sig.bump()

    # the watchdog handler interface (duck-typed: dispatch is all the observer calls)
    def dispatch(self, event: Any) -> None:
        paths = {os.fsdecode(event.src_path)}
        if getattr(event, "dest_path", ""):
            paths.add(os.fsdecode(event.dest_path))
        self.fire(paths)


class _Notifier:
    """Process-wide: one watchdog observer, one watch per directory holding a waited-on log."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._observer: Any = None
        self._dirs: dict[str, tuple[Any, _DirHandler]] = {}
        self._warned: set[str] = set()

    def subscribe(self, directory: str, files: frozenset[str], signal: _Signal) -> bool:
        """Route changes of ``files`` to ``signal``; False when this platform or directory cannot be watched."""
        with self._lock:
            self._forget_parent_process()
            entry = self._dirs.get(directory)
            if entry is None:
                try:
                    entry = self._watch(directory)
                except Exception as exc:  # watch limits, missing inotify, …: fall back to re-checking
                    if directory not in self._warned:
                        self._warned.add(directory)
                        log.warning("cannot watch %s for commits (%s); waiters will re-check every %.0f ms",
                                    directory, exc, DEFAULT_RECHECK_WITHOUT_NOTIFY * 1000)
                    self._stop_if_idle()
                    return False
                self._dirs[directory] = entry
            entry[1].add(files, signal)
            return True

    def unsubscribe(self, directory: str, signal: _Signal) -> None:
        with self._lock:
            self._forget_parent_process()
            entry = self._dirs.get(directory)
            if entry is None or not entry[1].remove(signal):
                return
            del self._dirs[directory]
            try:
                self._observer.unschedule(entry[0])
            except Exception:  # the directory may be gone; the watch with it
                log.debug("unschedule %s failed", directory, exc_info=True)
            self._stop_if_idle()

    def poke(self, directory: str, files: frozenset[str]) -> None:
        """A commit in this process: wake its waiters without waiting for the file system."""
        with self._lock:
            entry = self._dirs.get(directory) if self._pid == os.getpid() else None
        if entry is not None:
            entry[1].fire(set(files))

    def active(self) -> bool:
        with self._lock:
            return self._observer is not None and self._pid == os.getpid()

    def _watch(self, directory: str) -> tuple[Any, _DirHandler]:
        from watchdog.events import FileCreatedEvent, FileModifiedEvent, FileMovedEvent
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        if self._observer is None:
            observer = Observer()
            if isinstance(observer, PollingObserver):
                raise OSError("no native file notification on this platform")
            observer.name = "cxsync-log-watch"
            observer.daemon = True
            observer.start()
            self._observer = observer
        handler = _DirHandler()
        # Only writes and creations: readers open and read the files all the time and must not wake anyone.
        watch = self._observer.schedule(
            handler, directory, event_filter=[FileModifiedEvent, FileCreatedEvent, FileMovedEvent]
        )
        return watch, handler

    def _stop_if_idle(self) -> None:
        if self._dirs or self._observer is None:
            return
        observer, self._observer = self._observer, None
        observer.stop()
        observer.join(timeout=5)
        if observer.is_alive():
            log.warning("the log watch thread did not stop within 5 s")

    def _forget_parent_process(self) -> None:
        # After fork the observer's threads did not come along; start afresh in the child.
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._observer = None
            self._dirs.clear()


_NOTIFIER = _Notifier()
