"""The cache's compression dictionary for its stored events.

A stored event is one small zstd frame (a message with its verbatim lines: a few KB).  Frames that small cannot
learn a history's vocabulary, so each pays for it again; a dictionary trained on the cache's own events carries
it once and halves what the events take (and compresses faster).  Payloads sealed with it are version 3 of the
event codec, which never leaves the cache: ``sync.events`` hands a log the plain version-2 form of the same bytes.

The first dictionary is trained once a cache holds ``MIN_EVENTS`` events (an import trains it after its first
batch, the agent after its first pass); events stored before it keep their version-2 payloads.  Dictionaries are
never replaced or deleted: every payload names the one it needs.
"""

from __future__ import annotations

import logging
import weakref
from typing import cast

import apsw
import zstandard

from cxsync.cache.db import now_iso, one_row
from cxsync.sync import events as ev

MIN_EVENTS = 2000  # enough samples for a dictionary as good as one trained on ten times more
SAMPLES = 2000


def _has_table(conn: apsw.Connection) -> bool:
    return one_row(conn, "SELECT 1 FROM sqlite_schema WHERE type='table' AND name='dictionaries'") is not None


_open: "weakref.WeakSet[apsw.Connection]" = weakref.WeakSet()  # the caches this process has open


def _source(dict_id: int) -> bytes | None:
    """A dictionary trained (by another process, or another connection) since its cache was opened here."""
    for conn in list(_open):
        try:
            row = one_row(conn, "SELECT data FROM dictionaries WHERE dict_id=?", (dict_id,))
        except apsw.Error:  # closed, or a database without the table
            continue
        if row is not None:
            return bytes(row[0])
    return None


ev.set_dictionary_source(_source)


def load(conn: apsw.Connection) -> None:
    """Register every dictionary of this cache in this process (a connection's first step), and look for later
    ones in it when a payload names one this process does not have."""
    _open.add(conn)
    if _has_table(conn):
        for (data,) in conn.execute("SELECT data FROM dictionaries"):
            ev.register_dictionary(bytes(data))


def active(conn: apsw.Connection) -> int | None:
    """The id of the dictionary new events are sealed with (registered here), or None before there is one."""
    row = one_row(conn, "SELECT dict_id FROM dictionaries ORDER BY created_at DESC, dict_id DESC LIMIT 1") \
        if _has_table(conn) else None
    if row is None:
        return None
    dict_id = int(row[0])
    if not ev.has_dictionary(dict_id):
        data = one_row(conn, "SELECT data FROM dictionaries WHERE dict_id=?", (dict_id,))
        if data is None:
            return None
        ev.register_dictionary(bytes(data[0]))
    return dict_id


def maybe_train(conn: apsw.Connection) -> int | None:
    """Inside a write transaction: the active dictionary, trained from the newest stored events first if there is
    none yet and the cache holds enough of them (None otherwise)."""
    current = active(conn)
    if current is not None or not _has_table(conn):
        return current
    rows = conn.execute("SELECT payload FROM events ORDER BY seq DESC LIMIT ?", (SAMPLES,)).fetchall()
    if len(rows) < min(SAMPLES, MIN_EVENTS):
        return None
    samples = []
    for (blob,) in rows:
        try:
            samples.append(ev.serialized(bytes(cast(bytes, blob))))
        except ev.CodecError:
            continue  # kept for what it is; not a sample
    try:
        data = ev.train_dictionary(samples)
    except zstandard.ZstdError as exc:  # samples it cannot learn from: stay without, try again later
        logging.getLogger(__name__).info("no compression dictionary trained: %s", exc)
        return None
    dict_id = ev.register_dictionary(data)
    conn.execute("INSERT INTO dictionaries(dict_id, data, created_at) VALUES (?,?,?)", (dict_id, data, now_iso()))
    return dict_id
