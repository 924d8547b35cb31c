"""A running agent against a real gateway: a refused token shows as needs-auth, and a new login recovers it
without a restart."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cxsync.agent.config import load_config
from cxsync.agent.supervisor import Supervisor
from cxsync.sync.tokens import create_token
from tests import transcripts as T
from tests.gateway_servers import ThreadServer, sqlite_backend
from tests.helpers import wait_until

SID = "5e550000-0000-4000-8000-0000000000aa"


def test_a_revoked_token_puts_the_agent_in_needs_auth_and_a_new_token_recovers_it(
        tmp_path: Path, claude_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opener, store = sqlite_backend(tmp_path)
    token, record = create_token(store, "acme", "bob")
    with ThreadServer(opener, store) as server:
        home = tmp_path / "cx"
        home.mkdir()
        (home / "config.toml").write_text('[identity]\ntenant = "acme"\nuser = "bob"\nmachine = "m"\n'
                                          f'[transcripts]\nroots = ["{claude_home}"]\n'
                                          f'[sync]\ntarget = "{server.url}"\n')
        T.write(T.session_file(claude_home, SID), [T.user(SID, "hello gateway")])
        store.revoke("acme", record.token_id, time.time())
        monkeypatch.setenv("CXSYNC_TOKEN", token)
        cfg = load_config(env={**os.environ, "CXSYNC_HOME": str(home)})
        sup = Supervisor(cfg)
        sup.start()
        try:
            wait_until(lambda: sup.snapshot()["state"] == "needs-auth", 20, what="needs-auth")
            assert "needs-auth" in str(sup.snapshot()["last_error"])
            monkeypatch.setenv("CXSYNC_TOKEN", create_token(store, "acme", "bob")[0])  # a new `cxsync login`
            sup.sync_now()
            wait_until(lambda: sup.snapshot()["outbox"] == 0, 30, what="the outbox drained with the new token")
        finally:
            sup.stop(10)
