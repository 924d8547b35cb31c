"""A large backfill's reader processes: they tail, parse, normalise, encode and compress transcripts while the
importing process writes what they produced.  Parsing is Python and holds the GIL; writing is mostly SQLite and
FTS5; in separate processes they overlap on several cores.

Each reader looks things up through its own read-only connection to the cache and keeps what it produced and the
writer has not committed yet (``BackfillLookup``), forgetting it once the writer says it is committed (which keeps
a reader's memory bounded however large the history).  A project's files all go to one reader, in order: copies
made by resume and fork stay in their project, so every reader decides exactly as one reader would.

A reader never outlives the importer, however the importer ends (SIGKILL included): it holds the read end of a
"lifeline" pipe whose only write end is the importer's, and exits the moment that end closes.  With the readers
gone, multiprocessing's resource tracker (whose pipe they shared) sees end of file and exits too.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import queue
import threading
import traceback
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any, Iterator, Mapping

from cxsync.agent.discovery import TranscriptFile
from cxsync.sync import events as ev

# Files a reader may read ahead of the writer, waiting pickled: they let the readers work on while the writer
# commits, and bound memory (at a million messages: 6 took 118-126 s, 16 took 115-120 s and the process tree
# 281 MB, 32 took 113 s and 297 MB).
IN_FLIGHT = 16
# Files each reader is sent beyond those while the importer commits (it receives nothing meanwhile, and the readers
# ran dry: at a million messages their CPU fell by half or more for a second at each commit), taken back from the
# files sent after it.
COMMIT_AHEAD = 16
MIN_BYTES = 32 << 20  # below this a second process costs more to start than it saves
MAX_READERS = 2
READER_PAGE_CACHE = 8 << 20
JOIN_TIMEOUT = 5.0
READER_NICENESS = 19  # the lowest priority: readers yield the cores to the writer

_reader: Any = None
_lookup: Any = None
_transform: Any = None


@contextlib.contextmanager
def no_cycle_collector() -> Iterator[None]:
    """Python's cycle collector off for a backfill: it makes millions of short-lived dicts and lists, none in a
    cycle, and each collection walks every object the lookups hold (7% of a one-process import, measured).
    Memory is still freed as usual, by reference counts; the collector runs once at the end."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
        gc.collect()


def _init(cache_path: str, identity: tuple[str, str, str], roots: list[str], transform: Any,
          expected: int | None) -> None:
    global _reader, _lookup, _transform
    gc.disable()  # as in no_cycle_collector: a reader lives for one backfill
    if hasattr(os, "nice"):
        # The writer is the import's one sequential part: when the cores are short, it runs and the readers
        # wait (measured at a million messages: 128-135 s, against 141-152 s with the readers at its priority).
        os.nice(READER_NICENESS)
    _transform = transform
    from cxsync.agent.ingest import BackfillLookup, Ingestor
    from cxsync.cache import open_cache

    cache = open_cache(cache_path, readonly=True)
    # Its look-ups are single keys, most of them new: a small page cache does, and each reader's memory counts.
    cache.conn.execute(f"PRAGMA cache_size={-READER_PAGE_CACHE >> 10}")
    _reader = Ingestor(cache, ev.Identity(*identity), [Path(r) for r in roots])
    _lookup = BackfillLookup(cache, expected=expected)


def _read(tf: TranscriptFile, committed: int
          ) -> tuple[TranscriptFile, list[Any], dict[str, bytes], dict[str, str], Any]:
    """What the writer needs of one file: its slices, each event's sealed payload and each message's identifier
    parts, so that the writer only writes.  The events are already transformed as the cache would (redaction),
    and travel light: their verbatim lines are in the payload only, and a copied record's origin is read here.
    ``committed``: how many of the files this reader was sent are in the cache now (what the lookup may forget)."""
    from cxsync.agent.ingest import IngestStats, Slice
    from cxsync.cache import compress, fts

    _lookup.forget(committed)
    stats = IngestStats(files=1)
    payloads: dict[str, bytes] = {}
    idents: dict[str, str] = {}
    dictionary = compress.active(_reader.cache.conn)  # once the writer has trained it
    slices = []
    for sl in _reader.produce(tf, stats, _lookup):
        light = []
        for e in sl.events:
            if _transform is not None:
                e = _transform(e)
            payloads[e.event_id] = ev.seal(ev.serialize(e), dictionary)
            light.append(_light(e, _lookup))
            if e.type == ev.MESSAGE_INDEXED:
                idents[e.event_id] = fts.idents(str(e.data.get("content") or ""))
        slices.append(Slice(light, sl.fstate, sl.end, sl.deleted))
    _lookup.next_file()
    return tf, slices, payloads, idents, stats


