"""Benchmark of the embedded SQLite event log; prints a table, asserts nothing.

    python -m tests.bench.bench_sqlite_log [--dir DIR] [--events N] [--wakeups N]

Each figure has a baseline measured in the same run: bare apsw INSERT/SELECT of the same encoded payloads with
the same journal settings (what the log's bookkeeping — dedup look-ups, the clock row, two indexes, decoding —
costs on top of SQLite), and a bare pipe message between two processes (the floor for any cross-process wake-up).
Put ``--dir`` on the disk you care about: with ``synchronous=FULL`` single-event commits are bound by fsync.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, cast

import apsw

from cxsync.sync.events import ContextEvent, Identity, decode, encode, message_indexed
from cxsync.sync.sqlite_log import SqliteEventLog

TENANT = "acme"
STREAM = "u/alice"
SPAWN = multiprocessing.get_context("spawn")
WORDS = ("sync", "cache", "event", "cursor", "tenant", "stream", "commit", "watch", "session", "transcript",
         "assistant", "tool", "result", "error", "python", "sqlite", "foundation", "latency", "the", "a", "of")


def sample_events(n: int, prefix: str, seed: int = 1) -> list[ContextEvent]:
    """Message events of realistic size (~1-2 KB of text, compressed by the codec)."""
    rng = random.Random(seed)
    ident = Identity(TENANT, "alice", "laptop")
    return [
        message_indexed(ident, {
            "session": f"s{i // 50}", "key": f"{prefix}{i}", "hash": f"{rng.getrandbits(64):016x}",
            "role": "assistant", "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(150, 300))),
            "occurred_at": "2025-01-01T00:00:00.000000Z",
        })
        for i in range(n)
    ]


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>10,.0f} ev/s"


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---- throughput -------------------------------------------------------------------------------------------------


def bench_append(directory: Path, events: list[ContextEvent], batch: int) -> float:
    log = SqliteEventLog(directory / f"append-{batch}.db", TENANT)
    try:
        return timed(lambda: [log.append(STREAM, events[i:i + batch]) for i in range(0, len(events), batch)])
    finally:
        log.close()


def bare_connection(path: Path) -> apsw.Connection:
    conn = apsw.Connection(str(path))
    conn.pragma("journal_mode", "wal")
    conn.pragma("synchronous", "FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS t(seq INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
    return conn


def bench_bare_insert(directory: Path, payloads: list[bytes], batch: int) -> float:
    conn = bare_connection(directory / f"bare-{batch}.db")

    def run() -> None:
        for i in range(0, len(payloads), batch):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO t(payload) VALUES (?)", [(p,) for p in payloads[i:i + batch]])
            conn.execute("COMMIT")

    try:
        return timed(run)
    finally:
        conn.close()


def bench_read(directory: Path, page: int) -> tuple[float, int]:
    log = SqliteEventLog(directory / "append-100.db", TENANT)
    count = 0

    def run() -> None:
        nonlocal count
        after = None
        while entries := log.read(STREAM, after, page):
            count += len(entries)
            after = entries[-1].cursor

    try:
        return timed(run), count
    finally:
        log.close()


def bench_bare_select(directory: Path, page: int) -> tuple[float, int]:
    conn = bare_connection(directory / "bare-100.db")
    count = 0

    def run() -> None:
        nonlocal count
        after = 0
        while rows := conn.execute("SELECT seq, payload FROM t WHERE seq > ? ORDER BY seq LIMIT ?",
                                   (after, page)).fetchall():
            count += len(rows)
            after = int(cast(int, rows[-1][0]))

    try:
        return timed(run), count
    finally:
        conn.close()


# ---- wake-up latency ---------------------------------------------------------------------------------------------


def _appender(path: str, rounds: int, conn: Any) -> None:
    """Child process: on each "go", pause a little (the parent is blocked in wait by then), append one event."""
    log = SqliteEventLog(path, TENANT)
    events = sample_events(rounds, "wake-", seed=2)
    rng = random.Random(3)
    for event in events:
        if conn.recv() != "go":
            break
        time.sleep(rng.uniform(0.003, 0.010))
        started = time.monotonic()  # CLOCK_MONOTONIC is shared by the processes of one machine
        log.append(STREAM, [event])
        conn.send((started, time.monotonic()))
    log.close()


def _pipe_sender(rounds: int, conn: Any) -> None:
    rng = random.Random(3)
    for _ in range(rounds):
        if conn.recv() != "go":
            break
        time.sleep(rng.uniform(0.003, 0.010))
        conn.send(time.monotonic())


def bench_wakeups(directory: Path, rounds: int, notify: bool) -> tuple[list[float], list[float]]:
    """Milliseconds from the other process's append() returning / starting to the waiter being awake."""
    path = directory / f"wake-{notify}.db"
    waiter = SqliteEventLog(path, TENANT, notify=notify)
    parent, child = SPAWN.Pipe()
    proc = SPAWN.Process(target=_appender, args=(str(path), rounds, child))
    proc.start()
    from_return, from_start = [], []
    head = None
    try:
        for _ in range(rounds):
            parent.send("go")
            woke = waiter.wait(STREAM, head, 5.0)
            woke_at = time.monotonic()
            started, returned = parent.recv()
            if not woke:
                raise RuntimeError("a waiter missed an append for 5 s")
            from_return.append((woke_at - returned) * 1000)
            from_start.append((woke_at - started) * 1000)
            head = waiter.read(STREAM, head, 10)[-1].cursor
    finally:
        parent.send("stop")
        proc.join(30)
        waiter.close()
    return from_return, from_start


