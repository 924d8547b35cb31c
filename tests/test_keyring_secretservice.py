"""cxsync.agent.credentials against a real Secret Service: gnome-keyring-daemon on a private D-Bus session
(dbus-run-session), reached through keyring's own SecretService backend — the set-up a Linux desktop has.
No DISPLAY is passed on, so an unlock prompt can never appear on a developer's screen: it fails instead."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = [
    pytest.mark.skipif(shutil.which("dbus-run-session") is None,
                       reason="dbus-run-session not installed (Debian: dbus; see .ci/system-deps.sh)"),
    pytest.mark.skipif(shutil.which("gnome-keyring-daemon") is None,
                       reason="gnome-keyring-daemon not installed (Debian: gnome-keyring; see .ci/system-deps.sh)"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Secret Service is a Linux desktop service"),
]

PRELUDE = textwrap.dedent("""
    import json, subprocess, sys, time
    from cxsync.agent import credentials
    from cxsync.agent.config import Identity
    from cxsync.sync.errors import CxError

    ALICE = Identity("acme", "alice", "laptop-1")
    out = {}

    def attempt(name, fn):
        t0 = time.monotonic()
        try:
            out[name] = {"ok": fn()}
        except CxError as exc:
            out[name] = {"error": type(exc).__name__, "title": exc.title, "hint": exc.hint,
                         "exit_code": exc.exit_code}
        out[name]["seconds"] = round(time.monotonic() - t0, 2)
""")

WITH_UNLOCKED_KEYRING = PRELUDE + textwrap.dedent("""
    gk = subprocess.run(["gnome-keyring-daemon", "--unlock", "--components=secrets"], input=b"login-password",
                        capture_output=True, timeout=20)
    out["daemon_rc"] = gk.returncode
    out["backend"] = credentials.backend_name()
    attempt("get_before", lambda: credentials.get_secret(ALICE))
    attempt("set", lambda: credentials.set_secret(ALICE, "tls-passphrase-42"))
    attempt("get", lambda: credentials.get_secret(ALICE))
    # the item is really in the Secret Service, under service cxsync / username tenant/user
    if shutil_which := __import__("shutil").which("secret-tool"):
        look = subprocess.run([shutil_which, "lookup", "service", "cxsync", "username", "acme/alice"],
                              capture_output=True, text=True, timeout=20)
        out["secret_tool"] = look.stdout
    attempt("delete", lambda: credentials.delete_secret(ALICE))
    attempt("get_after", lambda: credentials.get_secret(ALICE))
    attempt("delete_again", lambda: credentials.delete_secret(ALICE))
    # lock the collection: unlocking needs a prompt, which cannot be shown without a display
    import secretstorage
    conn = secretstorage.dbus_init()
    secretstorage.get_default_collection(conn).lock()
    attempt("get_locked", lambda: credentials.get_secret(ALICE, timeout=8))
    print(json.dumps(out))
""")

WITHOUT_KEYRING = PRELUDE + textwrap.dedent("""
    attempt("get", lambda: credentials.get_secret(ALICE, timeout=8))
    attempt("set", lambda: credentials.set_secret(ALICE, "x", timeout=8))
    print(json.dumps(out))
""")


def run_in_session(tmp_path: Path, script: str) -> dict[str, Any]:
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    driver = tmp_path / "driver.py"
    driver.write_text(script)
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS", "CXSYNC_TOKEN",
                        "PYTHON_KEYRING_BACKEND", "GNOME_KEYRING_CONTROL", "XAUTHORITY")}
    env.update(HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "data"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_RUNTIME_DIR=str(runtime), CXSYNC_HOME=str(tmp_path / "cx"))
    proc = subprocess.run(["dbus-run-session", "--", sys.executable, str(driver)], capture_output=True,
                          text=True, env=env, timeout=90, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stdout + proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def test_set_get_delete_through_gnome_keyring(tmp_path: Path) -> None:
    out = run_in_session(tmp_path, WITH_UNLOCKED_KEYRING)
    assert out["daemon_rc"] == 0
    assert out["backend"] == "SecretService Keyring"
    assert out["get_before"]["ok"] is None
    assert "ok" in out["set"], out["set"]
    assert out["get"]["ok"] == "tls-passphrase-42"
    if "secret_tool" in out:
        assert out["secret_tool"] == "tls-passphrase-42"
    assert out["delete"]["ok"] is True
    assert out["get_after"]["ok"] is None
    assert out["delete_again"]["ok"] is False
    # a locked collection is NoCredentials telling to unlock — and it never hangs
    locked = out["get_locked"]
    assert locked["error"] == "NoCredentials" and locked["exit_code"] == 4, locked
    assert "locked" in locked["title"] and "unlock" in locked["hint"]
    assert locked["seconds"] < 8


def test_a_secret_service_without_an_unlocked_keyring_is_no_credentials(tmp_path: Path) -> None:
    # D-Bus activates gnome-keyring on demand, but it has no login keyring and cannot prompt for one
    out = run_in_session(tmp_path, WITHOUT_KEYRING)
    for op in ("get", "set"):
        assert out[op].get("error") in ("NoCredentials", "KeyringTimeout"), out[op]
        assert "CXSYNC_TOKEN" in out[op]["hint"]
        assert out[op]["seconds"] < 9
