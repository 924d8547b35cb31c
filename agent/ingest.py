"""Ingest: tail a transcript file, normalise what is new into events, and apply them with the file offset.

One call of ``ingest_file`` may loop over several bounded batches; each batch is one ``cache.apply``
transaction holding the messages, the records, the outbox rows and the new offset together.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from cxsync.agent import transcript as tx
from cxsync.agent.discovery import ScanProblems, TranscriptFile, classify, discover, projects_dir
from cxsync.agent.tailer import FileState, tail
from cxsync.cache import Cache
from cxsync.sync import events as ev

log = logging.getLogger("cxsync.ingest")

RECORDS_PER_EVENT = 200
SESSION_IDLE_END = 30 * 60  # a session whose file has been quiet this long is announced as ended


@dataclass
class IngestStats:
    files: int = 0
    records: int = 0
    messages: int = 0
    sessions: int = 0
    skipped_lines: int = 0
    repaired: int = 0  # records captured with fields of the wrong type ignored
    bytes: int = 0
    resets: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, o: "IngestStats") -> None:
        for name in ("files", "records", "messages", "sessions", "skipped_lines", "repaired", "bytes", "resets"):
            setattr(self, name, getattr(self, name) + getattr(o, name))
        self.errors.extend(o.errors)

    def as_dict(self) -> dict[str, Any]:
        return {"files": self.files, "records": self.records, "messages": self.messages,
                "sessions": self.sessions, "skipped_lines": self.skipped_lines, "repaired": self.repaired,
                "bytes": self.bytes,
                "resets": self.resets, "errors": self.errors}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _state_from_row(path: str, row: dict[str, Any] | None) -> FileState | None:
    if not row:
        return None
    return FileState(path, row["inode"] or 0, row["dev"] or 0, row["offset"] or 0, row["line_no"] or 0,
                     row["head_len"] or 0, row["head_hash"] or "", row["size"] or 0, row["mtime"] or 0.0)


class _Held:
    """What a backfill produced but the cache may not show yet (queued, or being written by the writer thread).
    Lookups consult it before the cache, so dedup and merging see everything produced so far."""

    def __init__(self) -> None:
        self.messages: dict[str, dict[str, Any]] = {}
        self.sessions: set[str] = set()
        self.records: set[str] = set()
        self._file_keys: list[str] = []

    def add(self, events: list[ev.ContextEvent]) -> None:
        for e in events:
            if e.type == ev.MESSAGE_INDEXED:
                key = e.data["key"]
                self.messages[key] = {"session": e.data["session"], "parts": e.data.get("parts", 1), "event": e}
                self._file_keys.append(key)
            elif e.type == ev.SESSION_STARTED:
                self.sessions.add(e.data["session"])
            elif e.type == ev.RECORDS_CAPTURED:
                self.records.update(r["key"] for r in e.data.get("records", []))

    def file_done(self) -> None:
        # Merging only ever needs the events of the file being read; keep just the identity of the others.
        for key in self._file_keys:
            self.messages[key]["event"] = None
        self._file_keys.clear()


@dataclass
class Slice:
    """What one read of a file produced: its events and the offset they reach (``fstate``), or the end of the
    file's reading (``end``: the session-ended check), or the news that the file is gone (``deleted``)."""

    events: list[ev.ContextEvent]
    fstate: dict[str, Any] | None
    end: tuple[tx.FileContext, FileState | None] | None = None
    deleted: str | None = None


class _Batch:
    def __init__(self) -> None:
        self.done: int | None = None  # files of the backfill finished once this batch is written
        self.payloads: dict[str, bytes] = {}  # events already encoded (by the reader process)
        self.events: list[ev.ContextEvent] = []
        self.files: list[dict[str, Any]] = []
        self.end_checks: list[tuple[tx.FileContext, FileState | None]] = []


