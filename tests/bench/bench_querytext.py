"""Hostile searches: what the query bounds cost, beside what the same search costs when FTS5 runs it unbounded.

    python -m tests.bench.bench_querytext --messages 20000

Baseline: the expression the old code built (plain words quoted and ANDed; ``--fts`` text passed through) run
against an FTS5 index of ``--messages`` generated messages, stopped after ``--cap`` seconds by a progress handler.
Bounded: ``cache.querytext.to_fts`` on the same text (it rejects before any FTS5 work).  Medians and p99 over
``--runs`` runs.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import apsw

from cxsync.cache.querytext import QueryTextError, quote, to_fts

WORDS = [f"w{i}" for i in range(5000)] + ["bd", "edit", "use", "not", "deploy", "retry"]


def build(path: Path, n: int) -> apsw.Connection:
    conn = apsw.Connection(str(path))
    conn.execute("CREATE VIRTUAL TABLE f USING fts5(content, tokenize='porter unicode61 remove_diacritics 2')")
    rnd = random.Random(7)
    with conn:
        conn.executemany("INSERT INTO f(content) VALUES (?)",
                         ((" ".join(rnd.choices(WORDS, k=40)),) for _ in range(n)))
    return conn


def old_expression(text: str, fts: bool) -> str:
    return text.strip() if fts else " ".join(quote(w) for w in text.split())


def run_capped(conn: apsw.Connection, expr: str, cap: float) -> tuple[float, str]:
    deadline = time.perf_counter() + cap
    conn.set_progress_handler(lambda: time.perf_counter() > deadline, 10_000)
    t0 = time.perf_counter()
    try:
        n = conn.execute("SELECT count(*) FROM f WHERE f MATCH ?", (expr,)).fetchone()[0]
        outcome = f"{n} rows"
    except apsw.InterruptError:
        outcome = f"stopped at the {cap:.0f} s cap"
    except apsw.Error as exc:
        outcome = type(exc).__name__
    finally:
        conn.set_progress_handler(None)
    return time.perf_counter() - t0, outcome


def stats(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"median {statistics.median(xs) * 1e3:9.3f} ms  p99 {xs[max(0, int(len(xs) * 0.99) - 1)] * 1e3:9.3f} ms"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cap", type=float, default=10.0)
    a = ap.parse_args()
    cases = {
        "10,000-term OR (--fts)": (" OR ".join(f"w{i % 5000}" for i in range(10_000)), True),
        "10,000-term NEAR (--fts)": (f"NEAR({' '.join(f'w{i % 5000}' for i in range(10_000))}, 10)", True),
        "bd x 10,000 (plain)": (" ".join(["bd"] * 10_000), False),
        "100 KB word (plain)": ("x" * 100_000, False),
        "Do NOT use bd edit (plain)": ("Do NOT use bd edit", False),
    }
    with tempfile.TemporaryDirectory() as tmp:
        conn = build(Path(tmp) / "f.db", a.messages)
        print(f"{a.messages:,} messages; {a.runs} runs each; baseline capped at {a.cap:.0f} s")
        for name, (text, fts) in cases.items():
            base, outcome = [], ""
            for _ in range(a.runs):
                t, outcome = run_capped(conn, old_expression(text, fts), a.cap)
                base.append(t)
            bounded, verdict = [], ""
            for _ in range(a.runs * 20):
                t0 = time.perf_counter()
                try:
                    to_fts(text, fts=fts)
                    verdict = "accepted"
                except QueryTextError as exc:
                    verdict = "rejected: " + exc.title.split("(")[0].strip()
                bounded.append(time.perf_counter() - t0)
            print(f"{name:28}  unbounded {stats(base)} ({outcome})")
            print(f"{'':28}  bounded   {stats(bounded)} ({verdict})")
        conn.close()


if __name__ == "__main__":
    main()
