"""Two machines of one user, each with its own token, converge through a real gateway via the CLI; a teammate
sees what was published to the team and nothing private."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from cxsync.sync.http_log import HttpEventLog
from cxsync.sync.port import PermanentLogError
from cxsync.sync.tokens import SqliteGatewayStore, create_token
from tests import transcripts as T
from tests.gateway_servers import ThreadServer, sqlite_backend


class Machine:
    def __init__(self, tmp: Path, name: str, user: str, url: str, token: str) -> None:
        self.home = tmp / f"cx-{name}"
        self.home.mkdir()
        (self.home / "config.toml").write_text(
            f'[identity]\ntenant = "acme"\nuser = "{user}"\nmachine = "{name}"\n[sync]\ntarget = "{url}"\n')
        self.token = token
        self.claude = tmp / f"claude-{name}"
        (self.claude / "projects").mkdir(parents=True)

    def cx(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CXSYNC_HOME": str(self.home), "CXSYNC_TOKEN": self.token}
        return subprocess.run([sys.executable, "-m", "cxsync.agent", *args], capture_output=True, text=True,
                              env=env, timeout=180)

    def js(self, *args: str) -> Any:
        r = self.cx(*args, "--json")
        assert r.returncode in (0, 3), r.stderr
        return json.loads(r.stdout)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[ThreadServer, SqliteGatewayStore]]:
    opener, store = sqlite_backend(tmp_path)
    with ThreadServer(opener, store) as server:
        yield server, store  # type: ignore[misc]


def test_two_machines_converge_through_the_gateway_and_a_teammate_sees_only_team(
        tmp_path: Path, gateway: tuple[ThreadServer, SqliteGatewayStore], real_fixtures: Path) -> None:
    server, store = gateway
    laptop = Machine(tmp_path, "laptop", "alice", server.url, create_token(store, "acme", "alice")[0])
    desktop = Machine(tmp_path, "desktop", "alice", server.url, create_token(store, "acme", "alice")[0])
    assert laptop.token != desktop.token
    assert laptop.js("import", "--root", str(real_fixtures))["messages"] > 900
    pushed = laptop.js("sync", "--once")
    assert pushed["pushed"] > 0 and pushed["outbox"] == 0 and pushed["quarantined"] == 0
    pulled = desktop.js("sync", "--once")
    assert pulled["pulled"]["u/alice"]["applied"] == pushed["pushed"]
    for q in ("compaction", "phoenix server"):
        assert desktop.js("query", q, "--limit", "20") == laptop.js("query", q, "--limit", "20")
    def same(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:  # each machine marks the other's as remote
        return [{k: v for k, v in r.items() if k != "remote"} for r in rows]

    assert same(desktop.js("sessions")) == same(laptop.js("sessions"))

    s = "d0d0d0d0-0000-4000-8000-00000000d0d0"
    T.write(T.session_file(desktop.claude, s), [T.user(s, "desktop only question about quaternions"),
                                                *T.assistant_lines(s, [T.text("quaternions rotate things")])])
    assert desktop.js("import", "--root", str(desktop.claude))["messages"] == 2
    desktop.js("sync", "--once")
    assert laptop.js("sync", "--once")["pulled"]["u/alice"]["applied"] >= 3
    assert laptop.js("query", "quaternions", "--limit", "5")

    # alice shares one extracted item with the team, through the CLI
    item = laptop.js("knowledge")[0]["id"]
    shared = laptop.cx("share", item, "--scope", "team")
    assert shared.returncode == 0, shared.stderr
    assert laptop.js("sync", "--once")["pushed"] >= 1

    carol_token = create_token(store, "acme", "carol")[0]
    carol = Machine(tmp_path, "carols-laptop", "carol", server.url, carol_token)
    got = carol.js("sync", "--once")
    assert got["pulled"]["team"]["read"] >= 1 and got["pulled"]["u/carol"]["read"] == 0
    assert [k["id"] for k in carol.js("knowledge", "--scope", "team")] == [item]
    assert carol.js("sessions") == [] and carol.js("query", "quaternions", "--limit", "5") == []
    with pytest.raises(PermanentLogError, match="may not read 'u/alice'"):
        HttpEventLog(server.url, "acme", carol_token).read("u/alice", None)


def test_quota_and_auth_refusals_reach_the_user_through_the_cli(
        tmp_path: Path, gateway: tuple[ThreadServer, SqliteGatewayStore]) -> None:
    from cxsync.sync.tokens import Quota

    server, store = gateway
    token, record = create_token(store, "acme", "dave")
    dave = Machine(tmp_path, "daves-laptop", "dave", server.url, token)
    s = "e0e0e0e0-0000-4000-8000-00000000e0e0"
    T.write(T.session_file(dave.claude, s), [T.user(s, "a question about tides"),
                                             *T.assistant_lines(s, [T.text("the moon")])])
    dave.js("import", "--root", str(dave.claude))
    store.set_quota("acme", Quota(events_per_day=1))
    synced = dave.js("sync", "--once")
    assert synced["pushed"] == 0 and synced["quarantined"] > 0
    status = dave.js("status")
    assert "daily event quota reached" in json.dumps(status["last_error"])

    store.revoke("acme", record.token_id, 0)
    refused = dave.cx("sync", "--once")
    assert refused.returncode != 0
    assert "needs-auth" in refused.stderr and "login --gateway" in refused.stderr
    assert token.split("~")[2] not in refused.stderr + refused.stdout
