"""cxsync.agent.autostart and packaging/: every template is valid for its consumer; enable/disable/status
round-trip into a fake HOME for each platform; systemctl never touches the real session from a test."""

from __future__ import annotations

import configparser
import os
import plistlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cxsync.agent import autostart
from cxsync.sync.errors import CxError, UsageError
from cxsync.agent.paths import Paths

REPO = Path(__file__).resolve().parents[1]
EXE = "/opt/cx sync/bin/cxsync"  # a space on purpose: every format must quote it


def unit_parser(text: str) -> configparser.ConfigParser:
    # systemd allows repeated keys (Environment=) and uses % specifiers: no strictness, no interpolation
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment, method-assign]
    cp.read_string(text)
    return cp


def paths_in(tmp_path: Path) -> Paths:
    base = tmp_path / "cxhome"
    return Paths(base, base / "data", base / "state", base / "logs", base / "run")


@pytest.fixture(autouse=True)
def _never_run_systemctl(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(autostart, "_systemctl", lambda *args: calls.append(args) or True)
    return calls


# --- packaging/ ------------------------------------------------------------------------------------------------

def test_no_packaging_init_shadows_pypi_packaging() -> None:
    assert not (REPO / "packaging" / "__init__.py").exists()


@pytest.mark.parametrize("kind", sorted(autostart.TEMPLATES))
def test_packaging_files_are_the_templates_autostart_installs(kind: str) -> None:
    on_disk = (REPO / autostart.PACKAGING_FILES[kind]).read_bytes()
    assert on_disk == autostart.TEMPLATES[kind].encode("utf-8")
    assert autostart.PLACEHOLDER.encode() in on_disk


def test_launchd_plist_parses_and_runs_the_tray_at_load() -> None:
    data = plistlib.loads((REPO / autostart.PACKAGING_FILES["launchd"]).read_bytes())
    assert data["Label"] == autostart.LAUNCHD_LABEL == "io.coditect.cxsync"
    assert data["ProgramArguments"] == ["@CXSYNC@", "tray"]
    assert data["RunAtLoad"] is True
    assert data["KeepAlive"] == {"SuccessfulExit": False}


def test_systemd_unit_parses_with_exec_restart_and_install() -> None:
    cp = unit_parser((REPO / autostart.PACKAGING_FILES["systemd"]).read_text())
    assert set(cp.sections()) == {"Unit", "Service", "Install"}
    assert cp["Service"]["ExecStart"] == "@CXSYNC@ run"
    assert cp["Service"]["Restart"] == "on-failure"
    assert cp["Install"]["WantedBy"] == "default.target"
    assert cp["Unit"]["Description"]


def test_xdg_desktop_entry_has_the_required_keys() -> None:
    cp = unit_parser((REPO / autostart.PACKAGING_FILES["xdg"]).read_text())
    entry = cp["Desktop Entry"]
    assert entry["Type"] == "Application"
    assert entry["Name"] == "cxsync"
    assert entry["Exec"] == "@CXSYNC@ tray"
    assert entry["X-GNOME-Autostart-enabled"] == "true"
    assert entry["Terminal"] == "false"


def test_windows_startup_script_is_crlf_and_starts_the_tray() -> None:
    raw = (REPO / autostart.PACKAGING_FILES["windows"]).read_bytes()
    assert raw.count(b"\r\n") == raw.count(b"\n") >= 3
    assert b'start "cxsync" /min "@CXSYNC@" tray' in raw


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None,
                    reason="desktop-file-validate not installed (Debian: desktop-file-utils)")
