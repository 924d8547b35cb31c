"""Rebuild: replay every stored event into a fresh cache, then swap it in.

The new database inherits the bookkeeping that is not derived from events (file offsets, outbox state, cursors,
sync state), so a rebuild neither re-imports nor re-pushes nor re-pulls anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from cxsync.sync import events as ev


def rebuild_cache(path: Path, opener: Callable[[Path], Any]) -> dict[str, int]:
    from cxsync.cache.store import Cache

    tmp = path.with_name(path.name + ".rebuild")
    for suffix in ("", "-wal", "-shm"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    old: Cache = opener(path)
    new: Cache = opener(tmp)
    n = 0
    try:
        # Local events stored before the cache had a dictionary are sealed with it now (a cache made by an older
        # cxsync shrinks); pulled ones keep the bytes they came with.  A cache without one gets one first.
        with old._write():
            old._train_dictionary()
        dictionary = old.dictionary()
        for batch in old.iter_events():
            events = [ev.decode(p) for _, p in batch]
            origins: dict[str, str] = dict(old.conn.execute(  # type: ignore[arg-type]
                "SELECT event_id, origin FROM events WHERE event_id IN (%s)" % ",".join("?" * len(batch)),
                [eid for eid, _ in batch]).fetchall())
            # Keep each event's origin; no routing, so no new outbox rows: the outbox is copied below.
            from itertools import groupby

            from cxsync.cache.apply import apply_in_tx

            blobs = {eid: ev.seal(ev.serialized(p), dictionary)
                     if dictionary is not None and p[:1] != bytes([ev.CODEC_DICT]) and origins.get(eid) == "local"
                     else p for eid, p in batch}
            with new.conn:
                for origin, run in groupby(events, key=lambda e: origins.get(e.event_id, "local")):
                    apply_in_tx(new.conn, list(run), origin, None, blobs)
            n += len(events)
        with new.conn:
            new.conn.execute("ATTACH DATABASE ? AS old", (str(path),))
            # The dictionaries too: the payloads were copied as they are, sealed with them.
            for table in ("files", "cursors", "state", "undecodable", "dictionaries"):
                new.conn.execute(f"INSERT OR REPLACE INTO main.{table} SELECT * FROM old.{table}")
            new.conn.execute(
                "INSERT INTO main.outbox(event_seq, stream, state, attempts, cursor, last_error, acked_at)"
                " SELECT ne.seq, o.stream, o.state, o.attempts, o.cursor, o.last_error, o.acked_at"
                " FROM old.outbox o JOIN old.events oe ON oe.seq = o.event_seq"
                " JOIN main.events ne ON ne.event_id = oe.event_id ORDER BY o.seq")
        new.conn.execute("DETACH DATABASE old")
        new.retry_undecodable()  # after an upgrade, what an older version kept aside may now apply
        counts = new.counts()
        new.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        old.close()
        new.close()
    for suffix in ("-wal", "-shm"):  # both closed cleanly: no WAL content is left to lose
        Path(str(path) + suffix).unlink(missing_ok=True)
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    os.replace(tmp, path)
    return {"events": n, "messages": counts["messages"], "sessions": counts["sessions"]}
