"""A large backfill's reader process: it tails, parses, normalises and encodes transcripts while the importing
process writes what it produced.  Parsing is Python and holds the GIL; writing is mostly SQLite and FTS5; in two
processes they overlap on two cores.

The reader looks things up through its own read-only connection to the cache and keeps the set of what it
produced (``_Held``) for whatever the writer has not committed yet.  Files are handed over in order, so the
result is the same as reading them in one process.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterator

from cxsync.agent.discovery import TranscriptFile
from cxsync.sync import events as ev

IN_FLIGHT = 4  # files read ahead of the writer: bounds memory
MIN_BYTES = 32 << 20  # below this a second process costs more to start than it saves

_reader: Any = None


def _init(cache_path: str, identity: tuple[str, str, str], roots: list[str]) -> None:
    global _reader
    from cxsync.agent.ingest import Ingestor, _Held
    from cxsync.cache import open_cache

    _reader = Ingestor(open_cache(cache_path, readonly=True), ev.Identity(*identity), [Path(r) for r in roots])
    _reader._held = _Held()


def _read(tf: TranscriptFile) -> tuple[TranscriptFile, list[Any], dict[str, bytes], Any]:
    from cxsync.agent.ingest import IngestStats, Slice

    stats = IngestStats(files=1)
    payloads: dict[str, bytes] = {}
    slices = []
    for sl in _reader.produce(tf, stats):
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


def read_in_process(ingestor: Any, files: list[TranscriptFile]) -> Iterator[tuple[Any, ...]]:
    """(file, slices, serialized payloads, stats) for each file, in order, read by a second process."""
    ident = ingestor.identity
    context = multiprocessing.get_context("spawn")  # never fork a process that may be running threads
    with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_init,
                             initargs=(str(ingestor.cache.path), (ident.tenant, ident.user, ident.machine),
                                       [str(r) for r in ingestor.roots])) as pool:
        window: deque[Future[tuple[Any, ...]]] = deque()
        for tf in files:
            window.append(pool.submit(_read, tf))
            if len(window) >= IN_FLIGHT:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
