"""The tray in a plain XEmbed tray (trayer under Xvfb), checked without screenshots: the icon window asks the X
server for button presses, a click runs the documented action (Resume when paused), the icon keeps its aspect
ratio in a slot that is not square, `cxsync tray` says it started, and a repeating warning does not flood."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from tests.test_tray_smoke import MISSING, Tray, XSession, tray_factory, wait_until, xsession  # noqa: F401

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the X11 checks run on Linux"),
    pytest.mark.skipif(bool(MISSING), reason=f"not installed: {', '.join(MISSING)} (run .ci/system-deps.sh)"),
]


def state(tray: Tray) -> str:
    r = tray.cli("status", "--json")
    return str(json.loads(r.stdout)["state"]) if r.stdout.strip() else "?"


def test_a_click_on_the_icon_runs_its_default_action(xsession: XSession, tray_factory: Callable[..., Tray]) -> None:
    import Xlib.display
    import Xlib.X

    tray = tray_factory()
    win = tray.docked()
    display = Xlib.display.Display(xsession.display)
    try:
        attrs = display.create_resource_object("window", int(win.id, 16)).get_attributes()
        # all_event_masks: what every client selected on the window; only the icon's owner asks for clicks
        assert attrs.all_event_masks & Xlib.X.ButtonPressMask, hex(attrs.all_event_masks)
    finally:
        display.close()
    wait_until(lambda: state(tray) in ("idle", "syncing"), 30, "the agent running")
    assert tray.cli("pause").returncode == 0
    wait_until(lambda: state(tray) == "paused", 15, "the agent paused")
    win = tray.docked("Paused")  # the icon shows it, so its default action is now Resume
    subprocess.run(["xdotool", "mousemove", "--window", win.id, "4", "4", "click", "1"], env=xsession.env(),
                   check=True, timeout=10)
    wait_until(lambda: state(tray) != "paused", 15, "a click on the icon resumed the agent")
    assert tray.cli("stop").returncode == 0
    code, _ = tray.wait_exit()
    assert code == 0
    assert "cxsync tray started (pid" in tray.output()


def test_the_icon_keeps_its_aspect_ratio_in_a_wide_or_tall_slot() -> None:
    from cxsync.tray import model
    from cxsync.tray.icons import fit, render

    icon = render(model.IconLook("idle", "#2e7d32", "check"))
    for w, h in ((40, 26), (26, 40), (24, 24)):
        img = fit(icon, w, h)
        assert img.size == (w, h)
        background = img.getpixel((0, 0))
        drawn = [(x, y) for x in range(w) for y in range(h) if img.getpixel((x, y)) != background]
        xs, ys = [x for x, _ in drawn], [y for _, y in drawn]
        bw, bh = max(xs) - min(xs) + 1, max(ys) - min(ys) + 1
        assert abs(bw - bh) <= 2, (w, h, bw, bh)  # a disc, not an ellipse
        assert abs((min(xs) + max(xs)) / 2 - (w - 1) / 2) <= 1.5  # centred


def test_a_repeating_warning_reaches_the_terminal_once(tmp_path: Path) -> None:
    """An unreachable sync log is retried every few seconds; the terminal hears about it once, the log file always."""
    claude = tmp_path / "claude"
    (claude / "projects").mkdir(parents=True)
    env = {**os.environ, "CXSYNC_ROOTS": str(claude), "CXSYNC_SYNC_TARGET": f"sqlite:{tmp_path}/gone/log.db"}
    proc = subprocess.Popen([sys.executable, "-m", "cxsync.agent", "run"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    log = Path(env.get("CXSYNC_HOME", "")) / "logs" / "cxsync.log"
    try:
        wait_until(lambda: log.exists() and log.read_text().count("pull of team failed") >= 3, 30,
                   "three retries of the unreachable log")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert err.count("pull of team failed") == 1, err