def _light(e: ev.ContextEvent, lookup: Any) -> ev.ContextEvent:
    """What ``apply`` reads of an event whose payload is sealed already: a message without its verbatim lines, a
    record without its line but with the session the line names (``origin``, what apply would read of it).
    ``lookup``: the reader's ``BackfillLookup``, whose records' origins were read from their lines already when
    the event was produced."""
    from cxsync.cache.apply import origin_of_raw

    def origin(r: Mapping[str, Any]) -> str | None:
        held, o = lookup.record_origin(r.get("key"))
        return o if held else origin_of_raw(r.get("raw"))

    data = e.data
    if e.type == ev.MESSAGE_INDEXED and "records" in data:
        data = ev.without(data, "records")
    elif e.type == ev.RECORDS_CAPTURED and isinstance(data.get("records"), list):
        records = []
        for r in data["records"]:
            if isinstance(r, dict) and "raw" in r:
                r, o = ev.without(r, "raw"), origin(r)
                r["origin"] = o
            records.append(r)
        data = {**data, "records": records}
    else:
        return e
    return ev.ContextEvent(e.type, e.event_id, e.tenant, e.user, e.machine, e.timestamp, data)


def _die_with_parent(lifeline: Connection) -> None:
    try:
        lifeline.recv()  # nothing is ever sent: this returns (EOFError) only when the importer is gone
    except (EOFError, OSError):
        pass
    os._exit(0)


def _serve(conn: Connection, lifeline: Connection, cache_path: str, identity: tuple[str, str, str],
           roots: list[str], transform: Any, expected: int | None) -> None:
    """A reader process: read each file it is sent, send back what it produced, in order.  A thread sends, so
    that reading goes on while the importer is busy writing (and not receiving): as many files ahead as it
    asked for."""
    threading.Thread(target=_die_with_parent, args=(lifeline,), name="lifeline", daemon=True).start()
    _init(cache_path, identity, roots, transform, expected)
    # Replies wait pickled: a file's events as bytes take a fraction of the memory they take as objects.
    replies: queue.SimpleQueue[memoryview | None] = queue.SimpleQueue()

    def send() -> None:
        while (reply := replies.get()) is not None:
            try:
                conn.send_bytes(reply)  # what the importer's recv() unpickles
            except (BrokenPipeError, OSError):
                return

    sender = threading.Thread(target=send, name="sender", daemon=True)
    sender.start()
    try:
        while True:
            try:
                request = conn.recv()
            except (EOFError, OSError):
                return
            if request is None:
                return
            tf, committed = request
            try:
                replies.put(ForkingPickler.dumps(("ok", _read(tf, committed))))
            except Exception:  # noqa: BLE001 - the importer raises it, with the reader's traceback
                replies.put(ForkingPickler.dumps(("error", traceback.format_exc())))
    finally:
        replies.put(None)
        sender.join()


class ReaderFailed(RuntimeError):
    pass


def readers_wanted(total_bytes: int) -> int:
    """How many reader processes a backfill of this size gets (``CXSYNC_IMPORT_PROCESSES`` counts the writer
    too: 1 reads in the importing process itself)."""
    procs = os.environ.get("CXSYNC_IMPORT_PROCESSES", "").strip()
    if procs.isdigit() and int(procs) >= 1:
        return int(procs) - 1
    if total_bytes < MIN_BYTES:
        return 0
    return max(1, min(MAX_READERS, (os.cpu_count() or 1)))


