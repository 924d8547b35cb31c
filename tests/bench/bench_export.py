"""Export benchmark: one large session read back from the cache, against baselines measured in the same run.

    python -m tests.bench.bench_export --messages 20000

Baselines: reading the original file from disk (the floor: what a plain copy costs) and ``cache.show`` (the
existing read of the same session's message rows).  Figures are medians of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from cxsync.agent import export_render as render
from cxsync.agent.ingest import Ingestor
from cxsync.cache import open_cache
from cxsync.cache.records import transcript
from cxsync.sync import events as ev
from tests.bench.history import generate


def _median(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    os.environ["CXSYNC_IMPORT_PROCESSES"] = "1"
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "claude"
        generate(root, args.messages, per_session=args.messages)
        src = next(root.glob("projects/*/*.jsonl"))
        with open_cache(Path(d) / "cache.db") as cache:
            Ingestor(cache, ev.Identity("t", "u", "m"), [root]).import_all()
            sid = src.stem
            exported = transcript(cache.conn, sid).to_bytes()
            assert exported == src.read_bytes(), "export differs from the original"
            size = len(exported)
            lines = exported.count(b"\n")
            floor = _median(src.read_bytes, args.runs)
            show = _median(lambda: cache.show(sid), args.runs)
            jsonl = _median(lambda: transcript(cache.conn, sid).to_bytes(), args.runs)

            def html() -> str:
                tr = transcript(cache.conn, sid)
                conv = render.conversation((r for _, r in tr.records()), title="t", session=sid, project=None)
                return render.to_html(conv)

            page = _median(html, max(1, args.runs // 2))
    mb = size / 1e6
    print(f"session: {lines} lines, {mb:.1f} MB, byte-identical export: yes")
    print(f"{'operation':<34}{'median s':>10}{'MB/s':>10}{'x floor':>10}")
    for name, t in (("read original file (floor)", floor), ("cache.show (message rows)", show),
                    ("export jsonl (verbatim lines)", jsonl), ("export html (render)", page)):
        print(f"{name:<34}{t:>10.3f}{mb / t:>10.1f}{t / floor:>10.1f}")


if __name__ == "__main__":
    main()
