"""A large backfill's reader process: it tails, parses, normalises and encodes transcripts while the importing
process writes what it produced.  Parsing is Python and holds the GIL; writing is mostly SQLite and FTS5; in two
processes they overlap on two cores.

The reader looks things up through its own read-only connection to the cache and keeps the set of what it
produced (``_Held``) for whatever the writer has not committed yet.  Files are handed over in order, so the
result is the same as reading them in one process.

The reader never outlives the importer, however the importer ends (SIGKILL included): it holds the read end of a
"lifeline" pipe whose only write end is the importer's, and exits the moment that end closes.  With the reader
gone, multiprocessing's resource tracker (whose pipe the two shared) sees end of file and exits too.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Iterator

from cxsync.agent.discovery import TranscriptFile
from cxsync.sync import events as ev

IN_FLIGHT = 4  # files read ahead of the writer: bounds memory
MIN_BYTES = 32 << 20  # below this a second process costs more to start than it saves
JOIN_TIMEOUT = 5.0

_reader: Any = None
_lookup: Any = None


def _init(cache_path: str, identity: tuple[str, str, str], roots: list[str]) -> None:
    global _reader, _lookup
    from cxsync.agent.ingest import BackfillLookup, Ingestor
    from cxsync.cache import open_cache

    cache = open_cache(cache_path, readonly=True)
    _reader = Ingestor(cache, ev.Identity(*identity), [Path(r) for r in roots])
    _lookup = BackfillLookup(cache)


def _read(tf: TranscriptFile) -> tuple[TranscriptFile, list[Any], dict[str, bytes], Any]:
    from cxsync.agent.ingest import IngestStats, Slice

    stats = IngestStats(files=1)
    payloads: dict[str, bytes] = {}
    slices = []
    for sl in _reader.produce(tf, stats, _lookup):
        light = []
        for e in sl.events:
            payloads[e.event_id] = ev.serialize(e)  # the writer compresses: it has cycles to spare
            if e.type == ev.MESSAGE_INDEXED and "records" in e.data:
                # The verbatim lines travel once, inside the payload: apply never reads them.
                e = ev.ContextEvent(e.type, e.event_id, e.tenant, e.user, e.machine, e.timestamp,
                                    {k: v for k, v in e.data.items() if k != "records"})
            light.append(e)
        slices.append(Slice(light, sl.fstate, sl.end, sl.deleted))
    return tf, slices, payloads, stats


def _die_with_parent(lifeline: Connection) -> None:
    try:
        lifeline.recv()  # nothing is ever sent: this returns (EOFError) only when the importer is gone
    except (EOFError, OSError):
        pass
    os._exit(0)


def _serve(conn: Connection, lifeline: Connection, cache_path: str, identity: tuple[str, str, str],
           roots: list[str]) -> None:
    """The reader process: read each file it is sent, send back what it produced, in order."""
    threading.Thread(target=_die_with_parent, args=(lifeline,), name="lifeline", daemon=True).start()
    _init(cache_path, identity, roots)
    while True:
        try:
            tf = conn.recv()
        except (EOFError, OSError):
            return
        if tf is None:
            return
        try:
            reply: tuple[str, Any] = ("ok", _read(tf))
        except Exception:  # noqa: BLE001 - the importer raises it, with the reader's traceback
            reply = ("error", traceback.format_exc())
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return


class ReaderFailed(RuntimeError):
    pass


def read_in_process(ingestor: Any, files: list[TranscriptFile]) -> Iterator[tuple[Any, ...]]:
    """(file, slices, serialized payloads, stats) for each file, in order, read by a second process."""
    ident = ingestor.identity
    context = multiprocessing.get_context("spawn")  # never fork a process that may be running threads
    conn, child_conn = context.Pipe(duplex=True)
    life_read, life_write = context.Pipe(duplex=False)
    proc = context.Process(
        target=_serve, name="cxsync-import-reader", daemon=True,
        args=(child_conn, life_read, str(ingestor.cache.path), (ident.tenant, ident.user, ident.machine),
              [str(r) for r in ingestor.roots]))
    proc.start()
    child_conn.close()  # the child has its own copies: ours would keep its end of file from ever coming
    life_read.close()
    try:
        ahead = iter(files)
        for tf in files[:IN_FLIGHT]:
            conn.send(next(ahead))
        for _ in files:
            try:
                kind, value = conn.recv()
            except EOFError:
                raise ReaderFailed(f"the import's reader process ended unexpectedly (exit code {proc.exitcode})")
            if kind == "error":
                raise ReaderFailed(f"the import's reader process failed:\n{value}")
            nxt = next(ahead, None)
            if nxt is not None:
                conn.send(nxt)
            yield value
        conn.send(None)
    finally:
        conn.close()
        life_write.close()  # the reader exits now even if it is in the middle of a file
        proc.join(JOIN_TIMEOUT)
        if proc.is_alive():
            proc.kill()
            proc.join()
