"""Knowledge and redaction figures: precision and recall of each extractor on the labelled corpus, redaction false
positives on the real fixtures, and the cost of redaction beside parsing the same lines.

    python -m tests.bench.bench_knowledge [--fixtures ../shared/fixtures/claude-home] [--repeat 3]

The corpus is tests/knowledge_corpus.py: written exchanges (what each rule must find and the look-alikes it must
not) plus the real fixtures' items, checked by hand.  Redaction cost is measured per byte of JSONL, beside
``orjson.loads`` of the same lines (the least any reader of them pays), as medians over ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from cxsync.agent import extract as X
from cxsync.sync.redact import _redact_json_line
from tests import knowledge_corpus as K

DEFAULT_FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "claude-home"


def fixture_items(fixtures: Path) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CXSYNC_HOME": tmp}
        cx = [sys.executable, "-m", "cxsync.agent"]
        subprocess.run([*cx, "import", "--root", str(fixtures), "--json"], env=env, check=True, capture_output=True)
        out = subprocess.run([*cx, "knowledge", "--json", "--limit", "10000"], env=env, check=True,
                             capture_output=True, text=True).stdout
    return list(orjson.loads(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    scores = K.score_written()
    if args.fixtures.is_dir():
        K.score_fixture_items(fixture_items(args.fixtures), scores)
    print("extractor        TP  FP  FN  precision  recall")
    for kind in X.TYPES:
        s = scores[kind]
        print(f"{kind:<15} {s.tp:>3} {s.fp:>3} {s.fn:>3}  {s.precision:>9.2f}  {s.recall:>6.2f}")
        for fp in s.false_positives:
            print(f"    false positive: {fp}")
        for miss in s.missed:
            print(f"    missed: {miss}")

    if not args.fixtures.is_dir():
        print(f"(no fixtures at {args.fixtures}: redaction figures skipped)")
        return
    lines = [ln for p in glob.glob(str(args.fixtures / "projects" / "**" / "*.jsonl"), recursive=True)
             for ln in Path(p).read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    size = sum(len(ln.encode()) for ln in lines)
    found = [(f.kind, ln[:60]) for ln in lines for f in _redact_json_line(ln)[1]]
    base, red = [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        for ln in lines:
            try:
                orjson.loads(ln)
            except orjson.JSONDecodeError:
                pass
        base.append(time.perf_counter() - t)
        t = time.perf_counter()
        for ln in lines:
            _redact_json_line(ln)
        red.append(time.perf_counter() - t)
    b, r = statistics.median(base), statistics.median(red)
    print(f"\nredaction on the real fixtures: {len(lines)} lines, {size / 1e6:.1f} MB")
    print(f"  false positives: {len(found)}" + (f" {found[:5]}" if found else ""))
    print(f"  redact: {size / r / 1e6:.2f} MB/s (median of {args.repeat}); orjson.loads baseline "
          f"{size / b / 1e6:.1f} MB/s; ratio {r / b:.0f}x the parse")


if __name__ == "__main__":
    main()