def bench_pipe(rounds: int) -> list[float]:
    parent, child = SPAWN.Pipe()
    proc = SPAWN.Process(target=_pipe_sender, args=(rounds, child))
    proc.start()
    out = []
    try:
        for _ in range(rounds):
            parent.send("go")
            sent = parent.recv()
            out.append((time.monotonic() - sent) * 1000)
    finally:
        parent.send("stop")
        proc.join(30)
    return out


def idle_wait_cpu(directory: Path, notify: bool, seconds: float = 2.0) -> float:
    """CPU milliseconds a waiter burns per second while nothing happens (no polling loops, says the budget)."""
    log = SqliteEventLog(directory / f"idle-{notify}.db", TENANT, notify=notify)
    try:
        (head,) = log.append(STREAM, sample_events(1, "idle-"))
        log.wait(STREAM, head, 0.05)  # start the watch outside the measurement
        cpu = time.process_time()
        log.wait(STREAM, head, seconds)
        return (time.process_time() - cpu) * 1000 / seconds
    finally:
        log.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def latency_cell(values: list[float]) -> str:
    return f"p50 {statistics.median(values):5.2f} / p99 {pct(values, 0.99):5.2f} / max {max(values):5.2f} ms"


# ---- main --------------------------------------------------------------------------------------------------------


def filesystem_of(directory: Path) -> str:
    try:
        out = subprocess.run(["df", "-T", str(directory)], capture_output=True, text=True, timeout=5).stdout
        return out.splitlines()[-1].split()[1]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where to put the log files (default: a temp dir)")
    parser.add_argument("--events", type=int, default=20_000, help="events for the batch-of-100 and read figures")
    parser.add_argument("--singles", type=int, default=1_000, help="events appended one per commit")
    parser.add_argument("--wakeups", type=int, default=200, help="appends from another process per latency row")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="cxsync-bench-") as tmp:
        directory = Path(tmp)
        events = sample_events(args.events, "e")
        singles = events[: args.singles]
        encode_s = timed(lambda: [encode(e) for e in events])
        payloads = [encode(e) for e in events]
        decode_s = timed(lambda: [decode(p) for p in payloads])
        avg = sum(map(len, payloads)) / len(payloads)

        rows: list[tuple[str, str, str]] = []
        t = bench_append(directory, events, 100)
        b = bench_bare_insert(directory, payloads, 100)
        rows.append((f"append, batches of 100 ({len(events):,} events)", rate(len(events), t),
                     rate(len(events), b) + " bare INSERT, pre-encoded"))
        t = bench_append(directory, singles, 1)
        b = bench_bare_insert(directory, payloads[: len(singles)], 1)
        rows.append((f"append, batches of 1 ({len(singles):,} commits)", rate(len(singles), t),
                     rate(len(singles), b) + " bare INSERT, pre-encoded"))
        (t, n), (b, m) = bench_read(directory, 1000), bench_bare_select(directory, 1000)
        rows.append((f"read, pages of 1000 ({n:,} events)", rate(n, t), rate(m, b) + " bare SELECT, no decode"))
        rows.append(("codec alone: events.encode / events.decode", rate(len(events), encode_s).strip() + " / "
                     + rate(len(events), decode_s).strip(), ""))

        pipe = bench_pipe(args.wakeups)
        for notify, name in ((True, "notified"), (False, "notify=False (50 ms re-check)")):
            from_return, from_start = bench_wakeups(directory, args.wakeups, notify)
            rows.append((f"wait wake-up, {name}, {args.wakeups} appends", "", ""))
            rows.append(("  from the other process's append() return", latency_cell(from_return),
                         latency_cell(pipe) + " bare pipe message"))
            rows.append(("  from its append() call (commit + fsync incl.)", latency_cell(from_start), ""))
        for notify, name in ((True, "notified"), (False, "notify=False")):
            rows.append((f"idle wait CPU, {name}", f"{idle_wait_cpu(directory, notify):.2f} ms CPU per s", ""))

        print(f"cxsync SqliteEventLog benchmark — SQLite {apsw.sqlite_lib_version()}, apsw {apsw.apsw_version()},"
              f" WAL, synchronous=FULL, {os.cpu_count()} CPUs")
        print(f"files in {directory} ({filesystem_of(directory)}); events ~{avg:,.0f} bytes encoded\n")
        widths = [max(len(r[i]) for r in rows) for i in range(2)]
        header = ("case", "SqliteEventLog", "baseline (same run)")
        print(f"{header[0]:<{widths[0]}}  {header[1]:<{widths[1]}}  {header[2]}")
        print(f"{'-' * widths[0]}  {'-' * widths[1]}  {'-' * 30}")
        for case, figure, baseline in rows:
            print(f"{case:<{widths[0]}}  {figure:<{widths[1]}}  {baseline}")


if __name__ == "__main__":
    main()
