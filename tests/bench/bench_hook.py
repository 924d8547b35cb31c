"""SessionStart hook latency from process start, on a large cache, beside baselines measured in the same run.

    nice -n 10 python -m tests.bench.bench_hook --messages 1000000 --work /var/tmp/cxbench-hook

Builds (once; kept in --work and reused) a generated history of --messages messages imported through the real
ingest path, then runs the hook as Claude Code does — a new process, the hook JSON on stdin — --runs times for
each way it can be started (and ``cxsync recall TOPIC`` --recall-runs times), and prints median and p99 wall and
CPU time beside the bare interpreter start and beside ``cxsync --version`` (the CLI's own start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build(work: Path, messages: int) -> Path:
    """The CXSYNC_HOME holding a cache of ``messages`` generated messages (reused when already built)."""
    home = work / "cxhome"
    done = work / "built.json"
    if done.exists() and json.loads(done.read_text())["messages"] == messages:
        return home
    from cxsync.agent.ingest import Ingestor
    from cxsync.cache import open_cache
    from cxsync.sync import events as ev
    from tests.bench.history import generate

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    gen = generate(work / "claude", messages)
    print(f"generated {gen['messages']:,} messages in {gen['sessions']:,} sessions "
          f"({gen['bytes'] / 1e6:.0f} MB, {time.perf_counter() - t0:.0f}s)", flush=True)
    db = home / "data" / "cache.db"
    cache = open_cache(db, route=lambda e: ev.route(e, ["u/bench"]))
    t0 = time.perf_counter()
    stats = Ingestor(cache, ev.Identity("bench", "bench", "bench"), [work / "claude"]).import_all()
    cache.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    cache.close()
    print(f"imported {stats.messages:,} messages in {time.perf_counter() - t0:.0f}s", flush=True)
    shutil.rmtree(work / "claude")  # the cache is what the hook reads
    done.write_text(json.dumps({"messages": messages, "imported": stats.messages}))
    return home


def timed(argv: list[str], stdin: str, env: dict[str, str], runs: int) -> tuple[list[float], list[float], str]:
    """Wall time from process start to exit, and the CPU time the process used (user + system): on a shared,
    loaded machine the wall time includes waiting for a core; the CPU time does not."""
    import resource

    out = ""
    lat, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        r = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, timeout=60)
        lat.append((time.perf_counter() - t) * 1000)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000)
        assert r.returncode == 0, r.stderr
        out = r.stdout
    lat.sort()
    cpu.sort()
    return lat, cpu, out


def p99(sorted_ms: list[float]) -> float:
    """The 99th percentile (nearest rank) of a sorted sample."""
    import math

    return sorted_ms[max(0, math.ceil(len(sorted_ms) * 0.99) - 1)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--recall-runs", type=int, default=20)
    ap.add_argument("--work", type=Path, help="Where to build and keep the cache (default: a temporary folder).")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cxbench-hook-"))
    try:
        home = build(work, args.messages)
        env = {**os.environ, "CXSYNC_HOME": str(home)}
        db = home / "data" / "cache.db"
        import apsw

        conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
        n_msgs = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        project, n_sessions = conn.execute(
            "SELECT project, count(*) FROM sessions GROUP BY project ORDER BY 2 DESC LIMIT 1").fetchone()
        conn.close()
        stdin = json.dumps({"session_id": "bench-new-session", "transcript_path": "/dev/null", "cwd": project,
                            "permission_mode": "default", "hook_event_name": "SessionStart", "source": "startup"})
        exe = Path(sys.executable).parent / "cxsync"
        rows = [
            ("python -c pass (interpreter start)", [sys.executable, "-c", "pass"]),
            ("cxsync --version (CLI start)", [str(exe), "--version"]),
            ("cxsync hook session-start", [str(exe), "hook", "session-start"]),
            ("python -m cxsync.agent.hook", [sys.executable, "-m", "cxsync.agent.hook", "session-start"]),
            ("cxsync recall 'cache sync error' (topic)", [str(exe), "recall", "cache sync error", "--json"]),
        ]
        print(f"\ncache: {n_msgs:,} messages, {db.stat().st_size / 1e6:.0f} MB; hook project {project} "
              f"({n_sessions} sessions); {args.runs} runs each\n")
        print(f"{'':42}{'median ms':>11}{'p99 ms':>9}{'max ms':>9}{'cpu median':>12}{'cpu p99':>9}")
        answer = ""
        for name, argv in rows:
            lat, cpu, out = timed(argv, stdin, env, args.recall_runs if "recall" in name else args.runs)
            if "hook" in name:
                answer = out
            if "recall" in name:
                assert json.loads(out)["items"], "the topic recalled nothing"
            print(f"{name:42}{statistics.median(lat):>11.1f}{p99(lat):>9.1f}{lat[-1]:>9.1f}"
                  f"{statistics.median(cpu):>12.1f}{p99(cpu):>9.1f}", flush=True)
        context = json.loads(answer)["hookSpecificOutput"]["additionalContext"]
        print(f"\nanswer: {len(context):,} characters, {context.count('### ')} sessions recalled")
        print("goal: hook p99 < 300 ms from process start on a 1M-message cache")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
