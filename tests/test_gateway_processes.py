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


def test_serve_with_tls_cert_and_key_and_the_quota_command(tmp_path: Path) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    env = {"CXSYNC_HOME": str(tmp_path / "home"), "CXSYNC_SERVE_LOG": f"sqlite:{tmp_path / 'srv' / 'log.db'}"}
    token = cx(env, "token", "create", "--tenant", "acme", "--user", "alice").stdout.strip()
    quota = cx(env, "token", "quota", "--tenant", "acme", "--events-per-day", "1", "--json")
    assert quota.returncode == 0 and json.loads(quota.stdout)["events_per_day"] == 1
    tls = ("--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem"), "--host", "0.0.0.0")
    with ProcessServer(env["CXSYNC_SERVE_LOG"], env, tls, verify=ssl.create_default_context(
            cafile=str(tmp_path / "ca.pem"))) as server:
        assert server.url.startswith("https://")
        log = HttpEventLog(server.url, "acme", token, tls_ca=str(tmp_path / "ca.pem"))
        log.append("u/alice", [make_event("acme", "one")])
        from cxsync.sync.port import QuotaExceeded

        try:
            log.append("u/alice", [make_event("acme", "two")])
            raise AssertionError("the quota set with `cxsync token quota` was not enforced")
        except QuotaExceeded as exc:
            assert "daily event quota reached: 1 of 1" in exc.title
    used = json.loads(cx(env, "token", "quota", "--tenant", "acme", "--json").stdout)
    assert used["events_today"] == 1


def test_doctor_checks_a_gateway_target(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from cxsync.agent.cli_doctor import FAIL, OK, check_target
    from tests.gateway_servers import ThreadServer, sqlite_backend

    def cfg(url: str) -> SimpleNamespace:
        return SimpleNamespace(sync=SimpleNamespace(target=url, tls={}),
                               paths=SimpleNamespace(config_file=tmp_path / "config.toml"))

    with ThreadServer(*sqlite_backend(tmp_path)) as server:
        [up] = list(check_target(cfg(server.url), ""))
        url = server.url
    assert up.status == OK and "gateway health: 200" in up.detail
    [down] = list(check_target(cfg(url), ""))
    assert down.status == FAIL and "cxsync serve" in down.hint
