"""``cxsync claude install | uninstall | status``: register the MCP server and the SessionStart hook with Claude Code.

Where Claude Code reads them (its settings documentation):

============  =======================================================  =========================================
scope         MCP servers (``mcpServers``)                             hooks (``hooks.SessionStart``)
============  =======================================================  =========================================
user          ``~/.claude.json`` (``$CLAUDE_CONFIG_DIR/.claude.json``)   ``~/.claude/settings.json``
project       ``<project>/.mcp.json`` (shared through the repository)   ``<project>/.claude/settings.json``
============  =======================================================  =========================================

People edit these files by hand and Claude Code rewrites ``~/.claude.json`` constantly, so every change is a
text edit of one member (:mod:`cxsync.agent.jsonedit`): whatever else is in the file stays byte for byte. A file
is backed up before it changes, written atomically (through a symlink to its target) and re-read just before the
swap so a concurrent write by Claude Code is never lost. Installing twice changes nothing; uninstalling removes
exactly what install added, including containers it created (recorded in ``claude-install.json``).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from cxsync.agent import jsonedit as je
from cxsync.agent.paths import Paths
from cxsync.sync.errors import ConfigError, CxError

SERVER_NAME = "cxsync"
HOOK_TIMEOUT_S = 10
SCOPES = ("user", "project")


@dataclass(frozen=True)
class Target:
    """One settings file and the entry cxsync keeps in it."""
    what: str  # mcp | hook
    path: Path
    container: tuple[str, ...]  # the object (mcp) or array (hook) holding our entry


def targets(scope: str, project_dir: Path | None = None, env: dict[str, str] | None = None) -> list[Target]:
    env = dict(os.environ) if env is None else env
    if scope == "user":
        home = Path(env.get("HOME") or Path.home())
        cfg_dir = env.get("CLAUDE_CONFIG_DIR", "").strip()
        claude_dir = Path(cfg_dir).expanduser() if cfg_dir else home / ".claude"
        state = claude_dir / ".claude.json" if cfg_dir else home / ".claude.json"
        return [Target("mcp", state, ("mcpServers",)),
                Target("hook", claude_dir / "settings.json", ("hooks", "SessionStart"))]
    if scope == "project":
        root = (project_dir or Path.cwd()).resolve()
        return [Target("mcp", root / ".mcp.json", ("mcpServers",)),
                Target("hook", root / ".claude" / "settings.json", ("hooks", "SessionStart"))]
    raise ConfigError(f"unknown scope {scope!r}", "use --scope user or --scope project")


def command_argv() -> list[str]:
    """How Claude Code should start cxsync: this installation's own entry point, by absolute path."""
    script = Path(sys.executable).parent / ("cxsync.exe" if os.name == "nt" else "cxsync")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "cxsync.agent"]


def _home_env() -> dict[str, str]:
    """A CXSYNC_HOME in force at install time must also be in force when Claude Code starts us."""
    home = os.environ.get("CXSYNC_HOME", "").strip()
    return {"CXSYNC_HOME": str(Path(home).expanduser().resolve())} if home else {}


def mcp_entry() -> dict[str, Any]:
    argv = command_argv()
    entry: dict[str, Any] = {"type": "stdio", "command": argv[0], "args": [*argv[1:], "mcp"]}
    if _home_env():
        entry["env"] = _home_env()
    return entry


def hook_entry() -> dict[str, Any]:
    """The hook runs on every session start: it is started as its own module, which does what
    ``cxsync hook session-start`` does without loading the command line (about a third less CPU; bench_hook)."""
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "cxsync.agent.hook", "session-start"])
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in _home_env().items())
    return {"hooks": [{"type": "command", "command": f"{prefix} {cmd}".strip(), "timeout": HOOK_TIMEOUT_S}]}


def _is_our_hook_group(group: Any) -> bool:
    hooks = group.get("hooks") if isinstance(group, dict) else None
    return isinstance(hooks, list) and any(
        isinstance(h, dict) and isinstance(h.get("command"), str) and "cxsync" in h["command"]
        and h["command"].rstrip().endswith("hook session-start") for h in hooks)


def _find_ours(text: str, t: Target) -> tuple[je.Container, int] | None:
    c = je.find(text, t.container)
    if c is None:
        return None
    if t.what == "mcp":
        return (c, c.keys.index(SERVER_NAME)) if SERVER_NAME in c.keys else None
    for i, span in enumerate(c.items):
        if _is_our_hook_group(je.value_at(text, span)):
            return c, i
    return None


def _wanted(t: Target) -> Any:
    return mcp_entry() if t.what == "mcp" else hook_entry()


# ---- file plumbing --------------------------------------------------------------------------------------------


class SettingsError(CxError):
    """A Claude Code settings file cannot be read or changed safely; it is left as it was."""


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"cannot read {path}: {exc}") from None


