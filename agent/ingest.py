"""Ingest: tail a transcript file, normalise what is new into events, and apply them with the file offset.

One call of ``ingest_file`` may loop over several bounded batches; each batch is one ``cache.apply``
transaction holding the messages, the records, the outbox rows and the new offset together.

One way of reading, two seams: a ``Lookup`` answers what is held already (the cache, live; what a backfill
produced and has not written yet, then the cache, in a backfill) and a sink takes the slices (``ApplyNow``: one
transaction each, live; ``Batch``: a few large ones, in a backfill).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from rbloom import Bloom

from cxsync.agent import transcript as tx
from cxsync.agent.discovery import ScanProblems, TranscriptFile, classify, discover, projects_dir
from cxsync.agent.tailer import FileState, tail
from cxsync.cache import Cache, fts
from cxsync.cache.apply import message_origin, origin_of_raw, owner_rank, records_deferred
from cxsync.sync import events as ev

log = logging.getLogger("cxsync.ingest")

RECORDS_PER_EVENT = 200
# A backfill into an empty cache: the filter of the keys a reader produced, sized for a key per this many bytes of
# its files (a message is three lines or so of 500-1,000 bytes), wrong at most this often when not overfull.
SEEN_BYTES_PER_KEY = 512
SEEN_ERROR = 0.05
SESSION_IDLE_END = 30 * 60  # a session whose file has been quiet this long is announced as ended
OPEN_FILES = 256  # files whose last message is kept in memory
# A large backfill's writer probes the keys of every table it fills (a million each at a million messages): a
# larger page cache than the usual 32 MB keeps more of them in memory, as much as keeps the import's whole
# process tree under 300 MB with the transactions below and the index rows held back for their ends (40 MB:
# 281 MB at a million messages; 48 MB with 12 MB of text held back: 307 MB).
IMPORT_PAGE_CACHE = 40 << 20
# Events a backfill writes per transaction (in batches of Batch.EVENTS). Each commit writes the pages it dirtied
# all over the indexes keyed by random ids once more: at a million messages 50,000 took 139-145 s, 20,000 took
# 149-157 s and 8,000 155 s; the readers hold what is not committed, which bounds it (100,000: 351 MB).
COMMIT_EVENTS = 50_000


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


def _state_from_row(path: str, row: dict[str, Any] | None) -> FileState | None:
    if not row:
        return None
    return FileState(path, row["inode"] or 0, row["dev"] or 0, row["offset"] or 0, row["line_no"] or 0,
                     row["head_len"] or 0, row["head_hash"] or "", row["size"] or 0, row["mtime"] or 0.0)


@dataclass
class Slice:
    """What one read of a file produced: its events and the offset they reach (``fstate``), or the end of the
    file's reading (``end``: the session-ended check), or the news that the file is gone (``deleted``)."""

    events: list[ev.ContextEvent]
    fstate: dict[str, Any] | None
    end: tuple[tx.FileContext, FileState | None] | None = None
    deleted: str | None = None


# ---- lookups: what ingest must know of what is held already ----------------------------------------------------


@dataclass(slots=True)  # a backfill's readers hold one for each message until it is committed
class Known:
    """A message held already: its session, how many records it merges, and the session its records name."""

    session: str
    parts: int
    _origin: str | None = None
    _payload: bytes | None = None  # the stored event, decoded only if its origin is asked for (a copy)

    @property
    def origin(self) -> str | None:
        if self._payload is not None:
            self._origin, self._payload = message_origin(ev.decode(self._payload).data), None
        return self._origin