def partition(files: list[TranscriptFile], readers: int) -> list[list[int]]:
    """Which reader reads which files (indexes into ``files``, each list in order): a project's files all go to
    one reader, so that its lookup sees every copy a resumed or forked session made (they stay in their project)
    exactly as one reader would; projects are spread by size, largest first."""
    by_project: dict[str, list[int]] = {}
    for i, tf in enumerate(files):
        by_project.setdefault(tf.project_slug, []).append(i)
    size = {p: sum(_size(files[i]) for i in ix) for p, ix in by_project.items()}
    loads = [0] * readers
    parts: list[list[int]] = [[] for _ in range(readers)]
    for p in sorted(by_project, key=lambda p: (-size[p], p)):
        k = loads.index(min(loads))
        loads[k] += size[p]
        parts[k].extend(by_project[p])
    return [sorted(ix) for ix in parts]


def _size(tf: TranscriptFile) -> int:
    try:
        return os.stat(tf.path).st_size
    except OSError:
        return 0


class _Reader:
    """One reader process, with the files it is to read and how far the writer has got with them."""

    def __init__(self, context: Any, ingestor: Any, files: list[TranscriptFile], fresh: bool) -> None:
        from cxsync.agent.ingest import expected_keys

        ident = ingestor.identity
        self.conn, child_conn = context.Pipe(duplex=True)
        life_read, self.life_write = context.Pipe(duplex=False)
        self.proc = context.Process(
            target=_serve, name="cxsync-import-reader", daemon=True,
            args=(child_conn, life_read, str(ingestor.cache.path), (ident.tenant, ident.user, ident.machine),
                  [str(r) for r in ingestor.roots], ingestor.cache.transform,
                  expected_keys(files) if fresh else None))
        self.proc.start()
        child_conn.close()  # the child has its own copies: ours would keep its end of file from ever coming
        life_read.close()
        self.files = files
        self.sent = 0
        self.received = 0
        self.committed = 0  # of its files, how many are in the cache
        self.ahead = 0  # files sent beyond the usual window (``Reading.ahead``), not yet taken back

    def send_next(self) -> None:
        if self.sent < len(self.files):
            self.conn.send((self.files[self.sent], self.committed))
            self.sent += 1

    def receive(self) -> Any:
        try:
            kind, value = self.conn.recv()
        except EOFError:
            raise ReaderFailed(f"the import's reader process ended unexpectedly (exit code {self.proc.exitcode})")
        if kind == "error":
            raise ReaderFailed(f"the import's reader process failed:\n{value}")
        self.received += 1
        if self.ahead:
            self.ahead -= 1
        else:
            self.send_next()
        return value

    def close(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.conn.close()
        self.life_write.close()  # the reader exits now even if it is in the middle of a file
        self.proc.join(JOIN_TIMEOUT)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


class Reading:
    """(file, slices, sealed payloads, identifier parts, stats) for each file, read by reader processes while
    the importer writes; iterate it, and call ``committed()`` whenever what was handed out so far is in the
    cache, so the readers can forget it.  Files come from whichever reader has one ready (each reader's in
    order)."""

    def __init__(self, ingestor: Any, files: list[TranscriptFile], readers: int, fresh: bool = False) -> None:
        self.ingestor = ingestor
        self.files = files
        self.readers = readers
        self.fresh = fresh  # the cache held no transcripts: see ingest.BackfillLookup
        self._readers: list[_Reader] = []

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        context = multiprocessing.get_context("spawn")  # never fork a process that may be running threads
        parts = [p for p in partition(self.files, self.readers) if p]
        try:
            for ix in parts:
                self._readers.append(_Reader(context, self.ingestor, [self.files[i] for i in ix], self.fresh))
            for r in self._readers:
                for _ in range(IN_FLIGHT):
                    r.send_next()
            live = [r for r in self._readers if r.files]
            while live:
                ready = wait([r.conn for r in live])
                for r in list(live):  # whichever has a file ready, in turns: each reader's come in its order
                    if r.conn in ready:
                        yield r.receive()
                        if r.received == len(r.files):
                            live.remove(r)
        finally:
            for r in self._readers:
                r.close()

    def ahead(self) -> None:
        """Before a commit: each reader gets ``COMMIT_AHEAD`` more files to read while the importer writes."""
        for r in self._readers:
            for _ in range(COMMIT_AHEAD - r.ahead):
                if r.sent < len(r.files):
                    r.send_next()
                    r.ahead += 1

    def committed(self) -> None:
        for r in self._readers:
            r.committed = r.received
