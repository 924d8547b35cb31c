"""Two machines of one user, each its own CXSYNC_HOME, one embedded log: the user's story, through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import transcripts as T


class Machine:
    def __init__(self, tmp: Path, name: str, log: Path) -> None:
        self.home = tmp / f"cx-{name}"
        self.home.mkdir()
        (self.home / "config.toml").write_text(
            f'[identity]\ntenant = "acme"\nuser = "bob"\nmachine = "{name}"\n'
            f'[sync]\ntarget = "sqlite:{log}"\n')
        self.claude = tmp / f"claude-{name}"
        (self.claude / "projects").mkdir(parents=True)

    def cx(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CXSYNC_HOME": str(self.home)}
        return subprocess.run([sys.executable, "-m", "cxsync.agent", *args], capture_output=True, text=True,
                              env=env, timeout=120)

    def js(self, *args: str):
        r = self.cx(*args, "--json")
        assert r.returncode in (0, 3), r.stderr
        return json.loads(r.stdout)


@pytest.fixture
def machines(tmp_path: Path):
    log = tmp_path / "shared-log.db"
    return Machine(tmp_path, "laptop", log), Machine(tmp_path, "desktop", log)


def test_two_machines_converge_through_the_embedded_log(machines, real_fixtures) -> None:
    a, b = machines
    assert a.js("import", "--root", str(real_fixtures))["messages"] > 900
    pushed = a.js("sync", "--once")
    assert pushed["pushed"] > 0 and pushed["outbox"] == 0
    pulled = b.js("sync", "--once")
    assert pulled["pulled"]["u/bob"]["applied"] == pushed["pushed"]
    for q in ("compaction", "phoenix server", "localStorage"):
        assert b.js("query", q, "--limit", "20") == a.js("query", q, "--limit", "20")
    # the same sessions; each machine marks as remote the ones captured on the other (issue 13/14: `remote`)
    def same(rows: list[dict]) -> list[dict]:  # type: ignore[type-arg]
        return [{k: v for k, v in r.items() if k != "remote"} for r in rows]

    assert same(b.js("sessions")) == same(a.js("sessions"))
    assert all(r["remote"] for r in b.js("sessions")) and not any(r["remote"] for r in a.js("sessions"))

    s = "b0b0b0b0-0000-4000-8000-00000000b0b0"
    T.write(T.session_file(b.claude, s), [T.user(s, "desktop only question about quaternions"),
                                          *T.assistant_lines(s, [T.text("quaternions rotate things")])])
    assert b.js("import", "--root", str(b.claude))["messages"] == 2
    b.js("sync", "--once")
    got = a.js("sync", "--once")
    assert got["pulled"]["u/bob"]["applied"] >= 3
    assert [h["session"] for h in a.js("query", "quaternions")] == [s, s]

    for _ in range(3):
        a.js("sync", "--once")
        b.js("sync", "--once")
    sa, sb = a.js("status"), b.js("status")
    assert sa["messages"] == sb["messages"]
    assert sa["outbox"] == sb["outbox"] == 0
    assert sa["last_push"] and sa["last_pull"] and sa["streams"]["u/bob"]["cursor"]
    assert a.js("query", "quaternions") == b.js("query", "quaternions")


def test_sync_without_target_is_a_clear_error(tmp_path: Path) -> None:
    env = {**os.environ, "CXSYNC_HOME": str(tmp_path / "h")}
    r = subprocess.run([sys.executable, "-m", "cxsync.agent", "sync", "--once"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 2 and "sync is not configured" in r.stderr and "Traceback" not in r.stderr


def test_choosing_fdb_without_libfdb_c_says_what_to_install(tmp_path: Path) -> None:
    env = {**os.environ, "CXSYNC_HOME": str(tmp_path / "h"), "CXSYNC_SYNC_TARGET": "fdb"}
    r = subprocess.run([sys.executable, "-m", "cxsync.agent", "sync", "--once"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "foundationdb" in r.stderr.lower() and "install" in r.stderr.lower()
    # every other command keeps working
    r = subprocess.run([sys.executable, "-m", "cxsync.agent", "status", "--json"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 3 and json.loads(r.stdout)["target"] == "fdb"
