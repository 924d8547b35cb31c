"""Opening the cache database: apsw best practice, WAL, migrations, private file modes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import apsw

from cxsync.cache.schema import MIGRATIONS
from cxsync.sync.clock import utcnow_iso
from cxsync.sync.errors import CxError

class CacheError(CxError):
    """The cache cannot be opened or used (corrupt, newer schema, unwritable)."""


def _best_practice(conn: apsw.Connection) -> None:
    """apsw's recommended connection settings, applied to our connections only: ``apsw.bestpractice.apply``
    would install them as process-wide hooks on every connection (the event log's, a test's), and route
    SQLite's log into ours."""
    import apsw.bestpractice  # only writers need it; `cxsync status` opens read-only

    for fn in apsw.bestpractice.recommended:
        if fn is not apsw.bestpractice.library_logging:
            fn(conn)


def scalar(conn: apsw.Connection, sql: str, args: Any = ()) -> Any:
    """The first column of the first row (queries that always return one, like count or max)."""
    row = conn.execute(sql, args).fetchone()
    if row is None:
        raise CacheError(f"no row for {sql!r}")
    return row[0]


def one_row(conn: apsw.Connection, sql: str, args: Any = ()) -> tuple[Any, ...] | None:
    row = conn.execute(sql, args).fetchone()
    return None if row is None else tuple(row)


now_iso = utcnow_iso


def connect(path: str | os.PathLike[str], *, readonly: bool = False) -> apsw.Connection:
    p = Path(path)
    if readonly:
        if not p.exists():
            raise CacheError(f"no cache at {p}", "run `cxsync import` first")
        flags = apsw.SQLITE_OPEN_READONLY
    else:
        p.parent.mkdir(parents=True, exist_ok=True)
        flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
        old_umask = os.umask(0o077)  # the db, -wal and -shm files are created private
    try:
        conn = apsw.Connection(str(p), flags=flags)
        if not readonly:
            _best_practice(conn)
        conn.setbusytimeout(10_000)
        if not readonly:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # Fewer, larger checkpoints: a backfill writes hundreds of MB; the WAL is truncated back afterwards.
            conn.execute("PRAGMA wal_autocheckpoint=8000")
            conn.execute("PRAGMA journal_size_limit=67108864")
            migrate(conn)
        else:
            check_version(conn)
    except apsw.Error as exc:
        raise CacheError(f"cannot open the cache at {p}: {exc}") from exc
    finally:
        if not readonly:
            os.umask(old_umask)
    conn.execute("PRAGMA cache_size=-32000")
    return conn


def schema_version(conn: apsw.Connection) -> int:
    row = conn.execute(
        "SELECT name FROM sqlite_schema WHERE type='table' AND name='migrations'").fetchone()
    if row is None:
        return 0
    v = scalar(conn, "SELECT max(version) FROM migrations")
    return int(v or 0)


def check_version(conn: apsw.Connection) -> None:
    current, latest = schema_version(conn), MIGRATIONS[-1][0]
    if current > latest:
        raise CacheError(f"the cache has schema version {current}, newer than this cxsync knows ({latest})",
                         "upgrade cxsync")


def migrate(conn: apsw.Connection) -> None:
    check_version(conn)
    with conn:
        conn.execute("CREATE TABLE IF NOT EXISTS migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                     " applied_at TEXT NOT NULL)")
        current = schema_version(conn)
        for version, name, sql in MIGRATIONS:
            if version > current:
                conn.execute(sql)
                conn.execute("INSERT INTO migrations(version, name, applied_at) VALUES (?,?,?)",
                             (version, name, now_iso()))
