"""cxsync.agent.cli_desktop: tray, login, logout and autostart on a bare click group (the root is the lead's),
with an in-memory keyring and CXSYNC_HOME / HOME in tmp_path."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Iterator

import click
import pytest
from click.testing import CliRunner, Result
from keyring.backends import fail

from cxsync.agent import autostart, cli_desktop
from cxsync.agent.config import load_config
from cxsync.sync.errors import EXIT_NO_CREDENTIALS, CxError, NoCredentials, UsageError
from tests.memory_keyring import MemoryKeyring, using


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"CXSYNC_HOME": str(tmp_path / "cx"), "HOME": str(tmp_path / "home"), "CXSYNC_TENANT": "acme",
              "CXSYNC_USER": "alice"}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    for key in ("CXSYNC_TOKEN", "XDG_CONFIG_HOME", "DISPLAY", "WAYLAND_DISPLAY", "PYSTRAY_BACKEND"):
        monkeypatch.delenv(key, raising=False)
    # never the real session's systemd, whatever machine runs the tests
    monkeypatch.setattr(autostart, "_systemd_available", lambda: False)
    monkeypatch.setattr(autostart, "_systemctl", lambda *a: pytest.fail(f"systemctl {a} called"))
    return values


@pytest.fixture
def memory() -> Iterator[MemoryKeyring]:
    with using(MemoryKeyring()) as kr:
        yield kr  # type: ignore[misc]


def cli() -> click.Group:
    group = click.Group("cxsync")
    cli_desktop.register(group)
    return group


def invoke(*args: str, input: str | None = None, obj: object = None) -> Result:
    return CliRunner().invoke(cli(), list(args), input=input, obj=obj)


def test_register_adds_the_desktop_commands() -> None:
    group = cli()
    assert set(group.commands) == {"tray", "login", "logout", "autostart"}
    autostart_group = group.commands["autostart"]
    assert isinstance(autostart_group, click.Group)
    assert set(autostart_group.commands) == {"enable", "disable", "status"}


def test_importing_the_commands_loads_no_heavy_module() -> None:
    code = ("import sys, cxsync.agent.cli_desktop; "
            "print(sorted(m for m in ('pystray', 'PIL', 'keyring') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_login_from_stdin_stores_the_secret_in_the_keyring(env: dict[str, str], memory: MemoryKeyring) -> None:
    result = invoke("login", "--token-stdin", input="tok-123\n")
    assert result.exit_code == 0, result.output
    assert memory.store == {("cxsync", "acme/alice"): "tok-123"}
    assert "tok-123" not in result.output
    assert "Stored the credential for acme/alice in memory keyring MemoryKeyring" in result.output


def test_login_prompts_without_echo(env: dict[str, str], memory: MemoryKeyring) -> None:
    result = invoke("login", input="passphrase-xyz\n")
    assert result.exit_code == 0, result.output
    assert memory.store[("cxsync", "acme/alice")] == "passphrase-xyz"
    assert "passphrase-xyz" not in result.output
    assert "FDB TLS key passphrase or gateway token" in result.output


def test_login_with_nothing_is_a_usage_error(env: dict[str, str], memory: MemoryKeyring) -> None:
    result = invoke("login", "--token-stdin", input="\n")
    assert isinstance(result.exception, UsageError)
    assert memory.store == {}


def test_login_without_a_keyring_is_no_credentials_exit_4(env: dict[str, str]) -> None:
    with using(fail.Keyring()):
        result = invoke("login", "--token-stdin", input="tok\n")
    assert isinstance(result.exception, NoCredentials)
    assert result.exception.exit_code == EXIT_NO_CREDENTIALS
    assert "CXSYNC_TOKEN" in result.exception.hint


def test_login_warns_when_the_env_token_overrides(env: dict[str, str], memory: MemoryKeyring,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXSYNC_TOKEN", "ci-token")
    result = invoke("login", "--token-stdin", input="tok\n")
    assert result.exit_code == 0
    assert "CXSYNC_TOKEN is set in this environment and takes precedence" in result.output
    assert memory.store[("cxsync", "acme/alice")] == "tok"


def test_login_nudges_a_running_agent_to_retry(env: dict[str, str], memory: MemoryKeyring,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import cxsync.agent

    sent: list[str] = []
    control = types.ModuleType("cxsync.agent.control")
    control.send = lambda paths, command, timeout=2.0: sent.append(command) or {}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cxsync.agent.control", control)
    monkeypatch.setattr(cxsync.agent, "control", control, raising=False)
    assert invoke("login", "--token-stdin", input="tok\n").exit_code == 0
    assert sent == ["sync-now"]


def test_logout_removes_and_then_reports_nothing_to_remove(env: dict[str, str], memory: MemoryKeyring) -> None:
    memory.store[("cxsync", "acme/alice")] = "tok"
    first = invoke("logout")
    assert first.exit_code == 0 and "Removed the credential for acme/alice" in first.output
    assert memory.store == {}
    second = invoke("logout")
    assert second.exit_code == 0 and "No credential for acme/alice was stored" in second.output


def test_commands_use_the_roots_config_when_it_provides_one(env: dict[str, str], memory: MemoryKeyring,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXSYNC_USER", "bob")
    cfg = load_config()
    monkeypatch.setenv("CXSYNC_USER", "alice")
    result = invoke("login", "--token-stdin", input="tok\n", obj=types.SimpleNamespace(config=cfg))
    assert result.exit_code == 0
    assert ("cxsync", "acme/bob") in memory.store


def test_autostart_enable_status_disable_json(env: dict[str, str]) -> None:
    home = Path(env["HOME"])
    enabled = invoke("autostart", "enable", "--json")
    assert enabled.exit_code == 0, enabled.output
    path = Path(json.loads(enabled.output)["path"])
    assert path == home / ".config" / "autostart" / "cxsync-tray.desktop" and path.is_file()
    assert f"CXSYNC_HOME={env['CXSYNC_HOME']}" in path.read_text()

    status = json.loads(invoke("autostart", "status", "--json").output)
    assert status["enabled"] is True and status["kinds"] == ["xdg"]

    human = invoke("autostart", "status")
    assert human.output.startswith("autostart: enabled (xdg)")

    disabled = invoke("autostart", "disable", "--json")
    assert json.loads(disabled.output) == {"removed": [str(path)]}
    assert invoke("autostart", "status").output.startswith("autostart: disabled")
    assert "not enabled" in invoke("autostart", "disable").output


def test_autostart_enable_human_output_is_the_path(env: dict[str, str]) -> None:
    result = invoke("autostart", "enable", "--mode", "systemd")
    assert result.exit_code == 0
    unit = Path(env["HOME"]) / ".config" / "systemd" / "user" / "cxsync.service"
    assert result.output.splitlines()[0] == str(unit)


def test_tray_without_a_display_is_the_clear_error(env: dict[str, str]) -> None:
    result = invoke("tray")
    assert isinstance(result.exception, CxError)
    assert result.exception.title.startswith("no display: cxsync tray needs a graphical session")
    assert result.exception.hint == "run `cxsync run` for the headless agent"
