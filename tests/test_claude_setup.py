"""`cxsync claude install | uninstall | status` on settings files a person already wrote: merged as one insertion,
everything else byte for byte, idempotent, backed up, and undone exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from cxsync.agent import claude_setup as cs
from cxsync.agent import jsonedit as je
from cxsync.agent.paths import resolve_paths

# As Claude Code and people leave them: two-space state file with other servers (user and per-project),
# a four-space settings file with other hooks, including another tool's SessionStart hook.
CLAUDE_JSON = """{
  "numStartups": 42,
  "mcpServers": {
    "github": {
      "type": "stdio",
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-github"],
      "env": {"GITHUB_TOKEN": "ghp_x"}
    }
  },
  "projects": {
    "/home/u/app": {
      "mcpServers": {"db": {"command": "db-mcp"}},
      "allowedTools": []
    }
  },
  "oauthAccount": {"emailAddress": "u@example.com"}
}
"""
SETTINGS_JSON = """{
    "permissions": {
        "allow": ["Bash(npm test:*)"]
    },
    "hooks": {
        "PreToolUse": [
            {
                "matcher": "Bash",
                "hooks": [{"type": "command", "command": "~/bin/check-bash"}]
            }
        ],
        "SessionStart": [
            {
                "matcher": "startup",
                "hooks": [{"type": "command", "command": "bd prime"}]
            }
        ]
    },
    "env": {"FOO": "bar"}
}
"""


def cx(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cxsync.agent", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120, cwd=cwd)


def ok_json(*args: str, cwd: Path | None = None) -> Any:
    r = cx(*args, "--json", cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def one_insertion(before: str, after: str) -> str:
    """``after`` is ``before`` with one contiguous piece inserted (nothing else moved or changed): return it."""
    p = 0
    while p < min(len(before), len(after)) and before[p] == after[p]:
        p += 1
    s = 0
    while s < min(len(before), len(after)) - p and before[-1 - s] == after[-1 - s]:
        s += 1
    assert p + s == len(before), f"more than one insertion:\n{after}"
    return after[p:len(after) - s]


@pytest.fixture
def user_files() -> tuple[Path, Path]:
    home = Path(os.environ["HOME"])
    (home / ".claude").mkdir(parents=True)
    state, settings = home / ".claude.json", home / ".claude" / "settings.json"
    state.write_text(CLAUDE_JSON)
    os.chmod(state, 0o600)
    settings.write_text(SETTINGS_JSON)
    return state, settings


def test_install_adds_one_entry_to_each_file_and_keeps_everything_else_byte_for_byte(user_files) -> None:
    state, settings = user_files
    report = ok_json("claude", "install")
    assert [(r["what"], r["file"], r["changed"]) for r in report] == [
        ("mcp", str(state), True), ("hook", str(settings), True)]

    added = one_insertion(CLAUDE_JSON, state.read_text())
    assert added.startswith(',\n    "cxsync": {\n      "type": "stdio"')  # the file's own two-space style
    data = json.loads(state.read_text())
    assert data["mcpServers"]["github"] == json.loads(CLAUDE_JSON)["mcpServers"]["github"]
    assert data["projects"] == json.loads(CLAUDE_JSON)["projects"] and data["numStartups"] == 42
    entry = data["mcpServers"]["cxsync"]
    assert entry["args"][-1] == "mcp" and Path(entry["command"]).is_absolute()
    assert entry["env"] == {"CXSYNC_HOME": str(Path(os.environ["CXSYNC_HOME"]).resolve())}
    assert oct(state.stat().st_mode & 0o777) == "0o600"

    added = one_insertion(SETTINGS_JSON, settings.read_text())
    assert added.startswith(",\n            {\n                \"hooks\": [")  # four spaces, like the file
    hooks = json.loads(settings.read_text())["hooks"]
    assert hooks["PreToolUse"] == json.loads(SETTINGS_JSON)["hooks"]["PreToolUse"]
    assert hooks["SessionStart"][0] == {"matcher": "startup", "hooks": [{"type": "command", "command": "bd prime"}]}
    ours = hooks["SessionStart"][1]["hooks"][0]
    assert ours["command"].endswith("hook session-start") and ours["timeout"] == cs.HOOK_TIMEOUT_S

    for r in report:  # the backup is the file as it was, private
        backup = Path(r["backup"])
        assert backup.read_text() == (CLAUDE_JSON if r["what"] == "mcp" else SETTINGS_JSON)
        assert oct(backup.stat().st_mode & 0o777) == "0o600"


def test_installing_twice_changes_nothing_and_uninstall_restores_the_files_exactly(user_files) -> None:
    state, settings = user_files
    ok_json("claude", "install")
    after_once = state.read_bytes(), settings.read_bytes()
    backups = sorted((resolve_paths().state_dir / "claude-backups").rglob("*"))
    again = ok_json("claude", "install")
    assert [r["changed"] for r in again] == [False, False] and [r["backup"] for r in again] == [None, None]
    assert (state.read_bytes(), settings.read_bytes()) == after_once
    assert sorted((resolve_paths().state_dir / "claude-backups").rglob("*")) == backups

    # the same entry written in another style (a person tidied the file) is still installed: left alone
    data = json.loads(state.read_text())
    restyled = json.dumps(data, separators=(",", ":"))
    state.write_text(restyled)
    assert [r["changed"] for r in ok_json("claude", "install")] == [False, False]
    assert state.read_text() == restyled
    state.write_bytes(after_once[0])

    removed = ok_json("claude", "uninstall")
    assert [r["changed"] for r in removed] == [True, True]
    assert state.read_text() == CLAUDE_JSON and settings.read_text() == SETTINGS_JSON
    assert [r["changed"] for r in ok_json("claude", "uninstall")] == [False, False]


def test_what_a_person_adds_after_install_survives_uninstall(user_files) -> None:
    state, settings = user_files
    ok_json("claude", "install")
    edited = settings.read_text().replace('"env": {"FOO": "bar"}', '"env": {"FOO": "bar", "NEW": "1"}')
    settings.write_text(edited)
    ok_json("claude", "uninstall")
    assert settings.read_text() == SETTINGS_JSON.replace('"env": {"FOO": "bar"}', '"env": {"FOO": "bar", "NEW": "1"}')


def test_missing_files_are_created_and_removed_again(tmp_path: Path) -> None:
    home = Path(os.environ["HOME"])
    ok_json("claude", "install")
    state, settings = home / ".claude.json", home / ".claude" / "settings.json"
    assert json.loads(state.read_text())["mcpServers"]["cxsync"]["args"][-1] == "mcp"
    assert oct(state.stat().st_mode & 0o777) == "0o600"
    assert len(json.loads(settings.read_text())["hooks"]["SessionStart"]) == 1
    ok_json("claude", "uninstall")
    assert not state.exists() and not settings.exists()


def test_project_scope_writes_mcp_json_and_project_settings(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    mcp_json = '{"mcpServers": {"docs": {"type": "http", "url": "https://example.com/mcp"}}}\n'
    (proj / ".mcp.json").write_text(mcp_json)
    ok_json("claude", "install", "--scope", "project", cwd=proj)
    servers = json.loads((proj / ".mcp.json").read_text())["mcpServers"]
    assert set(servers) == {"docs", "cxsync"}
    assert one_insertion(mcp_json, (proj / ".mcp.json").read_text()).startswith(', "cxsync": {')  # one-line style
    assert json.loads((proj / ".claude" / "settings.json").read_text())["hooks"]["SessionStart"]
    rows = ok_json("claude", "status", "--project-dir", str(proj))
    assert {(r["scope"], r["what"], r["state"]) for r in rows} == {
        ("user", "mcp", "absent"), ("user", "hook", "absent"),
        ("project", "mcp", "installed"), ("project", "hook", "installed")}
    ok_json("claude", "uninstall", "--scope", "project", "--project-dir", str(proj))
    assert (proj / ".mcp.json").read_text() == mcp_json
    assert not (proj / ".claude" / "settings.json").exists()


def test_an_outdated_entry_is_replaced_in_place(user_files) -> None:
    state, _ = user_files
    stale = CLAUDE_JSON.replace('"mcpServers": {',
                                '"mcpServers": {\n    "cxsync": {"command": "/old/cxsync", "args": ["mcp"]},', 1)
    state.write_text(stale)
    def user_state() -> dict[str, str]:
        return {r["what"]: r["state"] for r in ok_json("claude", "status") if r["scope"] == "user"}

    assert user_state() == {"mcp": "outdated", "hook": "absent"}
    ok_json("claude", "install")
    assert json.loads(state.read_text())["mcpServers"]["cxsync"] == cs.mcp_entry() | {
        "command": json.loads(state.read_text())["mcpServers"]["cxsync"]["command"]}
    assert user_state() == {"mcp": "installed", "hook": "installed"}
    assert list(json.loads(state.read_text())["mcpServers"]) == ["cxsync", "github"]  # same place as before


def test_a_file_that_is_not_json_stops_everything_before_any_change(user_files) -> None:
    state, settings = user_files
    settings.write_text('{"hooks": {,}}')
    r = cx("claude", "install")
    assert r.returncode != 0 and "is not a JSON file cxsync can edit" in r.stderr and "Traceback" not in r.stderr
    assert state.read_text() == CLAUDE_JSON and settings.read_text() == '{"hooks": {,}}'


def test_settings_of_the_wrong_shape_stop_everything_before_any_change(user_files) -> None:
    state, settings = user_files
    settings.write_text('{"hooks": {"SessionStart": {"not": "a list"}}}')
    r = cx("claude", "install")
    assert r.returncode != 0 and "hooks.SessionStart is not a JSON array" in r.stderr
    assert state.read_text() == CLAUDE_JSON


def test_a_symlinked_settings_file_stays_a_symlink(user_files, tmp_path: Path) -> None:
    _, settings = user_files
    real = tmp_path / "dotfiles" / "settings.json"
    real.parent.mkdir()
    real.write_text(SETTINGS_JSON)
    settings.unlink()
    settings.symlink_to(real)
    ok_json("claude", "install")
    assert settings.is_symlink() and "hook session-start" in real.read_text()


def test_a_concurrent_write_by_claude_code_is_kept(user_files) -> None:
    """Claude Code rewrites ~/.claude.json at any moment: an edit based on an older read is redone, not lost."""
    state, _ = user_files
    t = cs.targets("user")[0]
    calls = []

    def change(text: str | None) -> str:
        calls.append(text)
        if len(calls) == 1:  # Claude Code writes between our read and our swap
            state.write_text(CLAUDE_JSON.replace('"numStartups": 42', '"numStartups": 43'))
        c = je.find(text or "{}", ["mcpServers"])
        assert c is not None
        return je.add_member(text or "{}", c, "cxsync", {"command": "x"})

    changed, _ = cs._edit(resolve_paths().ensure(), t, change, private=True)
    data = json.loads(state.read_text())
    assert changed and len(calls) == 2
    assert data["numStartups"] == 43 and data["mcpServers"]["cxsync"] == {"command": "x"}


def test_the_registered_commands_run(user_files) -> None:
    """What Claude Code will run: the hook command through a shell, the MCP server through the SDK's client."""
    state, settings = user_files
    ok_json("claude", "install")
    hook = json.loads(settings.read_text())["hooks"]["SessionStart"][1]["hooks"][0]["command"]
    r = subprocess.run(hook, shell=True, input='{"cwd": "/nowhere", "hook_event_name": "SessionStart"}',
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")

    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    entry = json.loads(state.read_text())["mcpServers"]["cxsync"]
    params = StdioServerParameters(command=entry["command"], args=entry["args"], env={**os.environ, **entry["env"]})
    names: list[str] = []

    async def main() -> None:
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                names.extend(t.name for t in (await s.list_tools()).tools)

    anyio.run(main)
    assert "recall" in names


@pytest.mark.parametrize("before, path, value", [
    ('{}', ["a"], 1),
    ('{"a": 1}', ["b"], [1, 2]),
    ('{\n\t"a": {\n\t\t"b": []\n\t}\n}\n', ["c"], {"d": True}),
    ('  {"x": [ ], "y": {"z": 1}}  ', ["q"], "é"),
    ('{\r\n  "a": 1\r\n}\r\n', ["b"], {"c": [1]}),  # a file saved on Windows keeps CRLF
])
def test_jsonedit_add_then_remove_is_the_identity(before: str, path: list[str], value: Any) -> None:
    text, made = je.ensure_path(before, path, value)
    assert made == path and json.loads(text) == {**json.loads(before), path[0]: value}
    assert text.count("\n") == text.count("\r\n") or "\r\n" not in before
    root = je.root(text)
    assert je.remove_item(text, root, root.keys.index(path[0])) == before
