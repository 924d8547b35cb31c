"""Import benchmark: throughput, cache size and search latency, against a bare apsw+FTS5 insert baseline.

    python -m tests.bench.bench_import --messages 100000

Prints the figures side by side with the baseline measured in the same run on the same rows.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import apsw

from cxsync.agent.ingest import Ingestor
from cxsync.agent.transcript import message_text
from cxsync.cache import open_cache
from cxsync.sync import events as ev
from tests.bench.history import generate


def _dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.parent.glob(p.name + "*"))


def baseline(rows: list[tuple[str, str, str]], path: Path) -> float:
    """A bare apsw insert of the same message rows into a table with an external-content FTS5 index."""
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute("PRAGMA synchronous=NORMAL;"
                 "CREATE TABLE m(id INTEGER PRIMARY KEY, key TEXT UNIQUE, role TEXT, content TEXT);"
                 "CREATE VIRTUAL TABLE f USING fts5(content, content='m', content_rowid='id',"
                 " tokenize='porter unicode61 remove_diacritics 2');")
    t0 = time.perf_counter()
    for i in range(0, len(rows), 2000):
        with conn:
            for key, role, content in rows[i:i + 2000]:
                conn.execute("INSERT INTO m(key, role, content) VALUES (?,?,?)", (key, role, content))
                conn.execute("INSERT INTO f(rowid, content) VALUES (?,?)", (conn.last_insert_rowid(), content))
    dt = time.perf_counter() - t0
    conn.close()
    return dt


def rows_of(root: Path) -> list[tuple[str, str, str]]:
    """The normalised (key, role, content) rows, computed outside the timing."""
    import orjson

    merged: dict[str, list[str]] = {}
    roles: dict[str, str] = {}
    for f in sorted(root.glob("projects/*/*.jsonl")):
        for raw in f.read_bytes().splitlines():
            r = orjson.loads(raw)
            if r.get("type") not in ("user", "assistant"):
                continue
            key = "m:" + r["message"]["id"] if r["type"] == "assistant" else "u:" + r["uuid"]
            merged.setdefault(key, []).append(message_text(r["message"]["content"])[0])
            roles[key] = r["type"]
    return [(k, roles[k], "\n\n".join(v)) for k, v in merged.items()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cxbench-"))
    try:
        home = work / "claude"
        t0 = time.perf_counter()
        gen = generate(home, args.messages)
        print(f"generated {gen['messages']:,} messages, {gen['lines']:,} lines, {gen['bytes'] / 1e6:.1f} MB "
              f"in {gen['sessions']} sessions ({time.perf_counter() - t0:.1f}s)")
        rows = rows_of(home)

        base_s = baseline(rows, work / "baseline.db")

        cache = open_cache(work / "cache.db", route=lambda e: ev.route(e, ["u/bench"]))
        ing = Ingestor(cache, ev.Identity("bench", "bench", "bench"), [home])
        t0 = time.perf_counter()
        stats = ing.import_all()
        imp_s = time.perf_counter() - t0
        cache.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert stats.messages == len(rows), (stats.messages, len(rows))

        prompts = json.loads((home / "prompts.json").read_text())
        rng = random.Random(3)
        lat = []
        for _ in range(args.queries):
            words = rng.choice(prompts).split()
            q = " ".join(rng.sample(words, min(len(words), rng.randint(1, 3))))
            t = time.perf_counter()
            cache.search(q, limit=10)
            lat.append((time.perf_counter() - t) * 1000)
        lat.sort()
        cache.close()
        cache_bytes = _dir_size(work / "cache.db")
        base_bytes = _dir_size(work / "baseline.db")
        mb = gen["bytes"] / 1e6
        print()
        print(f"{'':28}{'cxsync import':>16}{'bare apsw+FTS5':>18}{'ratio':>8}")
        print(f"{'wall time (s)':28}{imp_s:>16.2f}{base_s:>18.2f}{base_s / imp_s:>8.2f}")
        print(f"{'messages/s':28}{len(rows) / imp_s:>16,.0f}{len(rows) / base_s:>18,.0f}{base_s / imp_s:>8.2f}")
        print(f"{'JSONL MB/s':28}{mb / imp_s:>16.1f}{mb / base_s:>18.1f}")
        print(f"{'size / JSONL size':28}{cache_bytes / gen['bytes']:>16.2f}{base_bytes / gen['bytes']:>18.2f}")
        print(f"{'search p50 / p99 (ms)':28}{statistics.median(lat):>8.2f} / {lat[int(len(lat) * 0.99) - 1]:<6.2f}")
        print(f"\nimport rate relative to the bare insert: {base_s / imp_s:.2f} (target >= 0.50)")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
