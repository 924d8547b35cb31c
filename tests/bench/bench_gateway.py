"""Gateway benchmark on loopback: what the HTTP hop costs beside the direct adapter, measured in the same run.

    nice -n 10 python -m tests.bench.bench_gateway --events 20000 --latency 200 --waiters 5000

1. appends/s and reads/s: the same events appended in batches of 500 and read back in pages of 500, straight to
   an embedded log (the baseline) and through a `cxsync serve` process over its own embedded log;
2. A->B latency: B long-polls the gateway, A appends one event, until B has read it (p50/p99); beside it the
   same through the direct adapter (B blocked in the log's wait);
3. concurrent long-polls one server process holds: N waits opened (spread over --streams streams), the server's
   RSS and threads before and after, memory per waiter, and how long one append per stream takes to release
   them all.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from cxsync.sync.events import ContextEvent
from cxsync.sync.http_log import HttpEventLog
from cxsync.sync.port import EventLog
from cxsync.sync.sqlite_log import SqliteEventLog
from tests.gateway_servers import ProcessServer
from tests.helpers import make_event, wait_until

TENANT = "bench"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def events(n: int, prefix: str) -> list[ContextEvent]:
    text = "a realistic message body with some code `x = f(y)` and prose. " * 12  # ~750 bytes
    return [dataclasses.replace(make_event(TENANT, f"{prefix}-{i}", text=text), user="bench") for i in range(n)]


def throughput(log: EventLog, evs: list[ContextEvent]) -> tuple[float, float]:
    t0 = time.perf_counter()
    for i in range(0, len(evs), 500):
        log.append("u/bench", evs[i:i + 500])
    append_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cursor, got = None, 0
    while True:
        page = log.read("u/bench", cursor, 500)
        if not page:
            break
        got += len(page)
        cursor = page[-1].cursor
    read_s = time.perf_counter() - t0
    assert got == len(evs), (got, len(evs))
    return len(evs) / append_s, got / read_s


def latency(writer: EventLog, reader: EventLog, rounds: int, stream: str) -> list[float]:
    (cursor,) = writer.append(stream, events(1, f"lat-start-{stream}"))
    out: list[float] = []
    for i in range(rounds):
        seen = threading.Event()
        result: list[float] = []
        sent_at: list[float] = []

        def follow(after: bytes) -> None:
            while not reader.wait(stream, after, 10):
                pass
            page = reader.read(stream, after, 10)
            result.append(time.perf_counter())
            assert page, "woken without an event"
            seen.set()

        t = threading.Thread(target=follow, args=(cursor,))
        t.start()
        time.sleep(0.005)  # let B block in its wait: the latency measured is a wake-up, not a lucky first look
        sent_at.append(time.perf_counter())
        (cursor,) = writer.append(stream, events(1, f"lat-{stream}-{i}"))
        seen.wait(15)
        t.join()
        out.append((result[0] - sent_at[0]) * 1000)
    return out


def proc_status(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            fields[key] = int(value.split()[0])
    return fields


async def long_poll(port: int, token: str, stream: str, after: bytes) -> tuple[int, bytes]:
    """One GET /v1/wait on its own connection, with asyncio streams: a client light enough to open thousands
    (httpx's async pool slows down with thousands of live connections and would measure itself)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"GET /v1/wait?stream={stream}&after={after.hex()}&timeout=30 HTTP/1.1\r\n"
                  f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").encode())
    await writer.drain()
    data = await reader.read()  # the server closes after the response
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def hold_waiters(url: str, token: str, n: int, streams: list[str], pid: int,
                       writer: HttpEventLog) -> dict[str, float]:
    heads = {s: writer.append(s, events(1, f"head-{s}"))[0] for s in streams}
    port = int(url.rsplit(":", 1)[1])
    before = proc_status(pid)
    tasks = []
    for i in range(n):
        s = streams[i % len(streams)]
        tasks.append(asyncio.create_task(long_poll(port, token, s, heads[s])))
        if i % 250 == 249:
            await asyncio.sleep(0.05)  # stay inside the listen backlog

    def held() -> bool:
        try:
            text = httpx.get(f"{url}/metrics", timeout=30).text
        except httpx.TransportError:  # busy accepting thousands of connections: ask again
            return False
        line = next(x for x in text.splitlines() if x.startswith("cxsync_gateway_waiters "))
        return float(line.split()[1]) >= n

    t0 = time.perf_counter()
    await asyncio.to_thread(wait_until, held, 120, 0.2, "all long-polls held")
    opened_s = time.perf_counter() - t0
    during = proc_status(pid)
    t0 = time.perf_counter()
    for s in streams:
        await asyncio.to_thread(writer.append, s, events(1, f"wake-{s}"))
    done = await asyncio.gather(*tasks)
    release_s = time.perf_counter() - t0
    woken = sum(1 for status, body in done if status == 200 and b'"newer":true' in body)
    return {"waiters": n, "woken": woken, "streams": len(streams), "open_s": opened_s, "release_s": release_s,
            "rss_before_kb": before["VmRSS"], "rss_during_kb": during["VmRSS"],
            "threads_before": before["Threads"], "threads_during": during["Threads"],
            "kb_per_waiter": (during["VmRSS"] - before["VmRSS"]) / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--latency", type=int, default=200, help="A->B rounds")
    ap.add_argument("--waiters", type=int, default=5_000)
    ap.add_argument("--streams", type=int, default=50, help="streams the waiters are spread over")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="cxsync-bench-gw-") as tmp:
        work = Path(tmp)
        env = {"CXSYNC_HOME": str(work / "home")}
        target = f"sqlite:{work / 'server' / 'log.db'}"
        made = subprocess.run([sys.executable, "-m", "cxsync.agent", "token", "create", "--log", target,
                               "--tenant", TENANT, "--user", "bench", "--service", "--expires", "1d"],
                              capture_output=True, text=True, env={**os.environ, **env}, check=True)
        token = made.stdout.strip()
        evs = events(args.events, "tp")

        direct = SqliteEventLog(work / "direct.db", TENANT)
        d_app, d_read = throughput(direct, evs)
        with ProcessServer(target, env) as server:
            gw = HttpEventLog(server.url, TENANT, token)
            g_app, g_read = throughput(gw, evs)
            print(f"events: {args.events} (~{len(evs[0].data['text'])} B text each), batches/pages of 500")
            print(f"append/s  direct {d_app:>9.0f}   gateway {g_app:>9.0f}   ratio {g_app / d_app:.2f}")
            print(f"read/s    direct {d_read:>9.0f}   gateway {g_read:>9.0f}   ratio {g_read / d_read:.2f}")

            d_lat = latency(direct, SqliteEventLog(work / "direct.db", TENANT), args.latency, "team")
            g_lat = latency(gw, HttpEventLog(server.url, TENANT, token), args.latency, "team")
            print(f"A->B latency over {args.latency} rounds (ms): direct p50 {statistics.median(d_lat):.1f}"
                  f" p99 {pct(d_lat, 99):.1f}   gateway p50 {statistics.median(g_lat):.1f} p99 {pct(g_lat, 99):.1f}")

            streams = [f"u/w{i}" for i in range(args.streams)]
            r = asyncio.run(hold_waiters(server.url, token, args.waiters, streams, server.proc.pid, gw))
            print(f"long-polls held: {r['waiters']} over {r['streams']} streams, all open in {r['open_s']:.1f} s;"
                  f" {r['woken']} released by {r['streams']} appends in {r['release_s']:.2f} s")
            print(f"server RSS {r['rss_before_kb'] / 1024:.0f} MiB -> {r['rss_during_kb'] / 1024:.0f} MiB"
                  f" ({r['kb_per_waiter']:.1f} KiB per waiter); threads {r['threads_before']} ->"
                  f" {r['threads_during']}")
        direct.close()


if __name__ == "__main__":
    main()