def test_desktop_entries_pass_desktop_file_validate(tmp_path: Path) -> None:
    rendered = tmp_path / "cxsync-tray.desktop"
    rendered.write_text(autostart.render("xdg", EXE, cxsync_home="/home/me/cx profile"))
    for path in (REPO / autostart.PACKAGING_FILES["xdg"], rendered):
        out = subprocess.run(["desktop-file-validate", str(path)], capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_rendered_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    exe = tmp_path / "my bin" / "cxsync"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    unit = tmp_path / "cxsync.service"
    unit.write_text(autostart.render("systemd", str(exe), cxsync_home=str(tmp_path / "cx home")))
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert str(unit) not in out.stderr, f"systemd warned about the unit:\n{out.stderr}"


def test_rendered_unit_quotes_the_executable_and_carries_cxsync_home() -> None:
    cp = unit_parser(autostart.render("systemd", "/opt/100% real/cxsync", cxsync_home="/home/me/cx profile"))
    assert cp["Service"]["ExecStart"] == '"/opt/100%% real/cxsync" run'
    import shlex  # systemd splits Environment= like a shell: several assignments, each quoted if need be

    assert shlex.split(cp["Service"]["Environment"]) == ["PYTHONUNBUFFERED=1", "CXSYNC_HOME=/home/me/cx profile"]


def test_unit_without_a_found_executable_uses_the_user_bin_default() -> None:
    cp = unit_parser(autostart.render("systemd", None))
    assert cp["Service"]["ExecStart"] == "%h/.local/bin/cxsync run"


def test_rendered_plist_has_real_arguments_logs_and_environment(tmp_path: Path) -> None:
    paths = paths_in(tmp_path)
    data = plistlib.loads(autostart.render("launchd", EXE, paths.log_dir, "/Users/me/cx").encode())
    assert data["ProgramArguments"] == [EXE, "tray"]
    assert data["StandardErrorPath"] == str(paths.log_dir / "launchd.err.log")
    assert data["EnvironmentVariables"] == {"CXSYNC_HOME": "/Users/me/cx"}


def test_windows_script_refuses_a_path_with_a_quote() -> None:
    with pytest.raises(CxError):
        autostart.render("windows", 'C:\\odd"name\\cxsync.exe')


# --- enable / disable / status round trips ---------------------------------------------------------------------

CASES = [
    ("linux", "systemd", ".config/systemd/user/cxsync.service", [EXE, "run"]),
    ("linux", "xdg", ".config/autostart/cxsync-tray.desktop", [EXE, "tray"]),
    ("darwin", "auto", "Library/LaunchAgents/io.coditect.cxsync.plist", [EXE, "tray"]),
    ("win32", "auto", "AppData/Roaming/Microsoft/Windows/Start Menu/Programs/Startup/cxsync-startup.cmd",
     [EXE, "tray"]),
]


@pytest.mark.parametrize("platform, mode, rel, command", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_enable_status_disable_round_trip(tmp_path: Path, platform: str, mode: str, rel: str,
                                          command: list[str]) -> None:
    home = tmp_path / "home"
    env: dict[str, str] = {}
    assert autostart.status(platform=platform, home=home, environ=env)["enabled"] is False

    path = autostart.enable(paths_in(tmp_path), platform=platform, home=home, mode=mode, executable=EXE,
                            environ=env)
    assert path == home / rel and path.is_file()
    assert autostart.enable(paths_in(tmp_path), platform=platform, home=home, mode=mode, executable=EXE,
                            environ=env) == path, "enable is idempotent"

    st = autostart.status(platform=platform, home=home, environ=env)
    assert st["enabled"] is True
    entry = next(e for e in st["entries"] if e["installed"])
    assert entry["path"] == str(path)
    assert entry["executable"] == EXE
    assert [a.strip('"') for a in entry["command"]] == command
    assert entry["stale"] is True  # EXE does not exist on this machine

    assert autostart.disable(platform=platform, home=home, environ=env) == [path]
    assert not path.exists()
    assert autostart.status(platform=platform, home=home, environ=env)["enabled"] is False
    assert autostart.disable(platform=platform, home=home, environ=env) == []


def test_an_existing_executable_is_not_stale(tmp_path: Path) -> None:
    exe = tmp_path / "cxsync"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    autostart.enable(platform="linux", home=tmp_path, mode="xdg", executable=str(exe), environ={})
    entry = autostart.status(platform="linux", home=tmp_path, environ={})["entries"][1]
    assert entry["installed"] and entry["stale"] is False


def test_linux_can_have_both_the_unit_and_the_tray_entry(tmp_path: Path) -> None:
    for mode in ("systemd", "xdg"):
        autostart.enable(platform="linux", home=tmp_path, mode=mode, executable=EXE, environ={})
    st = autostart.status(platform="linux", home=tmp_path, environ={})
    assert st["kinds"] == ["systemd", "xdg"]
    assert len(autostart.disable(platform="linux", home=tmp_path, environ={})) == 2


@pytest.mark.parametrize("available, kind", [(True, "systemd"), (False, "xdg")])
def test_auto_on_linux_prefers_systemd_where_it_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     available: bool, kind: str) -> None:
    monkeypatch.setattr(autostart, "_systemd_available", lambda: available)
    path = autostart.enable(platform="linux", home=tmp_path, executable=EXE, environ={})
    assert autostart.status(platform="linux", home=tmp_path, environ={})["kinds"] == [kind]
    assert path.name == ("cxsync.service" if kind == "systemd" else "cxsync-tray.desktop")


def test_systemctl_is_not_run_for_a_home_that_is_not_the_users(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _never_run_systemctl: list[tuple[str, ...]]) -> None:
    monkeypatch.setattr(autostart, "_systemd_available", lambda: True)
    autostart.enable(platform="linux", home=tmp_path, mode="systemd", executable=EXE, environ={})
    autostart.disable(platform="linux", home=tmp_path, environ={})
    assert _never_run_systemctl == []


def test_systemctl_enables_and_disables_the_unit_when_asked(
        tmp_path: Path, _never_run_systemctl: list[tuple[str, ...]]) -> None:
    autostart.enable(platform="linux", home=tmp_path, mode="systemd", executable=EXE, environ={},
                     use_systemctl=True)
    assert _never_run_systemctl == [("daemon-reload",), ("enable", "cxsync.service")]
    _never_run_systemctl.clear()
    autostart.disable(platform="linux", home=tmp_path, environ={}, use_systemctl=True)
    assert _never_run_systemctl == [("disable", "cxsync.service"), ("daemon-reload",)]


@pytest.mark.parametrize("platform, mode", [("linux", "systemd"), ("linux", "xdg"), ("darwin", "auto"),
                                            ("win32", "auto")])
def test_cxsync_home_is_carried_into_the_entry(tmp_path: Path, platform: str, mode: str) -> None:
    env = {"CXSYNC_HOME": "/profiles/work cx"}
    path = autostart.enable(platform=platform, home=tmp_path, mode=mode, executable=EXE, environ=env)
    text = path.read_text(encoding="utf-8")
    assert "/profiles/work cx" in text
    st = autostart.status(platform=platform, home=tmp_path, environ=env)
    assert next(e for e in st["entries"] if e["installed"])["executable"] == EXE


def test_xdg_config_home_is_only_honoured_for_the_real_home(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "elsewhere")}
    path = autostart.enable(platform="linux", home=tmp_path / "fake", mode="xdg", executable=EXE, environ=env)
    assert path == tmp_path / "fake" / ".config" / "autostart" / "cxsync-tray.desktop"


def test_unknown_platform_and_wrong_mode_are_errors(tmp_path: Path) -> None:
    with pytest.raises(CxError):
        autostart.enable(platform="os2", home=tmp_path, executable=EXE, environ={})
    with pytest.raises(UsageError):
        autostart.enable(platform="darwin", home=tmp_path, mode="systemd", executable=EXE, environ={})
    with pytest.raises(UsageError):
        autostart.render("upstart", EXE)


def test_enable_without_an_executable_finds_the_installed_script(tmp_path: Path) -> None:
    found = autostart.find_executable("linux")
    path = autostart.enable(platform="linux", home=tmp_path, mode="xdg", environ={})
    entry: dict[str, Any] = autostart.status(platform="linux", home=tmp_path, environ={})["entries"][1]
    if found is None:
        assert entry["executable"] == "cxsync"
    else:
        assert entry["executable"] == found and os.access(found, os.X_OK)
        assert entry["stale"] is False
    assert path.stat().st_mode & 0o777 == 0o644
