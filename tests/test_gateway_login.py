"""`cxsync login --gateway URL`: the gateway says who the token is; the token goes to the keyring under that
identity, the config points at the gateway, and the agent's log then reads the token from the keyring."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import click
import pytest
from click.testing import CliRunner

from cxsync.agent import app, cli_desktop
from cxsync.agent.config import load_config
from cxsync.sync.tokens import create_token
from tests.gateway_servers import ThreadServer, sqlite_backend
from tests.helpers import make_event
from tests.memory_keyring import MemoryKeyring, using


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CXSYNC_HOME", str(tmp_path / "cx"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for key in ("CXSYNC_TOKEN", "CXSYNC_TENANT", "CXSYNC_USER", "CXSYNC_SYNC_TARGET", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path / "cx"


@pytest.fixture
def memory() -> Iterator[MemoryKeyring]:
    with using(MemoryKeyring()) as kr:
        yield kr  # type: ignore[misc]


def login(*args: str, input: str) -> click.testing.Result:
    group = click.Group("cxsync")
    cli_desktop.register(group)
    return CliRunner().invoke(group, ["login", *args], input=input)


def test_login_gateway_adopts_the_tokens_identity_and_points_the_agent_at_the_gateway(
        tmp_path: Path, home: Path, memory: MemoryKeyring) -> None:
    opener, store = sqlite_backend(tmp_path)
    token = create_token(store, "acme", "alice", ["web"])[0]
    with ThreadServer(opener, store) as server:
        load_config()  # first use: a generated identity (tenant "personal")
        result = login("--gateway", server.url, "--token-stdin", input=token + "\n")
        assert result.exit_code == 0, result.output
        assert token not in result.output and "as alice@acme" in result.output
        assert memory.store == {("cxsync", "acme/alice"): token}
        cfg = load_config()
        assert (cfg.identity.tenant, cfg.identity.user, cfg.sync.target) == ("acme", "alice", server.url)
        assert cfg.sync.subscribe == ("u/alice", "team", "p/web")
        assert (home / "config.toml.bak").exists()
        event_log = app.open_log(cfg)  # the gateway adapter (behind whatever the agent wraps it in)
        event_log.append("team", [make_event("acme", "after-login")])
        assert len(event_log.read("team", None)) == 1
        event_log.close()


def test_login_gateway_with_a_refused_token_stores_nothing(tmp_path: Path, home: Path, memory: MemoryKeyring) -> None:
    opener, store = sqlite_backend(tmp_path)
    with ThreadServer(opener, store) as server:
        result = login("--gateway", server.url, "--token-stdin", input="cxs_acme~0123456789abcdef~" + "A" * 43)
        assert result.exit_code != 0
        assert "did not accept the token" in str(result.exception) or "did not accept" in result.output
        assert memory.store == {}
