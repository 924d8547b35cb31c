"""Recall quality on the real transcripts: a labelled set of topic → the past exchanges a person would want back.

    python -m tests.bench.bench_recall [--budget 2000]

Each label names the prompts (message keys) of the relevant exchanges in ../shared/fixtures/claude-home; the
topics are worded as someone would ask later, not copied from the prompts. For each topic the block from
``cxsync recall`` is scored on the exchanges that land in it (an exchange is identified by its prompt):
precision = relevant shown / shown, recall = relevant shown / relevant. The baseline, measured in the same run on
the same cache and budget, is what a plain search gives: the ranked hits of ``cxsync query`` as snippets, as many
as the budget holds, each credited with the exchange it belongs to. The budget is checked on every block.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

from cxsync.cache.recall import _message, _prompt_before, estimate_tokens, recall

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "claude-home"

LABELS: list[tuple[str, set[str]]] = [
    ("phoenix dev server won't start", {"u:7d48cbd2-6615-4dd8-87f6-38f12b8167d6"}),
    ("run the phoenix server in the background", {"u:5440873c-2d59-4c8c-88ec-c0a8c38a027d",
                                                  "u:7d48cbd2-6615-4dd8-87f6-38f12b8167d6"}),
    ("xterm.js scrollback inside tmux", {"u:f643538d-cf06-4b9a-9bb0-9ae5c26ea07a"}),
    ("set up credo dialyzer and mix_audit", {"u:cc2c7130-8a1e-4f3c-8f99-b54aa375b7a7",
                                             "u:091e0ff4-fd44-4213-968d-b1fe201aae6f"}),
    ("latest opentelemetry hex package versions", {"u:f1eb9ac5-1928-4a73-b605-aaf2f3a24db9"}),
    ("opentelemetry tracing epic spotter-4te", {"u:858a6db7-6721-4caa-b306-39ec1f17cbf1",
                                                "u:212245f4-0953-4348-a407-3715867dee85"}),
    ("persist todos in localStorage", {"u:0d692b0f-17cb-4fd0-94fb-215dabcef803"}),
    ("TodoItem and TodoList react components", {"u:6690d10e-f521-4ac0-800d-e5eb7a2d8072"}),
    ("typescript interfaces for the todo model", {"u:f4546a51-ea10-47e0-b4e0-76802974f8a9"}),
    ("create the next.js todo app", {"u:62e0bdc0-a1e4-4d5c-8509-3b9d0d57cc67",
                                     "u:60dade70-20bb-4edb-9dad-9f08267e0cc2"}),
    ("package.json dependencies and scripts", {"u:6340ddef-f656-4b72-a065-82390f637678"}),
    ("update CLAUDE.md after the changes", {"u:2e38973c-cb21-4d4d-be4f-b93dd59145bd",
                                            "u:5877060c-0a35-4f68-90a6-fdaa3727859a"}),
]


def import_fixtures(work: Path) -> Path:
    from cxsync.agent.ingest import Ingestor
    from cxsync.cache import open_cache
    from cxsync.sync import events as ev

    db = work / "cache.db"
    cache = open_cache(db, route=lambda e: ev.route(e, ["u/bench"]))
    Ingestor(cache, ev.Identity("bench", "bench", "bench"), [FIXTURES]).import_all()
    cache.close()
    return db


def baseline(cache: Any, topic: str, budget: int) -> list[str]:
    """Plain search: hits as snippets while the budget holds, each credited to its exchange's prompt."""
    from cxsync.cache.recall import _or_query

    try:
        hits = cache.search(topic, limit=60)
    except Exception:  # noqa: BLE001 - a topic plain search cannot run counts as an empty answer
        hits = []
    if not hits:
        q = _or_query(topic)
        hits = cache.search(q, limit=60, fts=True) if q else []
    used, shown = 0, []
    for h in hits:
        cost = estimate_tokens(f"{h.session[:8]} {h.occurred_at} {h.role} {h.project}\n  {h.snippet}\n")
        if used + cost > budget:
            break
        used += cost
        msg = _message(cache.conn, h.key)
        anchor = (None if msg is None else
                  (h.key,) if msg[4] == "user" else _prompt_before(cache.conn, msg))
        key = anchor[0] if anchor else h.key
        if key not in shown:
            shown.append(key)
    return shown


def score(shown: list[str], relevant: set[str]) -> tuple[float, float]:
    hit = len(relevant & set(shown))
    return (hit / len(shown) if shown else 0.0), hit / len(relevant)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=int, default=2000)
    args = ap.parse_args()
    from cxsync.cache import open_cache

    work = Path(tempfile.mkdtemp(prefix="cxbench-recall-"))
    try:
        db = import_fixtures(work)
        rows = []
        worst_ratio = 0.0
        with open_cache(db, readonly=True) as cache:
            for topic, relevant in LABELS:
                for b in (100, 300, 800, args.budget, 5000):  # the budget holds at every size
                    block = recall(cache, topic, budget=b)
                    assert block.tokens <= b, (topic, b, block.tokens)
                    worst_ratio = max(worst_ratio, block.tokens / b)
                block = recall(cache, topic, budget=args.budget)
                shown = [i.keys[0] for i in block.items if i.keys]
                p, r = score(shown, relevant)
                bp, br = score(baseline(cache, topic, args.budget), relevant)
                first = shown[0] in relevant if shown else False
                rows.append((topic, len(shown), p, r, bp, br, first, block.tokens))
        print(f"{len(LABELS)} labelled topics on the real transcripts, budget {args.budget} tokens\n")
        print(f"{'topic':44}{'items':>6}{'P':>6}{'R':>6}{'base P':>8}{'base R':>8}{'1st ok':>7}{'tokens':>8}")
        for topic, n, p, r, bp, br, first, tok in rows:
            print(f"{topic[:43]:44}{n:>6}{p:>6.2f}{r:>6.2f}{bp:>8.2f}{br:>8.2f}{'yes' if first else 'no':>7}{tok:>8}")
        mean = [statistics.mean(x[i] for x in rows) for i in (2, 3, 4, 5)]
        print(f"{'mean':44}{'':>6}{mean[0]:>6.2f}{mean[1]:>6.2f}{mean[2]:>8.2f}{mean[3]:>8.2f}"
              f"{sum(x[6] for x in rows) / len(rows):>7.2f}")
        print(f"\nbudget never exceeded: largest block / budget = {worst_ratio:.3f} over "
              f"{len(LABELS) * 5} blocks (100 to 5000 tokens)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
