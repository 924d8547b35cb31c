"""Start cxsync at login: a systemd user unit, an XDG autostart entry, a LaunchAgent or a Startup-folder script.

| platform | kind      | file                                                   | runs          |
|----------|-----------|--------------------------------------------------------|---------------|
| Linux    | `systemd` | `~/.config/systemd/user/cxsync.service`                | `cxsync run`  |
| Linux    | `xdg`     | `~/.config/autostart/cxsync-tray.desktop`              | `cxsync tray` |
| macOS    | `launchd` | `~/Library/LaunchAgents/io.coditect.cxsync.plist`      | `cxsync tray` |
| Windows  | `windows` | `%APPDATA%/Microsoft/Windows/Start Menu/Programs/Startup/cxsync-startup.cmd` | `cxsync tray` |

On Linux ``mode="auto"`` picks the systemd user unit where a systemd user manager runs (the agent then runs
even outside a graphical session; a tray started later attaches to it) and the XDG entry elsewhere.  Both can be
installed side by side (``mode="systemd"`` then ``mode="xdg"``).

Each file is built from data by the library of its format (configparser, plistlib); ``packaging/`` carries
copies rendered with placeholders for distro packagers (a test keeps them equal): ``@CXSYNC@`` is the cxsync
executable, ``@LOG_DIR@`` the log folder.

``systemctl --user`` is only ever run against the real home of the current user, never a ``home=`` override,
so tests and ``--home`` style experiments cannot touch the user's session manager.
"""

from __future__ import annotations

import configparser
import io
import logging
import os
import plistlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from cxsync.sync.errors import CxError, UsageError
from cxsync.agent.paths import Paths

log = logging.getLogger(__name__)

PLACEHOLDER = "@CXSYNC@"
LOG_PLACEHOLDER = "@LOG_DIR@"
UNIT_NAME = "cxsync.service"
LAUNCHD_LABEL = "io.coditect.cxsync"
DESKTOP_NAME = "cxsync-tray.desktop"
WINDOWS_NAME = "cxsync-startup.cmd"
# Where the systemd unit looks when no executable is found at install time (pip --user, pipx).
DEFAULT_UNIT_EXE = "%h/.local/bin/cxsync"

# Each file is data, rendered by the library that knows its format (configparser, plistlib): no text template
# to keep well-formed by hand.  Values naming the executable, the log folder or the profile are filled in by
# ``render``.

# systemd takes its unit files' keys case-sensitively and without spaces around "=".
SYSTEMD_UNIT: dict[str, dict[str, str]] = {
    "Unit": {"Description": "cxsync: Claude Code context capture and sync agent"},
    "Service": {
        "Type": "simple",
        "ExecStart": "",  # the executable, quoted, then "run"
        "Restart": "on-failure",
        "RestartSec": "10",
        # 2: bad usage or config, 4: no credentials: restarting cannot fix either (`journalctl --user -u cxsync`).
        "RestartPreventExitStatus": "2 4",
        # The agent stops its threads within 10 s of SIGTERM; crash-only storage makes a kill harmless anyway.
        "TimeoutStopSec": "20",
        "Environment": "",  # PYTHONUNBUFFERED=1, and the profile's CXSYNC_HOME when there is one
    },
    "Install": {"WantedBy": "default.target"},
}

XDG_DESKTOP: dict[str, dict[str, str]] = {
    "Desktop Entry": {
        "Type": "Application",
        "Name": "cxsync",
        "GenericName": "Context sync",
        "Comment": "Capture and sync Claude Code transcripts (tray icon)",
        "Exec": "",  # the executable, quoted, then "tray"
        "Icon": "cxsync",
        "Terminal": "false",
        "Categories": "Utility;",
        "StartupNotify": "false",
        "X-GNOME-Autostart-enabled": "true",
        "X-GNOME-Autostart-Delay": "5",
        "X-KDE-autostart-after": "panel",
    },
}

LAUNCHD_PLIST: dict[str, Any] = {
    "Label": LAUNCHD_LABEL,
    "ProgramArguments": [],  # the executable, then "tray"
    "RunAtLoad": True,
    "KeepAlive": {"SuccessfulExit": False},
    "ThrottleInterval": 30,
    "LimitLoadToSessionType": "Aqua",
    "ProcessType": "Interactive",
    "StandardOutPath": "launchd.out.log",  # in the log folder
    "StandardErrorPath": "launchd.err.log",
}