class Ingestor:
    BATCH_EVENTS = 3000

    def __init__(self, cache: Cache, identity: ev.Identity, roots: Iterable[Path]) -> None:
        self.cache = cache
        self.identity = identity
        self.roots = [Path(r) for r in roots]
        self._held: _Held | None = None
        self._batch: _Batch | None = None
        self.problems = ScanProblems()  # of the last scan
        self._refused: set[str] = set()  # files already warned about as unreadable: rescans stay quiet
        self.stop: threading.Event | None = None  # set by the agent: a long file is left between two slices

    def _flush(self) -> None:
        batch = self._batch
        if batch is None or not (batch.events or batch.files):
            return
        self._batch = _Batch()
        self.cache.apply(batch.events, "local", files=batch.files, payloads=batch.payloads or None)
        for ctx, state in batch.end_checks:
            self._maybe_end_session(ctx, state)
        if batch.done is not None:
            self.cache.set_state(import_done=batch.done)

    # ---- discovery ------------------------------------------------------------------------------------------

    def scan(self) -> list[TranscriptFile]:
        problems = ScanProblems()
        files = list(discover(self.roots, problems))
        self.problems = problems
        return files

    def classify(self, path: Path) -> TranscriptFile | None:
        for root in self.roots:
            tf = classify(path, projects_dir(root))
            if tf is not None:
                return tf
        return None

    # ---- one file -------------------------------------------------------------------------------------------

    def ingest_file(self, tf: TranscriptFile, *, max_bytes: int = 8 << 20) -> IngestStats:
        """Capture what is new in one file now: each slice is applied before the next is read."""
        stats = IngestStats(files=1)
        for sl in self.produce(tf, stats, max_bytes=max_bytes):
            self._consume(sl)
        return stats

    def _consume(self, sl: "Slice") -> None:
        if sl.deleted:
            self.cache.mark_file_deleted(sl.deleted)
        elif sl.end is not None:
            self._maybe_end_session(*sl.end)
        elif sl.fstate is not None:
            self.cache.apply(sl.events, "local", files=[sl.fstate])

    def _hold(self, sl: "Slice") -> None:
        """Backfill: gather slices into a few large transactions."""
        assert self._batch is not None
        if sl.deleted:
            self._flush()
            self.cache.mark_file_deleted(sl.deleted)
        elif sl.end is not None:
            self._batch.end_checks.append(sl.end)
        elif sl.fstate is not None:
            self._batch.events.extend(sl.events)
            self._batch.files.append(sl.fstate)
            if len(self._batch.events) >= self.BATCH_EVENTS:
                self._flush()

    def produce(self, tf: TranscriptFile, stats: IngestStats, *, max_bytes: int = 8 << 20) -> Iterator["Slice"]:
        """Read what is new in ``tf`` and yield it as slices of events, each with the file offset it reaches.

        Live, the caller applies each slice before asking for the next (the next one's lookups see it); in a
        backfill the held set (``self._held``) stands in for what is not written yet.
        """
        path = str(tf.path)
        row = self.cache.file_state(path)
        state = _state_from_row(path, row)
        parent = tf.parent or (row or {}).get("session_id", "") or None
        if tf.kind == "agent-flat" and row and row.get("session_id"):
            parent = row["session_id"].split(":")[0]
        ctx = None
        limit: int | None = None  # the size seen by the first read: a file outgrowing us waits for the next call
        bad_lines: list[int] = []  # reported once per file read, never once per line
        repaired = 0
        while True:
            try:
                res = tail(path, state, max_bytes=max_bytes)
            except FileNotFoundError:
                if row is not None or state is not None:
                    log.info("transcript %s is gone; keeping everything captured from it", path)
                    yield Slice([], None, deleted=path)
                stats.files = 0
                return
            except OSError as exc:
                stats.errors.append(f"{path}: {exc.strerror or exc}")
                if path not in self._refused:
                    self._refused.add(path)
                    log.warning("cannot read %s: %s", path, exc.strerror or exc)
                return
            if res.reset:
                stats.resets += 1
                log.info("transcript %s was %s: re-reading it from the start", path, res.reason)
            stats.bytes += res.state.offset - (0 if res.reset or state is None else state.offset)
            pieces: list[tx.Piece] = []
            malformed = res.oversized
            for line in res.lines:
                parsed = tx.parse_line(line.data)
                if parsed.malformed:
                    bad_lines.append(line.number)
                malformed += parsed.malformed
                repaired += parsed.repaired
                for rec, raw in zip(parsed.records, parsed.raws):
                    pieces.append(tx.Piece(rec, raw, line.number))
            if tf.kind == "agent-flat" and parent is None:
                parent = next((p.record["sessionId"] for p in pieces if isinstance(p.record.get("sessionId"), str)),
                              None)
            ctx = self._context(tf, parent)
            events, n_msgs, new_session = self._normalise(ctx, tf, pieces)
            stats.records += len(pieces)
            stats.messages += n_msgs
            stats.sessions += int(new_session)
            stats.skipped_lines += malformed
            fstate = {
                "path": path, "kind": tf.kind, "session_id": ctx.session, "inode": res.state.inode,
                "dev": res.state.dev, "offset": res.state.offset, "line_no": res.state.line_no,
                "head_len": res.state.head_len, "head_hash": res.state.head_hash, "size": res.state.size,
                "mtime": res.state.mtime, "malformed_add": malformed,
            }
            state = res.state
            if self._held is not None:
                self._held.add(events)
            yield Slice(events, fstate)
            limit = res.state.size if limit is None else limit
            if not res.more or res.state.offset >= limit or (self.stop is not None and self.stop.is_set()):
                break
        stats.repaired += repaired
        if bad_lines:
            shown = ", ".join(map(str, bad_lines[:5])) + (", …" if len(bad_lines) > 5 else "")
            log.warning("%s: %d unparseable line(s) skipped (line %s)", path, len(bad_lines), shown)
        if repaired:
            log.warning("%s: %d record(s) captured without their fields of the wrong type", path, repaired)
        if self._held is not None:
            self._held.file_done()
        if ctx is not None:
            yield Slice([], None, end=(ctx, state))

    def _context(self, tf: TranscriptFile, parent: str | None) -> tx.FileContext:
        if tf.kind == "main":
            session, root, par = tf.session, tf.session, None
        elif tf.kind == "subagent":
            session, root, par = tf.session, tf.parent or tf.session, tf.parent
        else:  # flat 2.0.x agent file: parent known from its records
            root = parent or f"agent-{tf.agent_id}"
            session = f"{parent}:agent-{tf.agent_id}" if parent else f"agent-{tf.agent_id}"
            par = parent
        ident = self.identity
        return tx.FileContext(session, root, par, tf.agent_id, str(tf.path), ident.tenant, ident.user, ident.machine)

    def _normalise(self, ctx: tx.FileContext, tf: TranscriptFile,
                   pieces: list[tx.Piece]) -> tuple[list[ev.ContextEvent], int, bool]:
        groups: dict[str, list[tx.Piece]] = {}
        others: list[tx.Piece] = []
        for p in pieces:
            key = tx.message_key(p.record) if p.record.get("type") in tx.CONVERSATIONAL else None
            if key is None:
                others.append(p)
            else:
                groups.setdefault(key, []).append(p)
        events: list[ev.ContextEvent] = []
        new_session = False
        held = self._held
        known_session = (held is not None and ctx.session in held.sessions) or \
            ctx.session in self.cache.known_sessions([ctx.session])
        if not known_session and (groups or others):
            first = next((p.record for p in pieces if isinstance(p.record.get("cwd"), str)), {})
            started = next((p.record["timestamp"] for p in pieces if isinstance(p.record.get("timestamp"), str)),
                           None)
            events.append(ev.session_started(self.identity, {
                "session": ctx.session, "root_session": ctx.root_session, "parent_session": ctx.parent_session,
                "agent_id": ctx.agent_id, "project": first.get("cwd"), "branch": first.get("gitBranch") or None,
                "source_file": ctx.source_file, "started_at": started, "version": first.get("version"),
                "project_slug": tf.project_slug,
            }))
            new_session = True
        held_msgs = {k: held.messages[k] for k in groups if held is not None and k in held.messages}
        known = {**self.cache.known_messages([k for k in groups if k not in held_msgs]), **held_msgs}
        indexed_at = _now()
        n_msgs = 0
        for key, group in groups.items():
            have = known.get(key)
            if have is not None:
                if have["session"] != ctx.session:
                    continue  # the same record copied into another file (resume/fork): first capture stays
                old_event = have["event"]
                if old_event is None:  # held from an earlier file of this backfill: written already
                    self._flush()
                    stored = self.cache.known_messages([key]).get(key)
                    if stored is None:  # not written yet (another process writes): keep the first capture
                        continue
                    old_event = stored["event"]
                old = (old_event if isinstance(old_event, ev.ContextEvent) else ev.decode(old_event)).data
                seen = {p.raw for p in group}
                merged = [p for p in tx.pieces_from_raws(old.get("records", []), old.get("lines", []))
                          if p.raw not in seen] + group
                merged = _dedupe_by_uuid(sorted(merged, key=lambda p: p.line))
                if len(merged) <= have["parts"]:
                    continue
                group = merged
            else:
                group = _dedupe_by_uuid(group)
            msg = tx.build_message(group, ctx, indexed_at)
            if msg is not None:
                events.append(ev.message_indexed(self.identity, msg))
                n_msgs += 1
        if others:
            recs = []
            for p in others:
                key = tx.record_key(p.record, p.raw, tf.path.name)
                r: dict[str, Any] = {"key": key, "type": p.record.get("type"), "line": p.line, "raw": p.raw}
                t = tx.title_of(p.record)
                if t:
                    r["title_rank"], r["title"] = t
                    if p.record.get("type") == "summary" and isinstance(p.record.get("leafUuid"), str):
                        r["leaf_uuid"] = p.record["leafUuid"]
                recs.append(r)
            fresh = self.cache.known_records(r["key"] for r in recs)
            if held is not None:
                fresh |= {r["key"] for r in recs if r["key"] in held.records}
            recs = [r for r in recs if r["key"] not in fresh]
            for i in range(0, len(recs), RECORDS_PER_EVENT):
                chunk = recs[i:i + RECORDS_PER_EVENT]
                e = ev.records_captured(self.identity, ctx.session, chunk)
                events.append(e)
        return events, n_msgs, new_session

    def _maybe_end_session(self, ctx: tx.FileContext, state: FileState | None, now: float | None = None) -> None:
        """Claude Code writes no end marker: a session whose file has been quiet for a while has ended."""
        import time

        if state is None or (now or time.time()) - state.mtime < SESSION_IDLE_END:
            return
        row = self.cache.conn.execute("SELECT message_count, last_at, ended_count FROM sessions WHERE session_id=?",
                                      (ctx.session,)).fetchone()
        if row is None or row[0] == 0 or row[2] == row[0]:
            return
        self.cache.apply([ev.session_ended(self.identity, ctx.session, row[0], row[1] or _now())], "local")

    # ---- many files -----------------------------------------------------------------------------------------

    def import_all(self, progress: Callable[[TranscriptFile, int, int], None] | None = None, *,
                   reader_process: bool | None = None) -> IngestStats:
        """Backfill every transcript in a few large transactions (FTS5 and the WAL both prefer them).

        A large backfill is read by a second process while this one writes (``cxsync.agent.backfill``);
        ``CXSYNC_IMPORT_PROCESSES=1`` keeps it in one.
        """
        from cxsync.agent import backfill

        files = self.scan()
        # Main sessions first so subagents find their parent's session in place.
        files.sort(key=lambda f: (f.kind != "main", str(f.path)))
        if reader_process is None:
            reader_process = os.environ.get("CXSYNC_IMPORT_PROCESSES", "2") != "1" and \
                sum(file_size(f.path) for f in files) >= backfill.MIN_BYTES
        total = IngestStats(errors=self.problems.messages())
        self.cache.set_state(import_total=len(files), import_done=0)
        self._held, self._batch = _Held(), _Batch()
        try:
            if reader_process:
                results = backfill.read_in_process(self, files)
            else:
                results = self._read_here(files)
            for i, (tf, slices, payloads, stats) in enumerate(results, 1):
                total.add(stats)
                self._batch.payloads.update((eid, ev.seal(raw)) for eid, raw in payloads.items())
                for sl in slices:
                    self._hold(sl)
                if progress:
                    progress(tf, i, len(files))
                if i % 20 == 0 or i == len(files):
                    self._batch.done = i
                    self._flush()
            self._flush()
        finally:
            self._held = self._batch = None
        return total

    def _read_here(self, files: list[TranscriptFile]) -> Iterator[tuple[Any, ...]]:
        for tf in files:
            stats = IngestStats(files=1)
            # A file read in several slices: hold each before reading the next, so merges see it.
            yield tf, list(self.produce(tf, stats)), {}, stats


def _dedupe_by_uuid(pieces: list[tx.Piece]) -> list[tx.Piece]:
    seen: set[str] = set()
    out = []
    for p in pieces:
        uid = p.record.get("uuid")
        marker = uid if isinstance(uid, str) else p.raw
        if marker in seen:
            continue
        seen.add(marker)
        out.append(p)
    return out


def file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
