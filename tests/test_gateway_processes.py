"""Two `cxsync serve` processes over one backend (as behind a load balancer): tokens made with `cxsync token`
are honoured by both and revoked on both at once; no token reaches either server's log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from cxsync.sync.http_log import GatewayAuthError, HttpEventLog
from tests.gateway_servers import ProcessServer
from tests.helpers import make_event


def cx(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cxsync.agent", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60, input=stdin)


def test_two_servers_over_one_backend_share_tokens_and_revocation(tmp_path: Path) -> None:
    env = {"CXSYNC_HOME": str(tmp_path / "home")}
    target = f"sqlite:{tmp_path / 'srv' / 'log.db'}"
    made = cx(env, "token", "create", "--log", target, "--tenant", "acme", "--user", "alice", "--json")
    assert made.returncode == 0, made.stderr
    token, token_id = json.loads(made.stdout)["token"], json.loads(made.stdout)["id"]
    with ProcessServer(target, env) as one, ProcessServer(target, env) as two:
        # written through one, read through the other: one log, one token store
        (cursor,) = HttpEventLog(one.url, "acme", token).append("team", [make_event("acme", "via-one")])
        via_two = HttpEventLog(two.url, "acme", token)
        assert [e.event.event_id for e in via_two.read("team", None)] == ["via-one"]

        # a long-poll held by server two ...
        polled: dict[str, httpx.Response] = {}
        poll = threading.Thread(target=lambda: polled.setdefault("r", httpx.get(
            f"{two.url}/v1/wait", params={"stream": "team", "after": cursor.hex(), "timeout": "25"},
            headers={"Authorization": f"Bearer {token}"}, timeout=40)))
        poll.start()

        def held() -> bool:
            return "cxsync_gateway_waiters 1.0" in httpx.get(f"{two.url}/metrics").text

        from tests.helpers import wait_until

        wait_until(held, 10, what="server two holds the long-poll")
        # ... ends at once when the token is revoked with the CLI, which touches neither server
        started = time.monotonic()
        revoked = cx(env, "token", "revoke", "--log", target, "--tenant", "acme", token_id)
        assert revoked.returncode == 0, revoked.stderr
        poll.join(10)
        assert polled["r"].status_code == 401 and time.monotonic() - started < 3
        for url in (one.url, two.url):
            try:
                HttpEventLog(url, "acme", token).read("team", None)
                raise AssertionError(f"{url} still honours a revoked token")
            except GatewayAuthError as exc:
                assert "revoked" in exc.title
        listed = json.loads(cx(env, "token", "list", "--log", target, "--json").stdout)
        assert [(t["id"], t["state"]) for t in listed] == [(token_id, "revoked")]
        assert "token" not in listed[0] and "digest" not in listed[0]
    secret = token.split("~")[2]
    for server in (one, two):
        out = server.output()
        assert "GET /v1/read" in out  # the access log is on ...
        assert secret not in out  # ... and never holds a token


def test_serve_refuses_plain_http_beyond_loopback(tmp_path: Path) -> None:
    r = cx({"CXSYNC_HOME": str(tmp_path)}, "serve", "--host", "0.0.0.0", "--log", f"sqlite:{tmp_path / 'l.db'}")
    assert r.returncode == 2 and "--tls-cert" in r.stderr


def test_the_systemd_unit_runs_cxsync_serve_with_tls_and_a_state_directory() -> None:
    import configparser

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(Path(__file__).parent.parent / "packaging" / "systemd" / "cxsync-serve.service")
    service = unit["Service"]
    assert " serve " in service["ExecStart"] and "--tls-cert" in service["ExecStart"]
    assert service["User"] == "cxsync" and service["StateDirectory"] == "cxsync" and service["UMask"] == "0077"
    assert "CXSYNC_SERVE_LOG=sqlite:/var/lib/cxsync/log.db" in service["Environment"]