# A .cmd in the Startup folder: no shortcut (.lnk) to build through COM, and `start /min` keeps the console
# window out of the way while the tray runs.
WINDOWS_CMD: list[str] = [
    "@echo off",
    "rem cxsync: start the tray agent at login. Installed by `cxsync autostart enable`.",
    # then `set "CXSYNC_HOME=…"` when there is a profile, and the start line
]

KINDS = ("systemd", "xdg", "launchd", "windows")

# Where each template lives in the source tree, relative to the repository root.
PACKAGING_FILES: dict[str, str] = {
    "systemd": "packaging/systemd/cxsync.service",
    "xdg": "packaging/xdg/cxsync-tray.desktop",
    "launchd": "packaging/launchd/io.coditect.cxsync.plist",
    "windows": "packaging/windows/cxsync-startup.cmd",
}


@dataclass(frozen=True)
class Target:
    kind: str
    path: Path


def _os_family(platform: str) -> str:
    if platform == "darwin":
        return "darwin"
    if platform in ("win32", "cygwin"):
        return "win32"
    if platform.startswith(("linux", "freebsd", "openbsd", "netbsd", "dragonfly", "sunos")):
        return "linux"  # every free desktop follows XDG autostart; systemd only where it runs
    raise CxError(f"autostart is not supported on platform {platform!r}",
                  "start `cxsync run` from your session's own start-up mechanism")


def _is_real_home(home: Path) -> bool:
    try:
        return home.resolve() == Path.home().resolve()
    except OSError:
        return False


def _config_home(home: Path, environ: Mapping[str, str]) -> Path:
    xdg = environ.get("XDG_CONFIG_HOME", "").strip()
    # XDG_CONFIG_HOME belongs to the real user; a different home (tests) gets its own .config.
    if xdg and Path(xdg).is_absolute() and _is_real_home(home):
        return Path(xdg)
    return home / ".config"


def _startup_folder(home: Path, environ: Mapping[str, str]) -> Path:
    appdata = environ.get("APPDATA", "").strip()
    base = Path(appdata) if appdata and _is_real_home(home) else home / "AppData" / "Roaming"
    return base / "Microsoft" / "Windows" / "Start Menu" / "Programs" / "Startup"