class Lookup:
    """Live capture's view: the cache, where each slice is applied before the next one is read."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    def session_known(self, session: str) -> bool:
        return session in self.cache.known_sessions([session])

    def messages(self, keys: Iterable[str]) -> dict[str, Known]:
        return {k: Known(v["session"], v["parts"], _payload=v["event"])
                for k, v in self.cache.known_messages(keys).items()}

    def stored_message(self, key: str) -> dict[str, Any] | None:
        """The stored version of a message (to merge a split message's later lines after a restart)."""
        got = self.cache.known_messages([key]).get(key)
        return dict(ev.decode(got["event"]).data) if got else None

    def record_owners(self, keys: Iterable[str]) -> dict[str, tuple[str, str | None]]:
        owners: dict[str, tuple[str, str | None]] = self.cache.record_owners(keys)
        return owners

    def produced(self, events: list[ev.ContextEvent]) -> None:
        """Live: nothing to remember, the slice is in the cache before the next lookup."""


class BackfillLookup(Lookup):
    """A backfill's view: what it produced (queued, or being written by the other process) before the cache.

    ``expected``: given when the cache held no transcripts as the backfill began, about how many keys this lookup
    will produce. The cache then holds only what the backfill wrote, and a filter of every key this lookup
    produced (``rbloom``, wrong one time in twenty at most when not overfull) answers "not there" for the rest
    without asking it: a copy is looked up, a new key almost never (at a million messages the look-ups of keys
    that were not there took a tenth of the readers' time). A key only another reader produced (a copy in
    another project) is then left to ``apply``, which keeps the copy of the session that owns it, as it does
    when two readers produce copies at once."""

    def __init__(self, cache: Cache, *, expected: int | None = None) -> None:
        super().__init__(cache)
        self._seen = Bloom(max(expected, 1024), SEEN_ERROR) if expected is not None else None
        self.sessions: set[str] = set()
        # Held until committed, so compact: most messages are whole and name their own session (their value is
        # then that session, one string for the file, not a Known), and so do most records (else the pair of
        # the session and the session their line names): 444 bytes an event held instead of 548 (200 files).
        self.held: dict[str, str | Known] = {}
        self.records: dict[str, str | tuple[str, str | None]] = {}
        # What each file produced (by its number in this lookup's reading), so that what the writer has
        # committed is forgotten: the cache answers for it then.  Keys name the file that produced them last.
        self.file = 0
        self._produced: dict[int, tuple[list[str], list[str], list[str]]] = {}
        self._owner: dict[str, int] = {}

    def next_file(self) -> None:
        self.file += 1

    def forget(self, committed: int) -> None:
        """Files numbered below ``committed`` are in the cache: drop what they produced."""
        for f in [f for f in self._produced if f < committed]:
            keys, sessions, records = self._produced.pop(f)
            for k in keys:
                if self._owner.get(k) == f:
                    self.held.pop(k, None)
                    del self._owner[k]
            for k in records:
                if self._owner.get(k) == f:
                    self.records.pop(k, None)
                    del self._owner[k]
            for sid in sessions:
                if self._owner.get("s:" + sid) == f:
                    self.sessions.discard(sid)
                    del self._owner["s:" + sid]

    def _stored(self, keys: Iterable[str]) -> list[str]:
        """Of ``keys`` (not held), those the cache may hold."""
        seen = self._seen
        return list(keys) if seen is None else [k for k in keys if k in seen]

    def session_known(self, session: str) -> bool:
        if session in self.sessions:
            return True
        return bool(self._stored(["s:" + session])) and super().session_known(session)

    def messages(self, keys: Iterable[str]) -> dict[str, Known]:
        keys = list(keys)
        out = super().messages(self._stored(k for k in keys if k not in self.held))
        for k in keys:
            if (v := self.held.get(k)) is not None:
                out[k] = Known(v, 1, v) if isinstance(v, str) else v
        return out

    def stored_message(self, key: str) -> dict[str, Any] | None:
        if key in self.held or not self._stored([key]):  # held: maybe not written yet
            return None
        return super().stored_message(key)

    def record_owners(self, keys: Iterable[str]) -> dict[str, tuple[str, str | None]]:
        keys = list(keys)
        out = super().record_owners(self._stored(k for k in keys if k not in self.records))
        for k in keys:
            if (v := self.records.get(k)) is not None:
                out[k] = (v, v) if isinstance(v, str) else v
        return out

    def record_origin(self, key: str) -> tuple[bool, str | None]:
        """Whether the record ``key`` is held, and the session its line names."""
        v = self.records.get(key)
        return v is not None, v if isinstance(v, str) else v[1] if v is not None else None

    def produced(self, events: list[ev.ContextEvent]) -> None:
        keys, sessions, records = self._produced.setdefault(self.file, ([], [], []))
        f, owner = self.file, self._owner
        n = (len(keys), len(sessions), len(records))
        for e in events:
            if e.type == ev.MESSAGE_INDEXED:
                k, session, parts = e.data["key"], e.data["session"], e.data.get("parts", 1)
                origin = message_origin(e.data)
                self.held[k] = session if parts == 1 and origin == session else Known(session, parts, _shared(origin))
                keys.append(k)
                owner[k] = f
            elif e.type == ev.SESSION_STARTED:
                self.sessions.add(e.data["session"])
                sessions.append(e.data["session"])
                owner["s:" + e.data["session"]] = f
            elif e.type == ev.RECORDS_CAPTURED:
                session = e.data["session"]
                for r in e.data.get("records", []):
                    origin = origin_of_raw(r.get("raw"))
                    self.records[r["key"]] = session if origin == session else (session, _shared(origin))
                    records.append(r["key"])
                    owner[r["key"]] = f
        if self._seen is not None:
            self._seen.update(keys[n[0]:], records[n[2]:], ["s:" + s for s in sessions[n[1]:]])


def _shared(session: str | None) -> str | None:
    """One copy of a session id read from many lines (a backfill holds one per record until it is committed)."""
    return None if session is None else sys.intern(session)


# ---- sinks: where the slices go ---------------------------------------------------------------------------------


class ApplyNow:
    """Live capture: each slice is one transaction with the file offset it reaches."""

    def __init__(self, ingestor: "Ingestor") -> None:
        self.ing = ingestor

    def put(self, sl: Slice) -> None:
        cache = self.ing.cache
        if sl.deleted:
            cache.mark_file_deleted(sl.deleted)
        elif sl.end is not None:
            self.ing.end_session_if_idle(*sl.end)
        elif sl.fstate is not None:
            cache.apply(sl.events, "local", files=[sl.fstate])


class Batch:
    """A backfill: slices gathered into a few large transactions (FTS5 and the WAL both prefer them)."""

    EVENTS = 3000

    def __init__(self, ingestor: "Ingestor") -> None:
        self.ing = ingestor
        self._reset()

    def _reset(self) -> None:
        self.payloads: dict[str, bytes] = {}  # events already transformed and sealed (by the reader process)
        self.idents: dict[str, str] = {}  # and the identifier parts of their messages' texts
        self.events: list[ev.ContextEvent] = []
        self.files: list[dict[str, Any]] = []
        self.end_checks: list[tuple[tx.FileContext, FileState | None]] = []
        self.done: int | None = None  # files of the backfill finished once this batch is written

    def put(self, sl: Slice) -> None:
        if sl.deleted:
            self.flush()
            self.ing.cache.mark_file_deleted(sl.deleted)
        elif sl.end is not None:
            self.end_checks.append(sl.end)
        elif sl.fstate is not None:
            self.events.extend(sl.events)
            self.files.append(sl.fstate)
            if len(self.events) >= self.EVENTS:
                self.flush()

    def flush(self, done: int | None = None) -> None:
        cache = self.ing.cache
        if self.events or self.files:
            cache.apply(self.events, "local", files=self.files, payloads=self.payloads or None,
                        idents=self.idents or None, transformed=bool(self.payloads))
        for ctx, state in self.end_checks:
            self.ing.end_session_if_idle(ctx, state)
        if done is not None:
            cache.set_state(import_done=done)
        self._reset()


class Ingestor:
    def __init__(self, cache: Cache, identity: ev.Identity, roots: Iterable[Path]) -> None:
        self.cache = cache
        self.identity = identity
        self.roots = [Path(r) for r in roots]
        self.live = Lookup(cache)
        # Per file, the last message read (a split assistant response may go on in the next read): its records,
        # kept here so that the next read merges with them instead of decoding them back from the cache.  The
        # files read most recently only: a backfill reads thousands once each, live capture a few many times.
        self._open: OrderedDict[str, tuple[str, list[tx.Piece]]] = OrderedDict()
        self.problems = ScanProblems()  # of the last scan
        self._refused: set[str] = set()  # files already warned about as unreadable: rescans stay quiet
        self.stop: threading.Event | None = None  # set by the agent: a long file is left between two slices

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
        sink = ApplyNow(self)
        for sl in self.produce(tf, stats, self.live, max_bytes=max_bytes):
            sink.put(sl)
        return stats

    def produce(self, tf: TranscriptFile, stats: IngestStats, lookup: Lookup, *,
                max_bytes: int = 8 << 20) -> Iterator[Slice]:
        """Read what is new in ``tf`` and yield it as slices of events, each with the file offset it reaches.

        Live, the caller applies each slice before asking for the next (the next one's lookups see it); in a
        backfill the lookup remembers what was produced and not written yet.
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
                self._open.pop(path, None)
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
                self._open.pop(path, None)
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
            events, n_msgs, new_session = self._normalise(ctx, tf, pieces, lookup)
            stats.records += len(pieces)
            stats.messages += n_msgs
            stats.sessions += int(new_session and ctx.session == ctx.root_session)  # as status and `sessions` count
            stats.skipped_lines += malformed
            fstate = {
                "path": path, "kind": tf.kind, "session_id": ctx.session, "inode": res.state.inode,
                "dev": res.state.dev, "offset": res.state.offset, "line_no": res.state.line_no,
                "head_len": res.state.head_len, "head_hash": res.state.head_hash, "size": res.state.size,
                "mtime": res.state.mtime, "malformed_add": malformed,
            }
            state = res.state
            lookup.produced(events)
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

    def _normalise(self, ctx: tx.FileContext, tf: TranscriptFile, pieces: list[tx.Piece],
                   lookup: Lookup) -> tuple[list[ev.ContextEvent], int, bool]:
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
        if (groups or others) and not lookup.session_known(ctx.session):
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
        known = lookup.messages(groups)
        open_key, open_pieces = self._open.pop(ctx.source_file, ("", []))
        indexed_at = ev.utcnow_iso()
        n_msgs = 0
        for key, group in groups.items():
            have = known.get(key)
            origin = _origin(group)
            if have is not None and have.session != ctx.session:
                # The same record copied into another file (resume/fork): only its owner's copy is kept, whichever
                # file is read first (apply moves it to the owner when the owner's copy comes later).
                if owner_rank(ctx.session, origin) > owner_rank(have.session, have.origin):
                    continue
                group = _dedupe_by_uuid(group)
            elif have is not None:
                # More lines of a message held already: a split response that went on after the last read.
                if key == open_key:
                    earlier = open_pieces
                else:  # not read in this run (the agent restarted meanwhile): from its stored version
                    old = lookup.stored_message(key) or {}
                    earlier = tx.pieces_from_raws(old.get("records", []), old.get("lines", []))
                seen = {p.raw for p in group}
                merged = _dedupe_by_uuid(sorted([p for p in earlier if p.raw not in seen] + group,
                                                key=lambda p: p.line))
                if len(merged) <= have.parts:
                    continue
                group = merged
            else:
                group = _dedupe_by_uuid(group)
            msg = tx.build_message(group, ctx, indexed_at)
            if msg is not None:
                if origin is not None:
                    msg["origin"] = origin
                events.append(ev.message_indexed(self.identity, msg))
                n_msgs += 1
        if groups:
            last_key = next(reversed(groups))
            if last_key == open_key:
                last = _dedupe_by_uuid(sorted(open_pieces + groups[last_key], key=lambda p: p.line))
            else:
                last = groups[last_key]
            self._open[ctx.source_file] = (last_key, last)
        elif open_key:
            self._open[ctx.source_file] = (open_key, open_pieces)
        while len(self._open) > OPEN_FILES:
            self._open.popitem(last=False)
        if others:
            events.extend(self._records(ctx, tf, others, lookup))
        return events, n_msgs, new_session

    def _records(self, ctx: tx.FileContext, tf: TranscriptFile, others: list[tx.Piece],
                 lookup: Lookup) -> list[ev.ContextEvent]:
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
        owners = lookup.record_owners(r["key"] for r in recs)
        # Known records are skipped, but for a copy that owns the record (see owner_rank): apply moves it.
        recs = [r for r in recs if r["key"] not in owners or
                (owners[r["key"]][0] != ctx.session and
                 owner_rank(ctx.session, origin_of_raw(r["raw"])) < owner_rank(*owners[r["key"]]))]
        return [ev.records_captured(self.identity, ctx.session, recs[i:i + RECORDS_PER_EVENT])
                for i in range(0, len(recs), RECORDS_PER_EVENT)]

    def end_session_if_idle(self, ctx: tx.FileContext, state: FileState | None, now: float | None = None) -> None:
        """Claude Code writes no end marker: a session whose file has been quiet for a while has ended."""
        if state is None or (now or time.time()) - state.mtime < SESSION_IDLE_END:
            return
        self.cache.end_session(ctx.session, lambda count, last_at: ev.session_ended(
            self.identity, ctx.session, count, last_at or ev.utcnow_iso()))

    # ---- many files -----------------------------------------------------------------------------------------

    def import_all(self, progress: Callable[[TranscriptFile, int, int], None] | None = None, *,
                   readers: int | None = None) -> IngestStats:
        """Backfill every transcript in a few large transactions.

        A large backfill is read by reader processes while this one writes (``cxsync.agent.backfill``), as many
        as ``readers`` (default: by size and cores); ``CXSYNC_IMPORT_PROCESSES=1`` keeps it in one process,
        ``=3`` uses a writer and two readers whatever the size.
        """
        from cxsync.agent import backfill

        files = self.scan()
        # Main sessions first so subagents find their parent's session in place.
        files.sort(key=lambda f: (f.kind != "main", str(f.path)))
        if readers is None:
            readers = backfill.readers_wanted(sum(file_size(f.path) for f in files))
        total = IngestStats(errors=self.problems.messages())
        fresh = not self.cache.holds_transcripts()  # then the readers need not ask it about their new keys
        self.cache.set_state(import_total=len(files), import_done=0)
        sink = Batch(self)
        with self.cache.page_cache(IMPORT_PAGE_CACHE if readers else None), backfill.no_cycle_collector():
            self._import(files, readers, fresh, sink, total, progress)
            self.cache.finish_merging()
        # The WAL grew while the reader processes held snapshots: give its space back now.
        self.cache.checkpoint()
        return total

    def _import(self, files: list[TranscriptFile], readers: int, fresh: bool, sink: "Batch", total: IngestStats,
                progress: Callable[[TranscriptFile, int, int], None] | None) -> None:
        from cxsync.agent import backfill

        reading: backfill.Reading | _ReadHere = (backfill.Reading(self, files, readers, fresh) if readers
                                                 else _ReadHere(self, files, fresh))
        # Batches are written a few to a transaction: every commit writes each page it changed once more, and
        # the keys of a batch land on pages all over their indexes (a page per key, at a million messages).
        group = contextlib.ExitStack()
        sealing = self.cache.dictionary() is not None  # the readers seal with the dictionary once it is committed

        def begin() -> None:  # new messages are indexed in rowid order, before the transaction commits
            conn = group.enter_context(self.cache.transaction(flat=True))
            group.enter_context(fts.tiered(conn))  # merged sixteen segments at a time; import_all finishes it
            group.enter_context(fts.deferred(conn))
            group.enter_context(records_deferred(conn))  # records written in key order, before the commit

        with group:
            begin()
            pending = 0
            for i, (tf, slices, payloads, idents, stats) in enumerate(reading, 1):
                total.add(stats)
                sink.payloads.update(payloads)
                sink.idents.update(idents)
                for sl in slices:
                    pending += len(sl.events)
                    sink.put(sl)
                if progress:
                    progress(tf, i, len(files))
                if i % 20 == 0 or i == len(files):
                    sink.flush(done=i)
                    trained = not sealing and self.cache.dictionary() is not None
                    sealing = sealing or trained
                    if pending >= COMMIT_EVENTS or i == len(files) or trained:
                        reading.ahead()  # the readers read on while this one commits
                        group.close()  # commit: what the readers produced so far is in the cache
                        reading.committed()
                        begin()
                        pending = 0
            sink.flush()



class _ReadHere:
    """A small backfill, read in the importing process itself (the same protocol as ``backfill.Reading``)."""

    def __init__(self, ingestor: Ingestor, files: list[TranscriptFile], fresh: bool = False) -> None:
        self.ingestor = ingestor
        self.files = files
        self.lookup = BackfillLookup(ingestor.cache, expected=expected_keys(files) if fresh else None)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        for tf in self.files:
            stats = IngestStats(files=1)
            slices = list(self.ingestor.produce(tf, stats, self.lookup))
            self.lookup.next_file()
            yield tf, slices, {}, {}, stats

    def ahead(self) -> None:
        """Nothing to read ahead: the files are read here, one by one."""

    def committed(self) -> None:
        self.lookup.forget(self.lookup.file)


def _origin(group: list[tx.Piece]) -> str | None:
    sid = group[0].record.get("sessionId") if group else None
    return sid if isinstance(sid, str) else None


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


def expected_keys(files: Iterable[TranscriptFile]) -> int:
    """About how many keys (messages, records, sessions) reading ``files`` produces, to size a lookup's filter."""
    return sum(file_size(f.path) for f in files) // SEEN_BYTES_PER_KEY


def file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0
