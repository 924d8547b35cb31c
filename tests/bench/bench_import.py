"""Import and search benchmark: a generated history imported with `cxsync import` as a new user would, then searched,
every figure printed beside a bare apsw + FTS5 baseline measured in the same run on the same rows and queries.

    python -m tests.bench.bench_import --messages 1000000 --history DIR   # about 10 minutes on 2 cores, 10 GB
    python -m tests.bench.bench_import --messages 50000       # a quick look

``--history DIR`` keeps the generated history in DIR and reuses it in later runs; ``--keep`` keeps the run's
caches, which ``--reuse WORK`` measures again (size and search only).

The history is seeded (same figures' inputs every run) and bounded by ``--messages``. The import runs as the CLI
in a child process, whose process tree's resident memory is sampled every 50 ms.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import apsw
import orjson

from cxsync.agent.transcript import message_text
from tests.bench.history import generate

BATCH = 2000


def _dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.parent.glob(p.name + "*"))


def stage_rows(root: Path, path: Path) -> int:
    """The normalised (key, role, content) rows of the history, written outside the timing to a staging table
    (a million messages do not fit in this process's memory as Python strings)."""
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=OFF").fetchall()  # a pragma returning a row stops a multi-statement run
    conn.execute("PRAGMA synchronous=OFF; CREATE TABLE rows(key TEXT PRIMARY KEY, role TEXT, content TEXT)"
                 " WITHOUT ROWID")
    n = 0
    for f in sorted(root.glob("projects/*/*.jsonl")):
        merged: dict[str, list[str]] = {}
        roles: dict[str, str] = {}
        for raw in f.read_bytes().splitlines():
            r = orjson.loads(raw)
            if r.get("type") not in ("user", "assistant"):
                continue
            key = "m:" + r["message"]["id"] if r["type"] == "assistant" else "u:" + r["uuid"]
            merged.setdefault(key, []).append(message_text(r["message"]["content"])[0])
            roles[key] = r["type"]
        with conn:
            conn.executemany("INSERT INTO rows VALUES (?,?,?)",
                             [(k, roles[k], "\n\n".join(v)) for k, v in merged.items()])
        n += len(merged)
    conn.close()
    return n


def baseline_import(staged: Path, path: Path) -> float:
    """A bare apsw insert of the same rows into a table with an external-content FTS5 index (same tokenizer),
    in transactions of 2,000 rows: what storing and indexing the text costs with nothing else."""
    src = apsw.Connection(str(staged), flags=apsw.SQLITE_OPEN_READONLY)
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute("PRAGMA synchronous=NORMAL;"
                 "CREATE TABLE m(id INTEGER PRIMARY KEY, key TEXT UNIQUE, role TEXT, content TEXT);"
                 "CREATE VIRTUAL TABLE f USING fts5(content, content='m', content_rowid='id',"
                 " tokenize='porter unicode61 remove_diacritics 2');")
    cur = src.execute("SELECT key, role, content FROM rows")
    t0 = time.perf_counter()
    while True:
        rows = list(itertools.islice(cur, BATCH))
        if not rows:
            break
        with conn:
            for key, role, content in rows:
                conn.execute("INSERT INTO m(key, role, content) VALUES (?,?,?)", (key, role, content))
                conn.execute("INSERT INTO f(rowid, content) VALUES (?,?)", (conn.last_insert_rowid(), content))
    dt = time.perf_counter() - t0
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    src.close()
    return dt


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (Linux /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total


def cxsync_import(home: Path, cxhome: Path) -> tuple[float, int, dict[str, Any]]:
    """`cxsync import` in a child process: (wall seconds, peak resident bytes of its process tree, its JSON)."""
    env = {**os.environ, "CXSYNC_HOME": str(cxhome)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "cxsync.agent", "import", "--root", str(home), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    dt = time.perf_counter() - t0
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"cxsync import failed ({proc.returncode}): {err.decode()[-2000:]}")
    return dt, peak, json.loads(out)


def _quantiles(lat: list[float]) -> tuple[float, float]:
    lat = sorted(lat)
    return statistics.median(lat), lat[max(0, int(len(lat) * 0.99) - 1)]


def _timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def make_queries(home: Path, cache: Any, n: int, rng: random.Random) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """What a person types: 1-3 words of a prompt (plain), and the same with each filter of `cxsync query`."""
    prompts = json.loads((home / "prompts.json").read_text())
    sessions = [r[0] for r in cache.conn.execute("SELECT session_id FROM sessions WHERE session_id = root_session")]
    projects = sorted({r[0] for r in cache.conn.execute("SELECT DISTINCT project FROM sessions")
                       if r[0]})
    first, last = cache.conn.execute("SELECT min(first_at), max(last_at) FROM sessions").fetchone()
    from datetime import datetime

    t0, t1 = (datetime.fromisoformat(x.replace("Z", "+00:00")) for x in (first, last))
    words = []
    for _ in range(n):
        ws = rng.choice(prompts).split()
        words.append(" ".join(rng.sample(ws, min(len(ws), rng.randint(1, 3)))))
    phrases = []
    for _ in range(n):
        ws = rng.choice(prompts).split()
        i = rng.randrange(max(1, len(ws) - 1))
        phrases.append(" ".join(ws[i:i + 2]))
    return {
        "plain": [(w, {}) for w in words],
        "two-word phrases": [(w, {}) for w in phrases],
        "--project": [(w, {"project": rng.choice(projects).rsplit("/", 1)[-1]}) for w in words],
        "--session": [(w, {"session": rng.choice(sessions)}) for w in words],
        "--role": [(w, {"role": rng.choice(["user", "assistant", "tool"])}) for w in words],
        "--since (last tenth)": [(w, {"since": (t1 - (t1 - t0) / 10).isoformat()}) for w in words],
    }


def bare_search(conn: apsw.Connection, text: str, role: str | None = None) -> list[Any]:
    q = " ".join('"' + w.replace('"', '""') + '"' for w in text.split())
    sql = ("SELECT m.key, snippet(f, 0, '[', ']', '…', 16), bm25(f) FROM f JOIN m ON m.id = f.rowid"
           " WHERE f MATCH ?" + (" AND m.role = ?" if role else "") + " ORDER BY rank LIMIT 10")
    return conn.execute(sql, (q, role) if role else (q,)).fetchall()


def recall_at_10(cache: Any, rng: random.Random, n: int = 200) -> tuple[float, int]:
    """The acceptance test's relevance figure at this size: for ``n`` random messages, a search of their three rarest
    words (by the search's own estimate; paths and identifiers included) is asked for the top 10: the share that
    holds the message, and how many of the queries held a path."""
    lo, hi = cache.conn.execute("SELECT min(id), max(id) FROM messages").fetchone()
    picked: list[tuple[str, list[str]]] = []
    while len(picked) < n:
        key, text = cache.conn.execute("SELECT key, cx_text(event_id) FROM messages WHERE id >= ? ORDER BY id"
                                       " LIMIT 1", (rng.randint(lo, hi),)).fetchone()
        words = list(dict.fromkeys(w for w in text.split() if len(w) >= 4 and not w.startswith("[")))
        if len(words) >= 6:
            picked.append((key, words))
    found = paths = 0
    for key, words in picked:
        rare = [w for _, w in sorted(zip(cache._document_frequencies(words), words))[:3]]
        rng.shuffle(rare)
        paths += any("/" in w for w in rare)
        found += key in [h.key for h in cache.search(" ".join(rare), limit=10)]
    return found / n, paths


def _search_figures(work: Path, queries: int, seed: int) -> dict[str, Any]:
    from cxsync.cache import open_cache

    home = work / "claude"
    cache = open_cache(work / "cxhome" / "data" / "cache.db", readonly=True)
    bare = apsw.Connection(str(work / "baseline.db"), flags=apsw.SQLITE_OPEN_READONLY)
    for c in (cache.conn, bare):
        c.execute("PRAGMA cache_size=-32000")
    rng = random.Random(seed)
    sets = make_queries(home, cache, queries, rng)
    for q, _ in sets["plain"][:20]:  # warm both the same way
        cache.search(q)
        bare_search(bare, q)
    results: dict[str, Any] = {}
    for name, qs in sets.items():
        mine = [_timed(lambda: cache.search(q, limit=10, **f)) for q, f in qs]
        theirs = None
        if name in ("plain", "two-word phrases", "--role"):
            theirs = _quantiles([_timed(lambda: bare_search(bare, q, f.get("role"))) for q, f in qs])
        results[name] = (_quantiles(mine), theirs)
    results["recall@10"] = recall_at_10(cache, random.Random(seed))
    cache.close()
    bare.close()
    return results


def _print_search(results: dict[str, Any]) -> None:
    recall, paths = results.pop("recall@10")
    print(f"{'recall@10, 200 queries of a message rarest 3 words':52}{recall:>6.3f}   ({paths} with a path)")
    for name, ((p50, p99), theirs) in results.items():
        other = f"{theirs[0]:>7.2f} / {theirs[1]:<8.1f}" if theirs else f"{'':18}"
        print(f"{'search top 10 p50 / p99 (ms) ' + name:<52}{p50:>6.2f} / {p99:<6.1f}{other}")


def measure_search(work: Path, queries: int, seed: int) -> None:
    """Size and search on a kept run's caches (the import figures are that run's)."""
    jsonl = sum(f.stat().st_size for f in (work / "claude").glob("projects/*/*.jsonl"))
    cache_bytes = _dir_size(work / "cxhome" / "data" / "cache.db")
    base_bytes = _dir_size(work / "baseline.db")
    results = _search_figures(work, queries, seed)
    print(f"{'':36}{'cxsync':>16}{'bare apsw+FTS5':>18}")
    print(f"{'size on disk / JSONL size':36}{cache_bytes / jsonl:>16.2f}{base_bytes / jsonl:>18.2f}")
    _print_search(results)


def _history(kept: Path | None, home: Path, messages: int, seed: int) -> dict[str, int]:
    """Generate the history into ``home``; with ``kept``, generate it there once (its counts beside it) and link it."""
    if kept is None:
        return generate(home, messages, seed=seed)
    done = kept / f"history-{messages}-{seed}.json"
    if not done.exists():
        shutil.rmtree(kept / "claude", ignore_errors=True)
        gen = generate(kept / "claude", messages, seed=seed)
        done.write_text(json.dumps(gen))
    home.symlink_to((kept / "claude").resolve(), target_is_directory=True)
    return dict(json.loads(done.read_text()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--reuse", type=Path, help="a work folder kept by --keep: measure size and search only")
    ap.add_argument("--history", type=Path,
                    help="a folder holding (or to hold) the generated history: generated once, reused by later runs")
    args = ap.parse_args()
    if args.reuse:
        measure_search(args.reuse, args.queries, args.seed)
        return
    work = Path(tempfile.mkdtemp(prefix="cxbench-"))
    try:
        home = work / "claude"
        t0 = time.perf_counter()
        gen = _history(args.history, home, args.messages, args.seed)
        print(f"generated {gen['messages']:,} messages, {gen['lines']:,} lines, {gen['bytes'] / 1e6:,.1f} MB "
              f"in {gen['sessions']:,} sessions ({time.perf_counter() - t0:.0f} s)", flush=True)
        n_rows = stage_rows(home, work / "staged.db")
        base_s = baseline_import(work / "staged.db", work / "baseline.db")
        (work / "staged.db").unlink()
        print(f"baseline insert: {base_s:.1f} s", flush=True)

        imp_s, peak, imported = cxsync_import(home, work / "cxhome")
        print(f"cxsync import: {imp_s:.1f} s, peak RSS {peak / 2**20:.0f} MB", flush=True)
        assert imported["messages"] == n_rows, (imported["messages"], n_rows)

        results = _search_figures(work, args.queries, args.seed)
        cache_db = work / "cxhome" / "data" / "cache.db"
        cache_bytes = _dir_size(cache_db)
        base_bytes = _dir_size(work / "baseline.db")
        mb = gen["bytes"] / 1e6
        print()
        print(f"{gen['messages']:,} messages, {gen['sessions']:,} sessions, {mb:,.0f} MB of JSONL, "
              f"{args.queries} queries per row, seed {args.seed}")
        print(f"{'':36}{'cxsync':>16}{'bare apsw+FTS5':>18}{'ratio':>8}")
        print(f"{'import wall time (s)':36}{imp_s:>16.1f}{base_s:>18.1f}{base_s / imp_s:>8.2f}")
        print(f"{'import messages/s':36}{n_rows / imp_s:>16,.0f}{n_rows / base_s:>18,.0f}{base_s / imp_s:>8.2f}")
        print(f"{'import JSONL MB/s':36}{mb / imp_s:>16.1f}")
        print(f"{'import peak RSS (MB, process tree)':36}{peak / 2**20:>16.0f}")
        print(f"{'size on disk / JSONL size':36}{cache_bytes / gen['bytes']:>16.2f}{base_bytes / gen['bytes']:>18.2f}")
        _print_search(results)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
