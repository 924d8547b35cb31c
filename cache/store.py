"""The Cache object: one writer connection, the apply transaction, and the bookkeeping tables around it
(file offsets, outbox, stream cursors, sync state)."""

from __future__ import annotations

import functools
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Concatenate, Iterable, Iterator, Mapping, ParamSpec, Sequence, TypeVar

import apsw
import orjson

from cxsync.cache.apply import ApplyResult, Router, apply_in_tx, apply_pulled_in_tx, retry_undecodable_in_tx
from cxsync.cache.db import connect, now_iso, require_schema, scalar
from cxsync.cache import compress, fts
from cxsync.cache import search as _search
from cxsync.sync import events as ev
from cxsync.sync.port import LogEntry

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _locked(fn: Callable[Concatenate["Cache", _P], _R]) -> Callable[Concatenate["Cache", _P], _R]:
    """Serialise a read on the shared writer connection with the writes of other threads: on one connection a
    read issued while another thread is inside a transaction would see that transaction's uncommitted rows.
    The signature is kept (ParamSpec), so callers stay type-checked."""

    @functools.wraps(fn)
    def wrapper(self: Cache, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock:
            return fn(self, *args, **kwargs)

    return wrapper


FILE_COLS = ("path", "kind", "session_id", "inode", "dev", "offset", "line_no", "head_len", "head_hash", "size",
             "mtime")


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    stream: str
    event_id: str
    payload: bytes
    attempts: int


class Cache(_search.Queries):
    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False, route: Router | None = None,
                 transform: Callable[[ev.ContextEvent], ev.ContextEvent] | None = None):
        self.path = Path(path)
        self.readonly = readonly
        self.conn = connect(self.path, readonly=readonly)
        if readonly:
            try:
                require_schema(self.conn, self.path)
            except BaseException:
                self.conn.close()
                raise
        self.route = route
        self.transform = transform  # applied to local events before they are stored (e.g. redaction)
        self._lock = threading.RLock()  # one writer connection, shared by the agent's threads
        self._flat = False  # inside transaction(flat=True): nested writes open no savepoint
        self._train_at: int | None = compress.MIN_EVENTS  # the stored events from which a dictionary is (next) tried

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _write(self) -> Iterator[None]:
        """A write transaction that takes the write lock up front (BEGIN IMMEDIATE), so the busy timeout applies:
        a deferred one that read first and then met another writer fails at once with BusyError."""
        with self._lock:
            if not self.conn.getautocommit():  # already inside one (a caller's transaction): nest
                if self._flat:
                    yield
                    return
                with self.conn:
                    yield
                return
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                if not self.conn.getautocommit():
                    self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def __enter__(self) -> "Cache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- apply ----------------------------------------------------------------------------------------------

    def apply(self, events: Iterable[ev.ContextEvent], origin: str = "local", *,
              files: Sequence[Mapping[str, Any]] = (), cursor: tuple[str, bytes] | None = None,
              payloads: Mapping[str, bytes] | None = None, idents: Mapping[str, str] | None = None,
              transformed: bool = False) -> ApplyResult:
        """Apply events, file offsets and a stream cursor in ONE transaction: all of it lands or none.

        ``payloads`` and ``idents``: what a backfill's reader process already made of some events (their sealed
        bytes, the identifier parts of their text); ``transformed``: the events went through this cache's
        ``transform`` already, there (their payloads hold what the light events that come with them do not).
        Otherwise an event the transform changes is made afresh."""
        if origin == "local" and self.transform is not None and not transformed:
            changed: set[str] = set()
            out = []
            for e in events:
                t = self.transform(e)
                if t is not e:
                    changed.add(e.event_id)
                out.append(t)
            events = out
            if changed:
                payloads = {k: v for k, v in (payloads or {}).items() if k not in changed}
                idents = {k: v for k, v in (idents or {}).items() if k not in changed}
        with self._write():
            if origin == "local":
                self._train_dictionary()
            res = apply_in_tx(self.conn, events, origin, self.route if origin == "local" else None, payloads,
                              idents)
            for f in files:
                self._save_file(f)
            if cursor is not None:
                self.conn.execute(
                    "INSERT INTO cursors(stream, cursor, updated_at) VALUES (?,?,?) ON CONFLICT(stream) DO UPDATE"
                    " SET cursor=excluded.cursor, updated_at=excluded.updated_at", (cursor[0], cursor[1], now_iso()))
        return res

    def _train_dictionary(self) -> None:
        """The cache's first compression dictionary, once it holds enough events to learn from (cache/compress)."""
        if self._train_at is None:
            return
        stored = scalar(self.conn, "SELECT coalesce(max(seq), 0) FROM events")
        if stored < self._train_at:
            return
        if compress.maybe_train(self.conn) is None:
            self._train_at = stored + compress.MIN_EVENTS  # nothing to learn from yet: try again later
        else:
            self._train_at = None

    def dictionary(self) -> int | None:
        """The id of the dictionary local events are sealed with now (None before the first)."""
        return compress.active(self.conn)

    def apply_pulled(self, stream: str, entries: Sequence[LogEntry], *, log_id: str | None = None,
                     caught_up: bool = True, behind: int = 0) -> ApplyResult | None:
        """Apply one page read from ``stream``, its cursor and the stream's pull state in ONE transaction.

        Entries that cannot be decoded or materialised are kept in ``undecodable`` and skipped; the rest are
        applied with their payloads exactly as read.  ``log_id`` is the identity of the log the page came from:
        if the cache has meanwhile moved to another log (``relink_log``), the page is dropped (None), so that a
        cursor of the old log never lands on the new one.
        """
        now = now_iso()
        with self._write():
            if log_id is not None and self._state("log_id") not in (None, log_id):
                return None
            res = apply_pulled_in_tx(self.conn, stream, entries) if entries else ApplyResult()
            cursor = entries[-1].cursor if entries else None
            self.conn.execute(
                "INSERT INTO cursors(stream, cursor, updated_at, last_pull, caught_up_at, behind)"
                " VALUES (:s, :c, :now, :now, :cu, :behind) ON CONFLICT(stream) DO UPDATE SET"
                " cursor = coalesce(:c, cursor), updated_at = CASE WHEN :c IS NULL THEN updated_at ELSE :now END,"
                " last_pull = :now, caught_up_at = coalesce(:cu, caught_up_at), behind = :behind",
                {"s": stream, "c": cursor, "now": now, "cu": now if caught_up else None,
                 "behind": 0 if caught_up else behind})
            self._set_state_in_tx(last_pull=now)
        return res

    def retry_undecodable(self) -> dict[str, int]:
        """Try the kept undecodable events again (after an upgrade): what now decodes and applies leaves the
        table, the rest stays with its new error."""
        with self._write():
            result = retry_undecodable_in_tx(self.conn)
        return result

    @_locked
    def undecodable(self, limit: int = 20) -> list[dict[str, Any]]:
        return [{"stream": s, "cursor": bytes(c).hex(), "event_id": e, "error": err, "received_at": at}
                for s, c, e, err, at in self.conn.execute(
                    "SELECT stream, cursor, event_id, error, received_at FROM undecodable ORDER BY received_at,"
                    " stream, cursor LIMIT ?", (limit,))]

    def relink_log(self, log_id: str) -> dict[str, Any]:
        """The log this cache syncs with is now ``log_id``.  When it was another one before (the log was
        deleted, replaced or retargeted), everything acked to the old log is queued again — the new log's
        idempotency drops what it already holds — and every stream is read again from its start."""
        with self._write():
            previous = self._state("log_id")
            requeued = 0
            if previous == log_id:
                return {"changed": False, "previous": previous, "requeued": 0}
            if previous is not None:
                self.conn.execute("UPDATE outbox SET state='pending', cursor=NULL, acked_at=NULL"
                                  " WHERE state='acked'")
                requeued = self.conn.changes()
                self.conn.execute("UPDATE cursors SET cursor=NULL, caught_up_at=NULL, behind=0")
            self._set_state_in_tx(log_id=log_id)
        return {"changed": previous is not None, "previous": previous, "requeued": requeued}

    @_locked
    def stream_states(self) -> dict[str, dict[str, Any]]:
        return {s: {"cursor": bytes(c).hex() if c else None, "last_pull": lp, "caught_up_at": cu,
                    "behind": int(b or 0)}
                for s, c, lp, cu, b in self.conn.execute(
                    "SELECT stream, cursor, last_pull, caught_up_at, behind FROM cursors ORDER BY stream")}

    @contextmanager
    def transaction(self, *, flat: bool = False) -> Iterator[apsw.Connection]:
        """The writer connection inside one transaction, serialised with the other threads' writes: for the
        cache's derived, local-only tables (what ``apply`` does not own), or around several writes (a backfill's
        batches: each nests inside it, in a savepoint of its own).

        ``flat``: the writes inside open no savepoints, and one that fails fails the whole transaction. A backfill
        wants that: for a savepoint SQLite copies every page the writes inside change into a sub-journal, to undo
        them alone, and FTS5 writes its pending terms out as a new segment whenever one is released."""
        with self._write():
            was, self._flat = self._flat, flat
            try:
                yield self.conn
            finally:
                self._flat = was

    def _save_file(self, f: Mapping[str, Any]) -> None:
        row = {c: f.get(c) for c in FILE_COLS}
        row["malformed"] = int(f.get("malformed_add") or 0)
        row["status"] = f.get("status", "active")
        row["updated_at"] = now_iso()
        self.conn.execute(
            f"INSERT INTO files({', '.join(FILE_COLS)}, malformed, status, updated_at) VALUES"
            f" ({', '.join(':' + c for c in FILE_COLS)}, :malformed, :status, :updated_at)"
            " ON CONFLICT(path) DO UPDATE SET " + ", ".join(f"{c}=excluded.{c}" for c in FILE_COLS[1:])
            + ", malformed = files.malformed + excluded.malformed, status=excluded.status,"
            " updated_at=excluded.updated_at", row)

    # ---- ingest support -------------------------------------------------------------------------------------

    @_locked
    def file_state(self, path: str) -> dict[str, Any] | None:
        row = self.conn.execute(f"SELECT {', '.join(FILE_COLS)}, malformed, status FROM files WHERE path=?",
                                (path,)).fetchone()
        return dict(zip(FILE_COLS + ("malformed", "status"), row)) if row else None

    @_locked
    def files(self) -> list[dict[str, Any]]:
        cols = FILE_COLS + ("malformed", "status")
        return [dict(zip(cols, r)) for r in self.conn.execute(f"SELECT {', '.join(cols)} FROM files ORDER BY path")]

    @contextmanager
    def page_cache(self, size: int | None) -> Iterator[None]:
        """``with cache.page_cache(bytes):`` a larger page cache for a long write (None: as it is)."""
        if size is None:
            yield
            return
        before = scalar(self.conn, "PRAGMA cache_size")
        self.conn.execute(f"PRAGMA cache_size={-(int(size) >> 10)}")
        try:
            yield
        finally:
            self.conn.execute(f"PRAGMA cache_size={int(before)}")

    def finish_merging(self) -> None:
        """At a backfill's end (``fts.tiered``), finish the merge of sixteen segments automatic merging started and
        any other it would start: FTS5's incremental ``merge`` with ``usermerge`` at ``fts.BACKFILL_MERGE``, a few
        MB in each transaction, as long as it finds work. A level of fewer segments is left as it is (merging it
        would rewrite the larger segments above it again: FTS5 merges a level whole)."""
        while True:
            with self._write():
                if not fts.merge(self.conn, fts.BACKFILL_MERGE, pages=500):
                    return

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it (after a large write, such as a backfill)."""
        with self._lock:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def end_session(self, session: str, ended: Callable[[int, str | None], ev.ContextEvent]) -> bool:
        """Announce that ``session`` ended, unless it has no messages or its last announcement still holds.
        ``ended(message_count, last_at)`` makes the event; it is read and applied in one write transaction."""
        with self._write():
            row = self.conn.execute("SELECT message_count, last_at, ended_count FROM sessions WHERE session_id=?",
                                    (session,)).fetchone()
            if row is None or not row[0] or row[2] == row[0]:
                return False
            event = ended(int(row[0]), row[1])
            apply_in_tx(self.conn, [self.transform(event) if self.transform else event], "local", self.route)
        return True

    def mark_file_deleted(self, path: str) -> None:
        with self._write():
            self.conn.execute("UPDATE files SET status='deleted', updated_at=? WHERE path=?", (now_iso(), path))

    @_locked
    def known_messages(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        """For ingest's dedup and merging: what we already hold for these message keys."""
        out: dict[str, dict[str, Any]] = {}
        keys = list(keys)
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            q = ("SELECT m.key, m.session_id, m.parts, e.payload FROM messages m JOIN events e"
                 " ON e.event_id = m.event_id WHERE m.key IN (%s)" % ",".join("?" * len(chunk)))
            for key, session, parts, payload in self.conn.execute(q, chunk):
                out[key] = {"session": session, "parts": parts, "event": payload}
        return out

    @_locked
    def holds_transcripts(self) -> bool:
        """Whether any session, message or record is stored."""
        return bool(scalar(self.conn, "SELECT EXISTS (SELECT 1 FROM sessions) OR EXISTS (SELECT 1 FROM messages)"
                                      " OR EXISTS (SELECT 1 FROM records)"))

    @_locked
    def known_sessions(self, ids: Iterable[str]) -> set[str]:
        ids = list(ids)
        if not ids:
            return set()
        q = "SELECT session_id FROM sessions WHERE session_id IN (%s)" % ",".join("?" * len(ids))
        return {r[0] for r in self.conn.execute(q, ids)}

    @_locked
    def known_records(self, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        out: set[str] = set()
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            q = "SELECT key FROM records WHERE key IN (%s)" % ",".join("?" * len(chunk))
            out.update(r[0] for r in self.conn.execute(q, chunk))
        return out

    @_locked
    def record_owners(self, keys: Iterable[str]) -> dict[str, tuple[str, str | None]]:
        """For ingest's copies: the session holding each of these record keys, and the session its line names."""
        from cxsync.cache.apply import origin_of_raw

        keys = list(keys)
        out: dict[str, tuple[str, str | None]] = {}
        payloads: dict[int, dict[str, Any]] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            q = "SELECT key, session_id, event_seq FROM records WHERE key IN (%s)" % ",".join("?" * len(chunk))
            for k, sid, n in self.conn.execute(q, chunk).fetchall():
                key, session, seq = str(k), str(sid), int(n)  # type: ignore[arg-type]
                if seq not in payloads:
                    blob = scalar(self.conn, "SELECT payload FROM events WHERE seq=?", (seq,))
                    payloads[seq] = {r["key"]: r.get("raw") for r in ev.decode(blob).data.get("records", [])}
                out[key] = (session, origin_of_raw(payloads[seq].get(key)))
        return out

    # ---- outbox ---------------------------------------------------------------------------------------------

    @_locked
    def pending(self, max_events: int = 500, max_bytes: int = 4_000_000, stream: str | None = None) -> list[OutboxRow]:
        """The oldest pending outbox rows, bounded by count and bytes (at least one row if any is pending)."""
        q = ("SELECT o.seq, o.stream, e.event_id, e.payload, o.attempts FROM outbox o JOIN events e"
             " ON e.seq = o.event_seq WHERE o.state='pending'" + (" AND o.stream=?" if stream else "")
             + " ORDER BY o.seq LIMIT ?")
        rows: list[OutboxRow] = []
        size = 0
        for seq, st, eid, payload, attempts in self.conn.execute(q, ((stream,) if stream else ()) + (max_events,)):
            if rows and size + len(payload) > max_bytes:
                break
            rows.append(OutboxRow(seq, st, eid, payload, attempts))
            size += len(payload)
        return rows

    def ack(self, acks: Sequence[tuple[int, bytes]]) -> None:
        with self._write():
            now = now_iso()
            self.conn.executemany("UPDATE outbox SET state='acked', cursor=?, acked_at=?, last_error=NULL"
                                  " WHERE seq=?", [(c, now, s) for s, c in acks])

    def record_failure(self, seqs: Sequence[int], error: str, *, quarantine: bool) -> None:
        with self._write():
            self.conn.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, state = ? WHERE seq = ?",
                [(error, "quarantined" if quarantine else "pending", s) for s in seqs])

    @_locked
    def outbox_counts(self) -> dict[str, int]:
        counts = {"pending": 0, "acked": 0, "quarantined": 0}
        for state, n in self.conn.execute("SELECT state, count(*) FROM outbox GROUP BY state"):
            counts[state] = n
        return counts

    @_locked
    def quarantined(self, limit: int = 20) -> list[dict[str, Any]]:
        return [{"seq": s, "stream": st, "event_id": e, "error": err, "attempts": a} for s, st, e, err, a in
                self.conn.execute("SELECT o.seq, o.stream, e.event_id, o.last_error, o.attempts FROM outbox o"
                                  " JOIN events e ON e.seq=o.event_seq WHERE o.state='quarantined'"
                                  " ORDER BY o.seq LIMIT ?", (limit,))]

    # ---- cursors and state ----------------------------------------------------------------------------------

    @_locked
    def cursor(self, stream: str) -> bytes | None:
        row = self.conn.execute("SELECT cursor FROM cursors WHERE stream=?", (stream,)).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None

    @_locked
    def cursors(self) -> dict[str, dict[str, Any]]:
        return {s: {"cursor": bytes(c).hex() if c else None, "updated_at": u}
                for s, c, u in self.conn.execute("SELECT stream, cursor, updated_at FROM cursors ORDER BY stream")}

    @_locked
    def get_state(self, key: str, default: Any = None) -> Any:
        return self._state(key, default)

    def _state(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM state WHERE key=?", (key,)).fetchone()
        return orjson.loads(row[0]) if row else default

    def set_state(self, **values: Any) -> None:
        with self._write():
            self._set_state_in_tx(**values)

    def _set_state_in_tx(self, **values: Any) -> None:
        self.conn.executemany(
            "INSERT INTO state(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            [(k, orjson.dumps(v).decode()) for k, v in values.items()])

    # ---- stored events --------------------------------------------------------------------------------------

    def iter_events(self, batch: int = 1000) -> Iterator[list[tuple[str, bytes]]]:
        last = 0
        while True:
            rows: list[tuple[Any, ...]] = self.conn.execute(
                "SELECT seq, event_id, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (last, batch)).fetchall()
            if not rows:
                return
            last = int(rows[-1][0])
            yield [(str(eid), bytes(p)) for _, eid, p in rows]

    @_locked
    def session_records(self, session: str) -> list[dict[str, Any]]:
        """The verbatim non-conversational records of a session, in file order."""
        out = []
        payloads: dict[int, dict[str, str]] = {}
        for key, typ, line, seq in self.conn.execute(
                "SELECT key, type, line, event_seq FROM records WHERE session_id=? ORDER BY line", (session,)):
            if seq not in payloads:
                blob = scalar(self.conn, "SELECT payload FROM events WHERE seq=?", (seq,))
                payloads[seq] = {r["key"]: r.get("raw", "") for r in ev.decode(blob).data.get("records", [])}
            out.append({"key": key, "type": typ, "line": line, "raw": payloads[seq].get(key, "")})
        return out


def open_cache(path: str | os.PathLike[str], *, readonly: bool = False, route: Router | None = None,
               transform: Callable[[ev.ContextEvent], ev.ContextEvent] | None = None) -> Cache:
    """Open (creating and migrating when writable) the cache database at ``path``."""
    return Cache(path, readonly=readonly, route=route, transform=transform)
