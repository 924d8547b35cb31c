"""Help that helps: full command descriptions, every option described (with its default), an example per command,
``--debug`` after the subcommand, ``paths`` that creates nothing — through the CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from cxsync.agent.cli import main


def cx(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cxsync.agent", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, cmd in group.commands.items():
        out.append(prefix + (name,))
        if isinstance(cmd, click.Group):
            out.extend(_commands(cmd, prefix + (name,)))
    return out


COMMANDS = _commands(main)


@pytest.mark.parametrize("columns", ["80", "120"])
def test_root_help_never_truncates_a_command_description(columns: str) -> None:
    r = cx("--help", env={"COLUMNS": columns})
    assert r.returncode == 0
    commands = r.stdout.split("Commands:", 1)[1]
    assert "..." not in commands
    assert "XDG autostart, LaunchAgent, Startup folder)" in " ".join(commands.split())


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_an_example_and_every_option_a_description(path: tuple[str, ...]) -> None:
    r = cx(*path, "--help", env={"COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    assert "Example" in r.stdout and "cxsync " + " ".join(path) in r.stdout.split("Example", 1)[1]
    cmd: click.Command = main
    for name in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[name]
    for param in cmd.params:
        if isinstance(param, click.Option):
            assert param.help, f"{' '.join(path)} {param.opts[0]} has no description"
            assert " ".join(param.help.split()) in " ".join(r.stdout.split())


def test_defaults_are_shown() -> None:
    out = " ".join(cx("query", "--help").stdout.split())
    assert "[default: 10;" in out and "[default: table]" in out and "[default: all, user prompts ranked first]" in out


def test_debug_is_accepted_after_the_subcommand(tmp_path: Path) -> None:
    r = cx("sessions", "--debug")
    assert r.returncode == 1
    assert "Traceback" in r.stderr  # --debug took effect: the traceback is shown
    plain = cx("sessions")
    assert plain.returncode == 1 and "Traceback" not in plain.stderr


def test_paths_creates_nothing(cxhome: Path) -> None:
    r = cx("paths")
    assert r.returncode == 0, r.stderr
    assert str(cxhome / "config.toml") in r.stdout
    assert not cxhome.exists()