def targets(platform: str, home: Path, environ: Mapping[str, str]) -> list[Target]:
    """Every autostart file cxsync may install on ``platform``, in preference order."""
    family = _os_family(platform)
    if family == "darwin":
        return [Target("launchd", home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist")]
    if family == "win32":
        return [Target("windows", _startup_folder(home, environ) / WINDOWS_NAME)]
    cfg = _config_home(home, environ)
    return [Target("systemd", cfg / "systemd" / "user" / UNIT_NAME), Target("xdg", cfg / "autostart" / DESKTOP_NAME)]


def find_executable(platform: str = sys.platform) -> str | None:
    """The installed ``cxsync`` script: beside this interpreter first (venv, pipx), then on PATH."""
    name = "cxsync.exe" if _os_family(platform) == "win32" else "cxsync"
    for folder in (Path(sys.executable).parent, Path(sys.executable).parent / "Scripts"):
        candidate = folder / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("cxsync")


def _systemd_quote(value: str, *, command: bool = True) -> str:
    """Quote one ExecStart argument (``command``) or one Environment assignment for a unit file."""
    if value and all(c not in value for c in ' \t"\'\\;$%'):
        return value
    value = value.replace("%", "%%")  # specifiers: a literal percent is %%
    if command:
        value = value.replace("$", "$$")  # ExecStart expands $VAR; Environment= does not
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _desktop_quote(value: str) -> str:
    # Desktop Entry spec: quote arguments with reserved characters; inside quotes escape " ` $ \ with a backslash,
    # and the value itself escapes backslashes once more.
    if value and all(c not in value for c in ' \t\n"\'\\><~|&;$*?#()`%='):
        return value
    inner = "".join("\\" + c if c in '"`$\\' else c for c in value)
    return ('"' + inner + '"').replace("\\", "\\\\")


def _ini(sections: Mapping[str, Mapping[str, str]]) -> str:
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str  # type: ignore[assignment, method-assign]  # keys keep their case
    cp.read_dict(sections)
    out = io.StringIO()
    cp.write(out, space_around_delimiters=False)
    return out.getvalue().rstrip("\n") + "\n"


def render(kind: str, executable: str | None, log_dir: Path | None = None, cxsync_home: str | None = None) -> str:
    """The autostart file of ``kind`` for ``executable`` (None: the default location for that kind)."""
    if kind not in KINDS:
        raise UsageError(f"unknown autostart kind {kind!r}", f"use one of {', '.join(KINDS)}")
    if kind == "systemd":
        unit = {name: dict(keys) for name, keys in SYSTEMD_UNIT.items()}
        unit["Service"]["ExecStart"] = f"{_systemd_quote(executable) if executable else DEFAULT_UNIT_EXE} run"
        env = ["PYTHONUNBUFFERED=1"] + ([f"CXSYNC_HOME={cxsync_home}"] if cxsync_home else [])
        unit["Service"]["Environment"] = " ".join(_systemd_quote(a, command=False) for a in env)
        return _ini(unit)
    exe = executable or "cxsync"
    if kind == "xdg":
        entry = {name: dict(keys) for name, keys in XDG_DESKTOP.items()}
        exec_line = f"{_desktop_quote(exe)} tray"
        if cxsync_home:
            exec_line = f"env {_desktop_quote('CXSYNC_HOME=' + cxsync_home)} {exec_line}"
        entry["Desktop Entry"]["Exec"] = exec_line
        return _ini(entry)
    if kind == "launchd":
        data = dict(LAUNCHD_PLIST)
        data["ProgramArguments"] = [exe, "tray"]
        logs = str(log_dir) if log_dir else "/tmp"
        data["StandardOutPath"] = f"{logs}/{LAUNCHD_PLIST['StandardOutPath']}"
        data["StandardErrorPath"] = f"{logs}/{LAUNCHD_PLIST['StandardErrorPath']}"
        if cxsync_home:
            data["EnvironmentVariables"] = {"CXSYNC_HOME": cxsync_home}
        return plistlib.dumps(data, sort_keys=False).decode("utf-8")
    # windows: cmd.exe has no escape for a double quote inside a quoted argument; such a path cannot work.
    if '"' in exe:
        raise CxError(f"cannot write a start-up script for an executable path containing a quote: {exe}")
    lines = WINDOWS_CMD + ([f'set "CXSYNC_HOME={cxsync_home}"'] if cxsync_home else []) \
        + [f'start "cxsync" /min "{exe}" tray']
    return "".join(line + "\r\n" for line in lines)


# The packaged copies (``packaging/``) for distro packagers: each kind rendered with the placeholders.
TEMPLATES: dict[str, str] = {kind: render(kind, PLACEHOLDER, Path(LOG_PLACEHOLDER)) for kind in KINDS}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    newline = "" if path.suffix == ".cmd" else None
    with open(tmp, "w", encoding="utf-8", newline=newline) as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _systemd_available() -> bool:
    """A systemd user manager can run units here (booted with systemd, systemctl installed)."""
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def _systemctl(*args: str) -> bool:
    """Run ``systemctl --user ARGS``; a failure is logged, not raised (the unit file is what matters)."""
    exe = shutil.which("systemctl")
    if exe is None:
        return False
    try:
        proc = subprocess.run([exe, "--user", *args], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("systemctl --user %s failed: %s", " ".join(args), exc)
        return False
    if proc.returncode != 0:
        log.warning("systemctl --user %s failed: %s", " ".join(args), proc.stderr.strip())
        return False
    return True


def _use_systemctl(home: Path, platform: str, use_systemctl: bool | None) -> bool:
    if use_systemctl is not None:
        return use_systemctl
    return platform == sys.platform and _os_family(platform) == "linux" and _is_real_home(home) \
        and _systemd_available()


def _choose_kind(platform: str, home: Path, mode: str) -> str:
    family = _os_family(platform)
    valid = {"linux": ("auto", "systemd", "xdg"), "darwin": ("auto", "launchd"), "win32": ("auto", "windows")}
    if mode not in valid[family]:
        raise UsageError(f"autostart mode {mode!r} does not exist on {platform}",
                         f"use one of {', '.join(valid[family])}")
    if mode != "auto":
        return mode
    if family == "darwin":
        return "launchd"
    if family == "win32":
        return "windows"
    return "systemd" if _systemd_available() else "xdg"


def enable(paths: Paths | None = None, platform: str = sys.platform, home: Path | None = None, *,
           mode: str = "auto", executable: str | None = None, environ: Mapping[str, str] | None = None,
           use_systemctl: bool | None = None) -> Path:
    """Install the autostart entry for ``platform`` under ``home`` and return its path.  Idempotent.

    ``executable`` defaults to the installed ``cxsync`` script; ``CXSYNC_HOME``, when set in ``environ``, is
    carried into the entry so the login-started agent uses the same profile.  ``use_systemctl`` defaults to
    "only for the real user's home on this very platform".
    """
    home = Path.home() if home is None else home
    environ = os.environ if environ is None else environ
    kind = _choose_kind(platform, home, mode)
    target = next(t for t in targets(platform, home, environ) if t.kind == kind)
    exe = executable if executable is not None else find_executable(platform)
    cxsync_home = environ.get("CXSYNC_HOME", "").strip() or None
    _write(target.path, render(kind, exe, paths.log_dir if paths else None, cxsync_home))
    if kind == "systemd" and _use_systemctl(home, platform, use_systemctl):
        _systemctl("daemon-reload")
        _systemctl("enable", UNIT_NAME)
    log.info("autostart enabled: %s", target.path)
    return target.path


def disable(paths: Paths | None = None, platform: str = sys.platform, home: Path | None = None, *,
            environ: Mapping[str, str] | None = None, use_systemctl: bool | None = None) -> list[Path]:
    """Remove every cxsync autostart entry for ``platform`` under ``home``; return the files removed."""
    home = Path.home() if home is None else home
    environ = os.environ if environ is None else environ
    removed = []
    for target in targets(platform, home, environ):
        if not target.path.exists():
            continue
        if target.kind == "systemd" and _use_systemctl(home, platform, use_systemctl):
            _systemctl("disable", UNIT_NAME)
        target.path.unlink()
        removed.append(target.path)
        if target.kind == "systemd" and _use_systemctl(home, platform, use_systemctl):
            _systemctl("daemon-reload")
    for path in removed:
        log.info("autostart disabled: removed %s", path)
    return removed


def _entry_command(kind: str, text: str) -> list[str] | None:
    """The command an installed entry runs, for status (best effort; None if unreadable)."""
    import shlex

    try:
        if kind == "launchd":
            return [str(a) for a in plistlib.loads(text.encode("utf-8")).get("ProgramArguments", [])]
        for line in text.splitlines():
            if line.startswith("ExecStart="):
                return shlex.split(line[len("ExecStart="):].replace("%%", "%").replace("$$", "$"))
            if line.startswith("Exec="):
                # a desktop entry value unescapes \\ first, then the Exec quoting rules apply (as POSIX shells')
                return shlex.split(line[len("Exec="):].replace("\\\\", "\\"))
            if line.lower().startswith("start "):
                return shlex.split(line, posix=False)[3:]
    except (ValueError, plistlib.InvalidFileException):
        return None
    return None


def _executable_of(command: list[str] | None) -> str | None:
    if not command:
        return None
    args = [a.strip('"') for a in command]
    if args[0] == "env":
        args = [a for a in args[1:] if "=" not in a]
    return args[0] if args else None


def status(paths: Paths | None = None, platform: str = sys.platform, home: Path | None = None, *,
           environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Which autostart entries are installed, what they run, and whether that executable still exists."""
    home = Path.home() if home is None else home
    environ = os.environ if environ is None else environ
    entries = []
    for target in targets(platform, home, environ):
        entry: dict[str, Any] = {"kind": target.kind, "path": str(target.path), "installed": target.path.exists()}
        if entry["installed"]:
            try:
                text = target.path.read_text(encoding="utf-8")
            except OSError as exc:
                entry["error"] = exc.strerror
                text = ""
            command = _entry_command(target.kind, text)
            exe = _executable_of(command)
            entry["command"] = command
            entry["executable"] = exe
            # %h-relative paths are resolved the way systemd will, against this home.
            exe_path = exe.replace("%h", str(home)) if exe else None
            entry["stale"] = bool(exe_path and os.path.isabs(exe_path) and not os.path.exists(exe_path))
        entries.append(entry)
    installed = [e for e in entries if e["installed"]]
    result: dict[str, Any] = {
        "platform": platform,
        "enabled": bool(installed),
        "kinds": [e["kind"] for e in installed],
        "entries": entries,
    }
    if _os_family(platform) == "linux":
        result["systemd_available"] = _systemd_available()
    return result
