"""Opening the cache database: apsw best practice, WAL, migrations, private file modes."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import apsw

from cxsync.cache.schema import MIGRATIONS
from cxsync.sync.clock import utcnow_iso
from cxsync.sync.errors import CxError

class CacheError(CxError):
    """The cache cannot be opened or used (corrupt, newer schema, unwritable)."""


class DiskFull(CxError):
    default_hint = "free some space on that disk (or move CXSYNC_HOME elsewhere); nothing captured so far is lost"


class NotWritable(CxError):
    default_hint = "make the folder writable, or point CXSYNC_HOME at a writable folder"


class CacheDamaged(CacheError):
    default_hint = ("move the file away and run `cxsync import` to capture the transcripts again, or restore it "
                    "from a backup; when only the search index is damaged, `cxsync rebuild` repairs it")


class CacheEmpty(CacheError):
    default_hint = "run `cxsync import` (or start the agent) to fill it"


def environment_error(exc: BaseException, path: str | os.PathLike[str] | None = None) -> CxError | None:
    """``exc`` as the environment problem it is (disk full, read-only or unwritable folder, damaged cache),
    with its own message and hint; None when it is none of those.  The one translator for the CLI and the
    cache: a user must never read "unexpected error" because their disk is full."""
    where = f" at {path}" if path is not None else ""
    if isinstance(exc, CxError):
        return exc
    if isinstance(exc, apsw.FullError) or (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)):
        what = exc.filename if isinstance(exc, OSError) and exc.filename else path or "the cache"
        return DiskFull(f"the disk is full: cannot write {what}")
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        target = exc.filename or path or "a cxsync folder"
        if exc.errno == errno.EROFS:
            return NotWritable(f"{target} is on a read-only file system")
        return NotWritable(f"permission denied: {target}")
    if isinstance(exc, (apsw.ReadOnlyError, apsw.CantOpenError, apsw.PermissionsError)):
        return NotWritable(f"cannot write the cache{where}: {_apsw_reason(exc)}")
    if isinstance(exc, (apsw.CorruptError, apsw.NotADBError)):
        return CacheDamaged(f"the cache{where} is damaged: {_apsw_reason(exc)}")
    if isinstance(exc, apsw.IOError):
        return CacheError(f"input/output error on the cache{where}: {_apsw_reason(exc)}",
                          "check the disk (dmesg, SMART); the cache can be rebuilt with `cxsync import`")
    return None


def _apsw_reason(exc: BaseException) -> str:
    return str(exc).split(": ", 1)[-1]


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
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise (environment_error(exc, p.parent) or exc) from exc
        flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE
        old_umask = os.umask(0o077)  # the db, -wal and -shm files are created private
    try:
        conn = apsw.Connection(str(p), flags=flags)
        conn.setbusytimeout(10_000)  # before anything reads: registering the FTS5 function reads the schema
        from cxsync.cache import fts

        # A file that is no database makes apsw's FTS5 lookup fail as "no FTS5": read the schema first, so
        # that a damaged cache is reported as damaged.
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()
        fts.register(conn)  # the index triggers call these; a migration may too
        if not readonly:
            # Rows of 1-3 KB (messages, stored events) waste a part of 4 KB pages. 8 KB pages pack them as well as
            # 16 KB ones (a million-message cache: 2.65 GB either way, 2.72 with 4 KB), and an insert at a random
            # key (the event ids, message and record keys) dirties half as much: that import took 151 s, against
            # 158 s with 16 KB pages and 166 s with 4 KB (measured). Only a new, empty database takes it (and
            # only before WAL mode is set).
            conn.execute("PRAGMA page_size=8192")
            _best_practice(conn)
        conn.setbusytimeout(10_000)
        if not readonly:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # Fewer, larger checkpoints: a backfill writes hundreds of MB; the WAL is truncated back afterwards.
            conn.execute("PRAGMA wal_autocheckpoint=4000")  # pages of 8 KB: 32 MB
            conn.execute("PRAGMA journal_size_limit=67108864")
            migrate(conn)
        else:
            check_version(conn)
    except (apsw.Error, OSError) as exc:
        raise (environment_error(exc, p) or CacheError(f"cannot open the cache at {p}: {exc}")) from exc
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


def require_schema(conn: apsw.Connection, path: str | os.PathLike[str]) -> None:
    """For readers: a cache that holds no schema yet is empty, not a database to run queries on."""
    if schema_version(conn) == 0:
        raise CacheEmpty(f"the cache at {path} is empty")


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
