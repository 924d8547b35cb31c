"""Where a `cxsync import` spends its time: the CPU of the importing process (the writer) and of its readers, the
writer's time in each SQL statement, and the checkpoints SQLite runs after commits (which the statement profile
does not count).  A tool for work on the import rate, beside ``bench_import`` (which gives the figures to quote).

    python -m tests.bench.profile_import --history /work/bench1m --messages 1000000
    python -m tests.bench.profile_import --history /work/bench1m --messages 1000000 --page-cache 200

``--history``: a folder ``bench_import --history`` uses (the generated history is made there once and kept).
``--page-cache`` (MB), ``--wal-autocheckpoint`` (pages) and ``--no-merge`` change the import for one run, to see
what a setting would give.  Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import resource
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import apsw


def _child(options: dict[str, Any], argv: list[str]) -> None:
    """The importing process, with its writable connections profiled and the settings of ``options`` applied."""
    from cxsync.agent import ingest
    from cxsync.cache import store

    statements: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    checkpoints = [0.0, 0]
    connect = store.connect

    def profiled(path: Any, *, readonly: bool = False) -> apsw.Connection:
        conn = connect(path, readonly=readonly)
        if readonly:
            return conn

        def statement(sql: str, nanoseconds: int) -> None:
            key = " ".join(sql.split())[:100]
            statements[key] += nanoseconds
            counts[key] += 1

        conn.set_profile(statement)
        if options["wal_autocheckpoint"] is not None:
            conn.execute(f"PRAGMA wal_autocheckpoint={int(options['wal_autocheckpoint'])}")
        every = int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])

        def checkpoint(c: apsw.Connection, name: str, pages: int) -> int:
            # What SQLite's own hook does after a commit (sqlite3WalDefaultHook), timed.
            if every > 0 and pages >= every:
                t0 = time.perf_counter()
                c.wal_checkpoint(name)
                checkpoints[0] += time.perf_counter() - t0
                checkpoints[1] += 1
            return apsw.SQLITE_OK

        conn.set_wal_hook(checkpoint)
        return conn

    store.connect = profiled  # type: ignore[assignment]
    if options["page_cache"] is not None:
        ingest.IMPORT_PAGE_CACHE = int(options["page_cache"]) << 20
    if options["no_merge"]:
        from cxsync.cache import fts

        tiered = fts.tiered

        @contextlib.contextmanager
        def unmerged(conn: apsw.Connection) -> Iterator[None]:
            with tiered(conn):
                fts._merging(conn, 0, 2000)  # set back by tiered, as its own settings
                yield

        fts.tiered = unmerged  # type: ignore[assignment]
        store.Cache.finish_merging = lambda self: None  # type: ignore[method-assign]

    def report() -> None:
        me = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # the readers, joined by now
        print(json.dumps({
            "writer_user": me.ru_utime, "writer_sys": me.ru_stime, "readers_user": kids.ru_utime,
            "readers_sys": kids.ru_stime, "checkpoint_s": checkpoints[0], "checkpoints": checkpoints[1],
            "statements": [(k, v / 1e9, counts[k]) for k, v in statements.most_common(15)],
        }), file=sys.stderr)

    sys.argv = ["cxsync", *argv]
    try:
        runpy.run_module("cxsync.agent", run_name="__main__")
    finally:
        report()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--history", type=Path, required=True)
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--page-cache", type=int, help="the importer's page cache, MB")
    ap.add_argument("--wal-autocheckpoint", type=int, help="pages after which a commit checkpoints")
    ap.add_argument("--no-merge", action="store_true", help="no FTS5 merging during the import nor at its end")
    args = ap.parse_args()
    from tests.bench.bench_import import _history

    with tempfile.TemporaryDirectory(prefix="cxsync-profile-") as tmp:
        work = Path(tmp)
        counts = _history(args.history, work / "claude", args.messages, args.seed)
        options = {"page_cache": args.page_cache, "wal_autocheckpoint": args.wal_autocheckpoint,
                   "no_merge": args.no_merge}
        env = {**os.environ, "CXSYNC_HOME": str(work / "cxhome")}
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "tests.bench.profile_import", "--child", json.dumps(options), "import", "--root",
             str(work / "claude"), "--json"], capture_output=True, env=env, cwd=Path(__file__).parents[2])
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"cxsync import failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
        got = json.loads(proc.stderr.decode().strip().splitlines()[-1])
    print(f"{counts.get('messages', args.messages):,} messages; import wall {wall:.1f} s; settings {options}")
    print(f"writer CPU {got['writer_user'] + got['writer_sys']:.1f} s ({got['writer_sys']:.1f} s in the kernel), "
          f"readers {got['readers_user'] + got['readers_sys']:.1f} s ({got['readers_sys']:.1f} s in the kernel)")
    print(f"checkpoints after commits: {got['checkpoints']}, {got['checkpoint_s']:.1f} s")
    print("the writer's SQL, by statement (seconds, executions; what FTS5 runs inside a statement counts in both):")
    for sql, seconds, n in got["statements"]:
        print(f"  {seconds:7.2f} {n:9,}  {sql}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        _child(json.loads(sys.argv[2]), sys.argv[3:])
    else:
        main()
