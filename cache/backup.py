"""Backups of a SQLite database (the cache, or a gateway's embedded log): online, consistent, compressed, checked.

``snapshot`` uses SQLite's online backup API in one step, which holds a read transaction for the whole copy: in WAL
mode the writer goes on committing meanwhile and the copy is exactly the database as of the moment the read
began.  The copy is checked (``PRAGMA integrity_check``) before it is compressed (zstandard) into
``<name>-<UTC time>.db.zst`` beside a JSON manifest with its counts and SHA-256.  ``restore`` decompresses and checks
again before it replaces anything, and keeps the replaced database (with its -wal/-shm) aside.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import apsw
import orjson
import zstandard

from cxsync.cache.db import scalar
from cxsync.sync.errors import CxError

log = logging.getLogger("cxsync.backup")

SUFFIX = ".db.zst"
MANIFEST = ".json"
_CHUNK = 1 << 20


class BackupError(CxError):
    """A backup cannot be taken, read or restored; nothing was replaced."""


@dataclass(frozen=True)
class Backup:
    path: Path
    created_at: str
    size: int
    manifest: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "created_at": self.created_at, "size": self.size, **{
            k: v for k, v in self.manifest.items() if k not in ("path", "created_at", "size")}}


def _private_dir(path: Path) -> None:
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    if created:
        os.chmod(path, 0o700)


def _counts(conn: apsw.Connection) -> dict[str, Any]:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    out: dict[str, Any] = {}
    for t in ("messages", "sessions", "events", "knowledge"):
        if t in tables:
            out[t] = int(scalar(conn, f"SELECT count(*) FROM {t}"))
    if "migrations" in tables:
        out["schema_version"] = int(scalar(conn, "SELECT coalesce(max(version), 0) FROM migrations"))
    return out


def integrity(path: Path) -> str:
    """``ok``, or what SQLite's integrity check found (first lines)."""
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            rows = [str(r[0]) for r in conn.execute("PRAGMA integrity_check(20)")]
        finally:
            conn.close()
    except apsw.Error as exc:
        return f"not a readable SQLite database: {exc}"
    return "ok" if rows == ["ok"] else "; ".join(rows)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def snapshot(source: Path, dest_dir: Path, *, name: str | None = None, keep: int | None = None) -> Backup:
    """Take a consistent online snapshot of ``source`` into ``dest_dir``; then keep only the newest ``keep``."""
    source = Path(source)
    if not source.is_file():
        raise BackupError(f"nothing to back up: no database at {source}", "run `cxsync import` first")
    _private_dir(dest_dir)
    stamp = datetime.now(timezone.utc)
    base = f"{name or source.stem}-{stamp.strftime('%Y%m%dT%H%M%S.%fZ')}"
    final = dest_dir / (base + SUFFIX)
    fd, tmp_name = tempfile.mkstemp(prefix=".snapshot-", suffix=".db", dir=dest_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            src = apsw.Connection(str(source), flags=apsw.SQLITE_OPEN_READONLY)
            src.set_busy_timeout(10_000)
            dst = apsw.Connection(str(tmp))
            with dst.backup("main", src, "main") as b:
                b.step(-1)  # all pages in one step: one read transaction, one consistent state
            dst.execute("PRAGMA journal_mode=DELETE")  # the copy is one self-contained file, no -wal/-shm
            counts = _counts(dst)
            dst.close()
            src.close()
        except apsw.Error as exc:
            raise BackupError(f"cannot read {source} for a backup: {exc}", "check the file and free disk space") \
                from None
        check = integrity(tmp)
        if check != "ok":
            raise BackupError(f"the database at {source} fails its integrity check: {check}",
                              "the backup was not written; restore an older backup or run `cxsync rebuild`")
        part = final.with_name(final.name + ".part")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(tmp, "rb") as fin, os.fdopen(fd, "wb") as fout:
            zstandard.ZstdCompressor(level=6, threads=-1).copy_stream(fin, fout, read_size=_CHUNK, write_size=_CHUNK)
            fout.flush()
            os.fsync(fout.fileno())
        manifest = {"created_at": stamp.isoformat(timespec="seconds").replace("+00:00", "Z"),
                    "source": str(source), "database_bytes": tmp.stat().st_size, "sha256": _sha256(part),
                    "integrity": "ok", **counts}
        os.replace(part, final)
        mpath = final.with_name(base + MANIFEST)
        fd = os.open(mpath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    finally:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(tmp) + suffix).unlink(missing_ok=True)
    if keep is not None:
        prune(dest_dir, keep, name=name or source.stem)
    return Backup(final, manifest["created_at"], final.stat().st_size, manifest)


def list_backups(dest_dir: Path, name: str | None = None) -> list[Backup]:
    """The backups in ``dest_dir``, newest first (by the time in their names, which sorts)."""
    if not dest_dir.is_dir():
        return []
    out = []
    for p in dest_dir.glob(f"{name or '*'}-*{SUFFIX}"):
        mpath = p.with_name(p.name[:-len(SUFFIX)] + MANIFEST)
        try:
            manifest = orjson.loads(mpath.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            manifest = {}
        created = str(manifest.get("created_at") or datetime.fromtimestamp(p.stat().st_mtime, timezone.utc)
                      .isoformat(timespec="seconds").replace("+00:00", "Z"))
        out.append(Backup(p, created, p.stat().st_size, manifest))
    return sorted(out, key=lambda b: b.path.name, reverse=True)


def prune(dest_dir: Path, keep: int, name: str | None = None) -> list[Path]:
    """Delete all but the newest ``keep`` backups (and their manifests); return what was deleted."""
    if keep < 1:
        raise BackupError(f"--keep must be at least 1, got {keep}", "keep at least the backup just taken")
    gone = []
    for b in list_backups(dest_dir, name)[keep:]:
        b.path.unlink(missing_ok=True)
        b.path.with_name(b.path.name[:-len(SUFFIX)] + MANIFEST).unlink(missing_ok=True)
        gone.append(b.path)
    return gone


def _manifest_of(path: Path) -> dict[str, Any]:
    mpath = path.with_name(path.name[:-len(SUFFIX)] + MANIFEST) if path.name.endswith(SUFFIX) else None
    if mpath is None or not mpath.is_file():
        return {}
    try:
        data = orjson.loads(mpath.read_bytes())
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def restore(backup: Path, target: Path, *, newest_schema: int | None = None) -> Path | None:
    """Replace ``target`` with the database in ``backup`` after checking it; return where the replaced database
    was kept (None when there was none).  The caller makes sure no process has ``target`` open."""
    backup = Path(backup)
    if not backup.is_file():
        raise BackupError(f"no backup at {backup}", "`cxsync backup list` shows the backups")
    manifest = _manifest_of(backup)
    if manifest.get("sha256") and manifest["sha256"] != _sha256(backup):
        raise BackupError(f"{backup} does not match its manifest's SHA-256: the file is damaged",
                          "nothing was replaced; restore another backup")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".restore-", suffix=".db", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with open(backup, "rb") as fin, os.fdopen(fd, "wb") as fout:
            try:
                zstandard.ZstdDecompressor().copy_stream(fin, fout, read_size=_CHUNK, write_size=_CHUNK)
            except zstandard.ZstdError as exc:
                raise BackupError(f"{backup} is not a readable backup: {exc}",
                                  "nothing was replaced; restore another backup") from None
            fout.flush()
            os.fsync(fout.fileno())
        check = integrity(tmp)
        if check != "ok":
            raise BackupError(f"the database in {backup} fails its integrity check: {check}",
                              "nothing was replaced; restore another backup")
        conn = apsw.Connection(str(tmp), flags=apsw.SQLITE_OPEN_READONLY)
        version = _counts(conn).get("schema_version")
        conn.close()
        if newest_schema is not None and version is not None and version > newest_schema:
            raise BackupError(f"the backup has schema version {version}, newer than this cxsync knows "
                              f"({newest_schema})", "upgrade cxsync, then restore")
        aside = None
        if target.exists():
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            aside = target.with_name(f"{target.name}.replaced-{stamp}")
            for suffix in ("", "-wal", "-shm"):
                p = Path(str(target) + suffix)
                if p.exists():
                    shutil.move(str(p), str(aside) + suffix)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
        return aside
    finally:
        tmp.unlink(missing_ok=True)


DAY = 24 * 3600.0


def run_daily(source: Path, dest_dir: Path, keep: int, stop: threading.Event, *, every: float = DAY,
              check: float = 3600.0) -> None:
    """The agent's backup worker: a snapshot whenever the newest one is ``every`` seconds old (at once when there
    is none), woken hourly; a failed backup is logged and retried at the next check, never fatal."""
    name = Path(source).stem
    while not stop.is_set():
        newest = next(iter(list_backups(dest_dir, name)), None)
        age = time.time() - newest.path.stat().st_mtime if newest else None
        if (age is None or age >= every) and Path(source).exists():
            try:
                b = snapshot(source, dest_dir, name=name, keep=keep)
                log.info("daily backup written to %s", b.path)
                age = 0.0
            except (BackupError, OSError) as exc:
                log.warning("daily backup failed: %s", exc)
        stop.wait(min(check, every - (age or 0.0)) if age is not None else check)