def _backup(paths: Paths, path: Path, text: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    folder = paths.state_dir / "claude-backups" / stamp
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest = folder / str(path).strip("/\\").replace("/", "__").replace("\\", "__").replace(":", "")
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return dest


def _write_atomic(path: Path, text: str, before: str | None, private: bool) -> None:
    """Replace ``path`` with ``text`` unless someone changed it since we read ``before``."""
    real = path.resolve()  # a symlinked settings file (dotfiles) keeps its link
    real.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = real.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600 if private else 0o644
    tmp = real.with_name(f".{real.name}.cxsync-{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if _read(real) != before:
            raise _Changed()
        os.replace(tmp, real)
    finally:
        if tmp.exists():
            tmp.unlink()


class _Changed(Exception):
    """The file changed under us (Claude Code writes ~/.claude.json often): read it again and redo the edit."""


def _edit(paths: Paths, t: Target, change: Callable[[str | None], str | None], private: bool
          ) -> tuple[bool, Path | None]:
    """Apply ``change`` (old text or None → new text, or None for "delete the file") with retries on a concurrent
    write. Returns (changed, backup path)."""
    for _ in range(5):
        before = _read(t.path)
        try:
            after = change(before)
        except je.JsonEditError as exc:
            raise SettingsError(f"{t.path} is not a JSON file cxsync can edit: {exc}",
                                "fix the file (or move it away) and run the command again; nothing was changed"
                                ) from None
        if after == before:
            return False, None
        backup = _backup(paths, t.path, before) if before is not None else None
        try:
            if after is None:
                if _read(t.path) != before:
                    raise _Changed()
                t.path.resolve().unlink()
            else:
                _write_atomic(t.path, after, before, private)
        except _Changed:
            if backup is not None:
                backup.unlink()
            continue
        except OSError as exc:
            raise SettingsError(f"cannot write {t.path}: {exc}") from None
        return True, backup
    raise SettingsError(f"{t.path} keeps changing while cxsync edits it", "close Claude Code and run it again")


# ---- install records ------------------------------------------------------------------------------------------


def _record_file(paths: Paths) -> Path:
    return paths.state_dir / "claude-install.json"


def _records(paths: Paths) -> dict[str, Any]:
    try:
        data = json.loads(_record_file(paths).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_records(paths: Paths, data: dict[str, Any]) -> None:
    f = _record_file(paths)
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.chmod(tmp, 0o600)
    os.replace(tmp, f)


# ---- the commands ---------------------------------------------------------------------------------------------


def _check_all(ts: list[Target]) -> None:
    """Every file must be editable before any is edited: never leave Claude Code half registered."""
    for t in ts:
        text = _read(t.path)
        if text is None:
            continue
        try:
            _find_ours(text, t)
            je.ensure_path(text, t.container, {} if t.what == "mcp" else [])  # e.g. "hooks": null cannot hold ours
        except je.JsonEditError as exc:
            raise SettingsError(f"{t.path} is not a JSON file cxsync can edit: {exc}",
                                "fix the file (or move it away) and run the command again; nothing was changed"
                                ) from None


def install(paths: Paths, scope: str, project_dir: Path | None = None) -> list[dict[str, Any]]:
    records = _records(paths)
    report = []
    ts = targets(scope, project_dir)
    _check_all(ts)
    for t in ts:
        created: dict[str, Any] = {}

        def change(text: str | None, t: Target = t, created: dict[str, Any] = created) -> str:
            created.clear()
            if text is None:
                text = "{}\n"
                created["file"] = True
            want = _wanted(t)
            found = _find_ours(text, t)
            if found is not None:
                c, i = found
                if je.value_at(text, c.items[i]) == want:
                    return text
                return je.replace_value(text, c.items[i], want)
            leaf: Any = {} if t.what == "mcp" else []
            text, made = je.ensure_path(text, t.container, leaf)
            if made:
                created["path"] = made
            c2 = je.find(text, t.container)
            assert c2 is not None
            if t.what == "mcp":
                return je.add_member(text, c2, SERVER_NAME, want)
            return je.add_element(text, c2, want)

        changed, backup = _edit(paths, t, change, private=scope == "user")
        rec = records.setdefault(str(t.path), {})
        if changed and created:
            rec.update({k: v for k, v in created.items()})
        records[str(t.path)] = rec
        report.append({"what": t.what, "file": str(t.path), "changed": changed,
                       "backup": str(backup) if backup else None})
    _save_records(paths, {k: v for k, v in records.items() if v})
    return report


def uninstall(paths: Paths, scope: str, project_dir: Path | None = None) -> list[dict[str, Any]]:
    records = _records(paths)
    report = []
    ts = targets(scope, project_dir)
    _check_all(ts)
    for t in ts:
        rec = records.get(str(t.path), {})

        def change(text: str | None, t: Target = t, rec: dict[str, Any] = rec) -> str | None:
            if text is None:
                return None
            found = _find_ours(text, t)
            if found is None:
                return text
            c, i = found
            text = je.remove_item(text, c, i)
            made = rec.get("path")
            if made:  # drop the containers install created, if nothing else went into them since
                holder = je.find(text, made[:-1]) if len(made) > 1 else je.root(text)
                if holder is not None and made[-1] in holder.keys:
                    span = holder.items[holder.keys.index(made[-1])]
                    if _empty(je.value_at(text, span)):
                        text = je.remove_item(text, holder, holder.keys.index(made[-1]))
            if rec.get("file") and not je.root(text).items:
                return None
            return text

        changed, backup = _edit(paths, t, change, private=scope == "user")
        if changed:
            records.pop(str(t.path), None)
        report.append({"what": t.what, "file": str(t.path), "changed": changed,
                       "backup": str(backup) if backup else None})
    _save_records(paths, records)
    return report


def _empty(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_empty(v) for v in value.values())
    return isinstance(value, list) and not value


def status(scope: str, project_dir: Path | None = None) -> list[dict[str, Any]]:
    out = []
    for t in targets(scope, project_dir):
        text = _read(t.path)
        state = "absent"
        if text is not None:
            try:
                found = _find_ours(text, t)
            except je.JsonEditError as exc:
                state = f"unreadable: {exc}"
            else:
                if found is not None:
                    c, i = found
                    state = "installed" if je.value_at(text, c.items[i]) == _wanted(t) else "outdated"
        out.append({"scope": scope, "what": t.what, "file": str(t.path), "state": state})
    return out
