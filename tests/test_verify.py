"""`cxsync verify [--repair]`: the cache compared with the log, through the CLI, on two machines of one user."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import apsw
import pytest

from cxsync.sync import events as ev
from tests import transcripts as T
from tests.test_migrate import Home

SID = "7e417e41-0000-4000-8000-000000000001"


@pytest.fixture
def pair(tmp_path: Path, claude_home: Path) -> tuple[Home, Home, Path]:
    log = tmp_path / "log.db"
    a, b = Home(tmp_path, "laptop", log), Home(tmp_path, "desktop", log)
    T.write(T.session_file(claude_home, SID), [
        T.user(SID, "how do we rotate the verifytoken keys"),
        *T.assistant_lines(SID, [T.text("rotate them with the verifyanswer script")]),
        T.user(SID, "and the secondprompt question"),
    ])
    assert a.js("import", "--root", str(claude_home))["messages"] == 3
    a.js("sync", "--once")
    b.js("sync", "--once")
    return a, b, log


def verify(h: Home, *args: str) -> tuple[int, dict[str, Any], str]:
    r = h.cx("verify", "--json", *args)
    assert "Traceback" not in r.stderr
    return r.returncode, json.loads(r.stdout), r.stderr


def _write(h: Home, *sql: tuple[str, tuple[Any, ...]]) -> None:
    c = apsw.Connection(str(h.db_path))
    try:
        with c:
            for q, args in sql:
                c.execute(q, args)
    finally:
        c.close()


def test_verify_finds_no_difference_after_a_clean_sync(pair: tuple[Home, Home, Path]) -> None:
    a, b, _ = pair
    for h in (a, b):
        code, rep, _ = verify(h)
        assert code == 0 and rep["differences"] == 0
        (u,) = [s for s in rep["streams"] if s["stream"] == "u/ada"]
        assert u["log_events"] == u["local_events"] > 3
    assert "identical" in b.cx("verify").stdout


def test_a_message_deleted_from_a_cache_is_named_and_repaired(pair: tuple[Home, Home, Path]) -> None:
    a, b, _ = pair
    ((eid, mid),) = b.rows("SELECT event_id, id FROM messages WHERE cx_text(event_id) LIKE '%verifyanswer%'")
    # The index follows the row by trigger.
    _write(b, ("DELETE FROM messages WHERE id = ?", (mid,)), ("DELETE FROM events WHERE event_id = ?", (eid,)))
    assert b.js("query", "verifyanswer") == []
    code, rep, err = verify(b)
    assert code == 1 and rep["differences"] == 1 and "1 difference(s)" in err
    (u,) = [s for s in rep["streams"] if s["stream"] == "u/ada"]
    assert u["missing_local"] == [eid]
    assert u["sessions"] == {SID: {"log": 3, "local": 2}}
    human = b.cx("verify")
    assert human.returncode == 1 and f"missing from the cache: {eid}" in human.stdout
    code, rep, _ = verify(b, "--repair")
    assert code == 0 and rep["streams"][0]["repaired"]["applied"] == 1
    assert len(b.js("query", "verifyanswer")) == 1
    assert verify(b)[0] == 0


def test_events_a_replaced_log_lost_are_named_and_published_again(pair: tuple[Home, Home, Path],
                                                                  tmp_path: Path) -> None:
    a, b, log = pair
    for suffix in ("", "-wal", "-shm", "-head"):
        Path(str(log) + suffix).unlink(missing_ok=True)
    code, rep, _ = verify(a, "--stream", "u/ada")
    (u,) = rep["streams"]
    acked = [eid for (eid,) in a.rows("SELECT e.event_id FROM outbox o JOIN events e ON e.seq = o.event_seq"
                                      " WHERE o.stream = 'u/ada' ORDER BY o.seq")]
    assert code == 1 and u["log_events"] == 0 and u["missing_in_log"] == acked
    code, rep, _ = verify(a, "--stream", "u/ada", "--repair")
    assert code == 0 and rep["streams"][0]["repaired"]["republished"] == len(acked)
    assert verify(a, "--stream", "u/ada")[0] == 0
    fresh = Home(tmp_path, "new-machine", log)
    fresh.js("sync", "--once")
    assert len(fresh.js("query", "verifytoken")) == 1


def test_content_that_differs_is_reported_and_left_alone(pair: tuple[Home, Home, Path]) -> None:
    _, b, _ = pair
    ((eid, payload),) = b.rows("SELECT e.event_id, e.payload FROM events e JOIN messages m ON m.event_id ="
                                " e.event_id WHERE cx_text(m.event_id) LIKE '%secondprompt%'")
    e = ev.decode(payload)
    forged = ev.ContextEvent(e.type, e.event_id, e.tenant, e.user, e.machine, e.timestamp,
                             {**e.data, "content": "something else entirely"})
    _write(b, ("UPDATE events SET payload = ? WHERE event_id = ?", (ev.encode(forged), eid)))
    code, rep, _ = verify(b, "--repair")
    assert code == 1 and rep["streams"][0]["mismatched"] == [eid]
    assert b.rows("SELECT payload FROM events WHERE event_id = ?", eid) == [(ev.encode(forged),)]


def test_pending_events_are_counted_not_reported(pair: tuple[Home, Home, Path], claude_home: Path) -> None:
    a, _, _ = pair
    T.write(T.session_file(claude_home, SID), [T.user(SID, "written after the sync")], mode="ab")
    a.js("import", "--root", str(claude_home))
    code, rep, _ = verify(a, "--stream", "u/ada")
    assert code == 0 and rep["streams"][0]["pending"] >= 1


def test_verify_needs_a_log_and_a_valid_stream(tmp_path: Path) -> None:
    r = Home(tmp_path).cx("verify")
    assert r.returncode == 1 and "no cache at" in r.stderr and "Traceback" not in r.stderr
    log_home = Home(tmp_path, "x", tmp_path / "log.db")
    r = log_home.cx("verify", "--stream", "../etc")
    assert r.returncode == 2 and "invalid stream" in r.stderr
