"""The running agent over a large cache: idle CPU, resident memory, append-to-searchable latency, status time.

    python -m tests.bench.bench_agent --messages 1000000 --idle 60

Builds a cache of N messages through ``cache.apply`` (the same path as ingest, without writing GBs of JSONL),
starts a real `cxsync run` on it, and measures from outside: CPU from /proc/<pid>/stat over the idle window,
VmRSS, the latency from appending a transcript line to seeing it in the cache's FTS index, and the wall time of
`cxsync status` beside a bare interpreter start (`python -c pass`) measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import apsw

from cxsync.cache import open_cache
from cxsync.sync import events as ev
from tests import transcripts as T
from tests.bench.history import _text, _vocab

CLK = os.sysconf("SC_CLK_TCK")


def build_cache(db: Path, n: int, per_session: int = 400) -> None:
    rng = random.Random(11)
    words = _vocab(rng)
    ident = ev.Identity("bench", "bob", "M")
    cache = open_cache(db, route=lambda e: [])
    batch: list[ev.ContextEvent] = []
    t0 = time.perf_counter()
    for i in range(n):
        sid = f"sess-{i // per_session:06d}"
        content = _text(rng, words, 8, 120)
        batch.append(ev.message_indexed(ident, {
            "key": f"u:{i}", "hash": f"{i:064x}", "content": content, "role": "user" if i % 2 == 0 else "assistant",
            "session": sid, "root_session": sid, "project": f"/home/dev/p{i % 20}",
            "occurred_at": f"2026-{1 + i % 12:02d}-01T00:00:{i % 60:02d}.000Z", "parts": 1,
            "records": [], "metadata": {"content_length": len(content)},
        }))
        if len(batch) == 5000:
            cache.apply(batch, "remote")
            batch = []
            if (i + 1) % 100_000 == 0:
                print(f"  built {i + 1:,} messages ({time.perf_counter() - t0:.0f}s)", flush=True)
    if batch:
        cache.apply(batch, "remote")
    cache.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    cache.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wall(cmd: list[str], env: dict[str, str], runs: int = 15) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append((time.perf_counter() - t0) * 1000)
    return sorted(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--idle", type=float, default=60.0)
    ap.add_argument("--appends", type=int, default=100)
    ap.add_argument("--home", type=Path, help="reuse (or keep) the built CXSYNC_HOME here")
    ap.add_argument("--target", default="none", help='sync.target for the run, e.g. "sqlite:/tmp/log.db"')
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cxsync-agent-bench-"))
    home = args.home or work / "cxhome"
    claude = work / "claude"
    (claude / "projects").mkdir(parents=True)
    db = home / "data" / "cache.db"
    try:
        if not db.exists():
            print(f"building a cache of {args.messages:,} messages …", flush=True)
            db.parent.mkdir(parents=True, exist_ok=True)
            build_cache(db, args.messages)
        (home / "config.toml").write_text('[identity]\ntenant = "bench"\nuser = "bob"\nmachine = "M"\n'
                                          f'[transcripts]\nroots = ["{claude}"]\n[sync]\ntarget = "{args.target}"\n')
        env = {**os.environ, "CXSYNC_HOME": str(home)}
        n = apsw.Connection(str(db)).execute("SELECT count(*) FROM messages").fetchone()[0]
        print(f"cache: {n:,} messages, {db.stat().st_size / 1e6:.0f} MB; sync.target = {args.target}")
        sid = "be0c4000-0000-4000-8000-000000000001"
        f = T.session_file(claude, sid)
        T.write(f, [T.user(sid, "first line")])
        proc = subprocess.Popen([sys.executable, "-m", "cxsync.agent", "run"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(5)  # start-up rescan settles
            c0, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(args.idle)
            c1, t1 = cpu_seconds(proc.pid), time.monotonic()
            idle_pct = 100 * (c1 - c0) / (t1 - t0)
            rss = rss_mb(proc.pid)
            conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
            lat = []
            for i in range(args.appends):
                word = f"benchword{i}q"
                ts = time.perf_counter()
                T.write(f, [T.user(sid, f"appended {word}")], mode="ab")
                while not conn.execute("SELECT 1 FROM messages_fts WHERE messages_fts MATCH ?", (word,)).fetchone():
                    if time.perf_counter() - ts > 30:
                        raise SystemExit("append not searchable within 30 s")
                    time.sleep(0.002)
                lat.append((time.perf_counter() - ts) * 1000)
                time.sleep(0.05)
            conn.close()
            rss_after = rss_mb(proc.pid)
            status = wall([sys.executable, "-m", "cxsync.agent", "status", "--json"], env)
            bare = wall([sys.executable, "-c", "pass"], env)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        lat.sort()
        print(f"\n{'':40}{'measured':>12}{'target':>10}")
        print(f"{'idle CPU over %.0f s (%% of one core)' % args.idle:40}{idle_pct:>12.3f}{'< 0.5':>10}")
        print(f"{'resident memory after start (MB)':40}{rss:>12.1f}{'< 150':>10}")
        print(f"{'resident memory after appends (MB)':40}{rss_after:>12.1f}{'< 150':>10}")
        print(f"{'append -> searchable p50 (ms)':40}{statistics.median(lat):>12.1f}")
        print(f"{'append -> searchable p99 (ms)':40}{lat[int(len(lat) * 0.99) - 1]:>12.1f}{'< 1000':>10}")
        print(f"{'`cxsync status` wall, median (ms)':40}{statistics.median(status):>12.0f}{'< 300':>10}")
        print(f"{'  bare `python -c pass`, median (ms)':40}{statistics.median(bare):>12.0f}")
    finally:
        if args.home is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            shutil.rmtree(claude.parent, ignore_errors=True) if False else None


if __name__ == "__main__":
    main()
