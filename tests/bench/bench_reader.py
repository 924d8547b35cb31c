"""Reader benchmark: what the validation boundary costs per line, against a bare ``orjson.loads`` of the same
lines (the floor any reader pays), and how long the hostile corpus takes to parse.

    python -m tests.bench.bench_reader --messages 20000

Prints medians of several rounds side by side; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import orjson

from cxsync.agent import transcript as tx
from tests import hostile_corpus as H
from tests.bench.history import generate


def _lines(root: Path) -> list[bytes]:
    out: list[bytes] = []
    for p in sorted(root.rglob("*.jsonl")):
        if p.is_file() and not p.is_symlink():
            out.extend(ln for ln in p.read_bytes().split(b"\n") if ln.strip())
    return out


def _median(fn: object, lines: list[bytes], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for ln in lines:
            fn(ln)  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        generate(Path(d) / "history", args.messages)
        lines = _lines(Path(d) / "history")
        corpus = H.build(Path(d) / "hostile", unreadable=False)
        hostile = _lines(corpus.projects)
        size = sum(map(len, lines))
        base = _median(lambda b: orjson.loads(b), lines, args.rounds)
        ours = _median(tx.parse_line, lines, args.rounds)
        hostile_t = _median(tx.parse_line, hostile, args.rounds)
    n = len(lines)
    print(f"realistic history: {n} lines, {size / 1e6:.1f} MB, median of {args.rounds} rounds")
    print(f"  orjson.loads (baseline)  {base * 1e3:8.1f} ms  {base / n * 1e6:6.2f} µs/line  {size / base / 1e6:6.0f} MB/s")
    print(f"  parse_line (validated)   {ours * 1e3:8.1f} ms  {ours / n * 1e6:6.2f} µs/line  {size / ours / 1e6:6.0f} MB/s"
          f"  ratio {ours / base:.2f}")
    print(f"hostile corpus: {len(hostile)} lines, {sum(map(len, hostile)) / 1e6:.1f} MB parsed in "
          f"{hostile_t * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
