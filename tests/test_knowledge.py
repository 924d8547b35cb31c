"""Knowledge: extraction by rules, incremental as sessions grow, shared on purpose and withdrawn, through the CLI."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from cxsync.agent import extract as X
from cxsync.sync import events as ev
from tests import knowledge_corpus as K
from tests import transcripts as T
from tests.test_migrate import Home

SID = "c0ffee00-0000-4000-8000-000000000001"
SID2 = "c0ffee00-0000-4000-8000-000000000002"


def test_the_labelled_corpus_is_extracted_with_precision() -> None:
    scores = K.score_written()
    for kind, s in scores.items():
        assert s.precision >= 0.9, (kind, s.false_positives)
        assert s.recall >= 0.8, (kind, s.missed)


def test_the_real_fixtures_give_the_hand_checked_items(tmp_path: Path, real_fixtures: Path) -> None:
    h = Home(tmp_path)
    h.js("import", "--root", str(real_fixtures))
    items = h.js("knowledge")
    scores = {t: K.Score() for t in X.TYPES}
    K.score_fixture_items(items, scores)
    assert all(s.fp == 0 and s.fn == 0 for s in scores.values()), {k: (s.false_positives, s.missed)
                                                                    for k, s in scores.items()}
    (item,) = items
    shown = h.js("knowledge", "show", item["id"][:8])
    assert [m["role"] for m in shown["source_messages"]] == ["tool", "assistant", "tool"]
    assert "config.exs" in " ".join(shown["data"]["steps"])


def _decision_lines(sid: str, text: str, **kw: Any) -> list[dict[str, Any]]:
    return [T.user(sid, "which store for the sync log?", **kw), *T.assistant_lines(sid, [T.text(text)], **kw)]


def test_extraction_is_incremental_as_a_session_grows(tmp_path: Path, claude_home: Path) -> None:
    h = Home(tmp_path)
    f = T.session_file(claude_home, SID)
    tid = "toolu_run1"
    T.write(f, [T.user(SID, "run the tests"),
                *T.assistant_lines(SID, [T.tool_use("Bash", {"command": "pytest -x"}, tid)]),
                T.tool_result(SID, tid, "FAILED tests/test_a.py::test_x - KeyError: 'k'", is_error=True),
                *T.assistant_lines(SID, [T.text("The key is optional; reading it with get()."),
                                         T.tool_use("Edit", {"file_path": "/src/a.py", "old_string": "x",
                                                             "new_string": "y"}, "toolu_e1")]),
                T.tool_result(SID, "toolu_e1", "The file /src/a.py has been updated.")])
    h.js("import", "--root", str(claude_home))
    assert h.js("knowledge") == []  # an error and an edit, but no passing run yet: nothing claimed
    T.write(f, [*T.assistant_lines(SID, [T.tool_use("Bash", {"command": "pytest -x 2>&1 | tail"}, "toolu_run2")]),
                T.tool_result(SID, "toolu_run2", "5 passed in 0.2s"),
                *_decision_lines(SID, "We decided to keep SQLite for the embedded log because it needs no server.")],
            mode="ab")
    h.js("import", "--root", str(claude_home))
    items = h.js("knowledge")
    assert sorted(i["type"] for i in items) == ["decision", "error_solution"]
    (fix,) = [i for i in items if i["type"] == "error_solution"]
    assert fix["data"]["error_signature"].startswith("FAILED tests/test_a.py") and "get()" in fix["data"]["solution"]
    events_before = h.rows("SELECT count(*) FROM events")
    assert h.js("knowledge") == items  # running again finds the same items and adds nothing
    assert h.rows("SELECT count(*) FROM events") == events_before
    assert h.js("knowledge", "--type", "decision")[0]["data"]["rationale"].startswith("because it needs no server")


@pytest.fixture
def team(tmp_path: Path) -> tuple[Home, Home, Path, Path]:
    log = tmp_path / "log.db"
    homes = []
    for user in ("alice", "bob"):
        h = Home(tmp_path, user, log)
        (h.home / "config.toml").write_text(
            f'[identity]\ntenant = "acme"\nuser = "{user}"\nmachine = "{user}-laptop"\n'
            f'[sync]\ntarget = "sqlite:{log}"\npublish = ["u/{user}"]\nsubscribe = ["u/{user}", "team"]\n')
        homes.append(h)
    claude = tmp_path / "alice-claude"
    T.write(T.session_file(claude, SID), _decision_lines(
        SID, "Let's go with versionstamp cursors because wall clocks drift between laptops."))
    T.write(T.session_file(claude, SID2), _decision_lines(
        SID2, "We decided to name the private project zanzibar-internal since marketing asked."))
    return homes[0], homes[1], log, claude


def _visible(h: Home) -> dict[str, dict[str, Any]]:
    return {i["id"]: i for i in h.js("knowledge")}


def test_a_shared_item_reaches_the_team_and_unshare_withdraws_it(team: tuple[Home, Home, Path, Path]) -> None:
    alice, bob, log, claude = team
    alice.js("import", "--root", str(claude))
    mine = _visible(alice)
    assert len(mine) == 2
    (public,) = [i for i in mine.values() if "versionstamp" in i["title"]]
    (private,) = [i for i in mine.values() if "zanzibar" in i["title"]]
    r = alice.js("share", public["id"][:6], "--scope", "team")
    assert r == {"items": [public["id"]], "scope": "team", "project": None, "shared": True}
    alice.js("sync", "--once")
    bob.js("sync", "--once")
    seen = _visible(bob)
    assert list(seen) == [public["id"]] and seen[public["id"]]["user"] == "alice"
    assert seen[public["id"]]["shares"] == [{"scope": "team"}]
    assert bob.js("knowledge", "show", public["id"])["data"]["rationale"].startswith("because wall clocks")
    assert public["id"] in json.dumps(bob.js("recall", "versionstamp cursors"))  # and in recall
    # nothing private on bob's side: not in his cache, not on the team stream
    assert not bob.rows("SELECT 1 FROM knowledge WHERE knowledge_id = ?", private["id"])
    assert "zanzibar" not in json.dumps(bob.rows("SELECT extracted_data FROM knowledge"))
    con = sqlite3.connect(log)
    team_payloads = [bytes(p) for (p,) in con.execute("SELECT payload FROM events WHERE stream = 'team'")]
    con.close()
    assert team_payloads and all("zanzibar" not in json.dumps(ev.decode(p).data) for p in team_payloads)
    # withdrawn: gone from bob's knowledge, still alice's own item
    alice.js("unshare", public["id"], "--scope", "team")
    alice.js("sync", "--once")
    bob.js("sync", "--once")
    assert _visible(bob) == {}
    assert _visible(alice)[public["id"]]["shares"] == []
    assert public["id"] not in json.dumps(bob.js("recall", "versionstamp cursors"))
    # and shared again later: back
    alice.js("share", public["id"], "--scope", "team")
    alice.js("sync", "--once")
    bob.js("sync", "--once")
    assert list(_visible(bob)) == [public["id"]]


def test_sharing_a_session_shares_its_items(team: tuple[Home, Home, Path, Path]) -> None:
    alice, bob, _, claude = team
    alice.js("import", "--root", str(claude))
    ambiguous = alice.cx("share", SID[:13], "--scope", "team")  # a prefix of both sessions
    assert ambiguous.returncode == 2 and "ambiguous" in ambiguous.stderr
    r = alice.js("share", SID, "--scope", "project:sync-core")
    assert len(r["items"]) == 1 and r["project"] == "sync-core"
    assert alice.js("knowledge", "--scope", "project")[0]["shares"] == [{"scope": "project", "project": "sync-core"}]


def test_only_your_own_items_can_be_shared_and_scopes_are_checked(team: tuple[Home, Home, Path, Path]) -> None:
    alice, bob, _, claude = team
    alice.js("import", "--root", str(claude))
    item = next(iter(_visible(alice)))
    bad = alice.cx("share", item, "--scope", "galaxy")
    assert bad.returncode == 2 and "unknown scope" in bad.stderr
    alice.js("share", item, "--scope", "team")
    alice.js("sync", "--once")
    bob.js("sync", "--once")
    r = bob.cx("unshare", item, "--scope", "team")
    assert r.returncode == 1 and "not your item" in r.stderr
    missing = bob.cx("share", "nothing-like-this", "--scope", "team")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr


def test_the_latest_act_wins_whatever_the_arrival_order(tmp_path: Path) -> None:
    from cxsync.cache import open_cache
    from cxsync.cache.knowledge import list_items

    alice = ev.Identity("acme", "alice", "a1")
    item = {"id": "d-1", "type": "decision", "title": "t", "sources": []}
    acts = [ev.knowledge_shared(alice, "d-1", "team", item=item, shared=s) for s in (True, False, True, False)]
    for order, expect in ((acts, []), (list(reversed(acts)), [])):
        with open_cache(tmp_path / f"{len(order)}-{order[0].event_id}.db") as cache:
            for e in order:
                cache.apply([e], "remote")
            assert [i.id for i in list_items(cache.conn, "bob")] == expect
    with open_cache(tmp_path / "c.db") as cache:
        cache.apply(list(reversed(acts[:3])), "remote")
        assert [i.id for i in list_items(cache.conn, "bob")] == ["d-1"]


def test_extracted_items_are_routed_to_the_owners_stream_only() -> None:
    e = ev.knowledge_extracted(ev.Identity("acme", "alice", "m"), {"id": "d-1", "project": "/src/web"}, [])
    assert ev.route(e, ["u/alice", "team", "p/web"]) == ["u/alice"]
