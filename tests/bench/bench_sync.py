"""Sync benchmark on the embedded log: push and pull throughput, and A-to-B propagation latency.

    python -m tests.bench.bench_sync --messages 20000 --events 200

Throughput is measured in-process (engine on a populated cache) beside the bare adapter baseline (the same
events appended straight to a fresh log, read straight back).  Propagation runs two real `cxsync run` agents
(separate CXSYNC_HOMEs, one log file): a line appended to a transcript on A, until it is searchable in B's cache.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import apsw

from cxsync.agent.ingest import Ingestor
from cxsync.cache import open_cache
from cxsync.sync import events as ev
from cxsync.sync.engine import SyncEngine
from cxsync.sync.sqlite_log import SqliteEventLog
from tests import transcripts as T
from tests.bench.history import generate


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def throughput(work: Path, messages: int) -> None:
    home = work / "claude"
    generate(home, messages)
    route = lambda e: ev.route(e, ["u/bench"])  # noqa: E731
    a = open_cache(work / "a.db", route=route)
    Ingestor(a, ev.Identity("bench", "bench", "A"), [home]).import_all()
    n = a.outbox_counts()["pending"]
    events = [ev.decode(p) for batch in a.iter_events() for _, p in batch]

    base_log = SqliteEventLog(work / "baseline-log.db", "bench")
    t0 = time.perf_counter()
    for i in range(0, len(events), 500):
        base_log.append("u/bench", events[i:i + 500])
    base_push = time.perf_counter() - t0
    t0 = time.perf_counter()
    cur, got = None, 0
    while True:
        page = base_log.read("u/bench", cur, 500)
        if not page:
            break
        got += len(page)
        cur = page[-1].cursor
    base_pull = time.perf_counter() - t0
    base_log.close()

    log = SqliteEventLog(work / "log.db", "bench")
    t0 = time.perf_counter()
    SyncEngine(a, log, tenant="bench", subscribe=["u/bench"]).push_all()
    push = time.perf_counter() - t0
    b = open_cache(work / "b.db", route=route)
    t0 = time.perf_counter()
    r = SyncEngine(b, log, tenant="bench", subscribe=["u/bench"]).pull_stream("u/bench")
    pull = time.perf_counter() - t0
    assert r.applied == n, (r.applied, n)
    log.close()
    print(f"{n:,} events ({messages:,} messages)")
    print(f"{'':34}{'engine':>12}{'bare adapter':>14}{'ratio':>8}")
    print(f"{'push: outbox -> log (events/s)':34}{n / push:>12,.0f}{n / base_push:>14,.0f}{base_push / push:>8.2f}")
    print(f"{'pull: log -> cache (events/s)':34}{n / pull:>12,.0f}{n / base_pull:>14,.0f}{base_pull / pull:>8.2f}")
    print("  (the pull baseline only reads; the engine also applies into the cache, FTS5 included)")
    a.close()
    b.close()


def propagation(work: Path, events: int) -> None:
    log = work / "prop-log.db"
    procs, homes = [], []
    for name in ("A", "B"):
        home = work / f"cx-{name}"
        claude = work / f"claude-{name}"
        (claude / "projects").mkdir(parents=True)
        home.mkdir()
        (home / "config.toml").write_text(
            f'[identity]\ntenant = "bench"\nuser = "bob"\nmachine = "{name}"\n'
            f'[transcripts]\nroots = ["{claude}"]\n[sync]\ntarget = "sqlite:{log}"\n')
        env = {**os.environ, "CXSYNC_HOME": str(home)}
        procs.append(subprocess.Popen([sys.executable, "-m", "cxsync.agent", "run"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        homes.append((home, claude))
    try:
        time.sleep(3)
        (_, claude_a), (home_b, _) = homes
        sid = "b5e7c400-0000-4000-8000-000000000001"
        f = T.session_file(claude_a, sid)
        T.write(f, [T.user(sid, "warm up")])
        db_b = home_b / "data" / "cache.db"
        deadline = time.monotonic() + 30
        conn = None
        while time.monotonic() < deadline:
            try:
                conn = apsw.Connection(str(db_b), flags=apsw.SQLITE_OPEN_READONLY)
                if conn.execute("SELECT count(*) FROM messages").fetchone()[0]:
                    break
            except apsw.Error:
                pass
            time.sleep(0.05)
        assert conn is not None
        lat = []
        for i in range(events):
            word = f"propword{i}z"
            t0 = time.perf_counter()
            T.write(f, [T.user(sid, f"hello {word}")], mode="ab")
            while True:
                if conn.execute("SELECT 1 FROM messages_fts WHERE messages_fts MATCH ?", (word,)).fetchone():
                    break
                if time.perf_counter() - t0 > 30:
                    raise SystemExit(f"{word} did not reach B in 30 s")
                time.sleep(0.002)
            lat.append((time.perf_counter() - t0) * 1000)
        conn.close()
        print(f"\nA-to-B propagation over {events} appends (transcript line on A -> searchable in B's cache,"
              " both agents running):")
        print(f"  p50 {statistics.median(lat):.0f} ms   p99 {pct(lat, 99):.0f} ms   max {max(lat):.0f} ms")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--events", type=int, default=200)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cxsync-bench-"))
    try:
        throughput(work, args.messages)
        propagation(work, args.events)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
