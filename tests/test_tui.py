"""``cxsync search`` driven by Textual's Pilot, headless, on a real cache: type, see hits update, open one."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import cxsync.agent.cli  # noqa: F401 - the CLI root first (its topic modules import it)
from cxsync.agent.tui import DEBOUNCE_S, Picked, SearchApp
from cxsync.cache import open_cache
from tests import transcripts as T

S1 = "1111aaaa-0000-4000-8000-000000000001"
S2 = "2222bbbb-0000-4000-8000-000000000002"


def cx(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cxsync.agent", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=120)


@pytest.fixture
def cache_path(claude_home: Path, cxhome: Path) -> Path:
    T.write(T.session_file(claude_home, S1, "-home-dev-webapp"), [
        T.user(S1, "the flux capacitor [bold]needs[/bold] power \x1b]0;pwned\x07", cwd="/home/dev/webapp"),
        *T.assistant_lines(S1, [T.text("Set the flux capacitor to 1.21 gigawatts.")], cwd="/home/dev/webapp"),
    ])
    T.write(T.session_file(claude_home, S2, "-home-dev-api"), [
        T.user(S2, "the gateway token expired again", cwd="/home/dev/api"),
        T.user(S2, "and the flux of requests doubled", cwd="/home/dev/api"),
    ])
    assert cx("import", "--root", str(claude_home)).returncode == 0
    return cxhome / "data" / "cache.db"


def drive(cache_path: Path, script: Any, **kw: Any) -> tuple[SearchApp, Any]:
    async def main() -> tuple[SearchApp, Any]:
        with open_cache(cache_path, readonly=True) as cache:
            app = SearchApp(cache, **kw)
            async with app.run_test(size=(100, 30)) as pilot:
                await script(app, pilot)
            return app, app.return_value

    return asyncio.run(main())


async def settle(app: SearchApp, pilot: Any, searches: int) -> None:
    """Wait until at least ``searches`` searches ran and no more are coming (typing is debounced)."""
    for _ in range(300):
        await pilot.pause(0.02)
        if app.searches >= searches:
            before = app.searches
            await pilot.pause(DEBOUNCE_S * 3)
            if app.searches == before:
                return
    raise AssertionError(f"only {app.searches} searches ran")


def test_typing_updates_the_hits_and_enter_opens_the_session(cache_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: SearchApp, pilot: Any) -> None:
        await settle(app, pilot, 1)
        seen["empty"] = len(app.hits)
        await pilot.press(*"flux")
        await settle(app, pilot, 2)
        seen["flux"] = sorted({h.root_session for h in app.hits})
        app.query_one("#query").value = "capacitor"
        await settle(app, pilot, 3)
        seen["preview"] = str(app.query_one("#preview").render())
        await pilot.press("end", "space", *"gigawatts")
        await settle(app, pilot, 4)
        seen["narrowed"] = [(h.root_session, h.role) for h in app.hits]
        seen["typed"] = app.query_one("#query").value
        await pilot.press("enter")

    app, picked = drive(cache_path, script)
    assert seen["empty"] == 0
    assert seen["flux"] == [S1, S2]  # both sessions mention flux
    assert "[bold]needs[/bold]" in seen["preview"] and "␛]0;pwned␇" in seen["preview"]
    assert seen["typed"] == "capacitor gigawatts"
    assert seen["narrowed"] == [(S1, "assistant")]
    assert picked == Picked(S1, picked.key, "/home/dev/webapp")
    assert picked.resume_command() == f"cd /home/dev/webapp && claude --resume {S1}"


def test_filters_narrow_by_project_and_role_and_arrows_move(cache_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: SearchApp, pilot: Any) -> None:
        await settle(app, pilot, 1)  # the initial query runs at once
        seen["all"] = len(app.hits)
        app.query_one("#project").value = "api"
        await settle(app, pilot, 2)
        seen["api"] = {h.root_session for h in app.hits}
        app.query_one("#project").value = ""
        app.query_one("#role").value = "assistant"
        await settle(app, pilot, 3)
        seen["assistant"] = {h.role for h in app.hits}
        app.query_one("#role").value = ""
        await settle(app, pilot, 4)
        await pilot.press("down")
        await pilot.pause()
        await pilot.press("enter")

    app, picked = drive(cache_path, script, query="flux")
    assert seen["all"] == 3
    assert seen["api"] == {S2}
    assert seen["assistant"] == {"assistant"}
    assert picked is not None and picked.key == app.hits[1].key


def test_a_bad_search_is_shown_not_raised_and_escape_quits(cache_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: SearchApp, pilot: Any) -> None:
        await settle(app, pilot, 1)
        app.query_one("#since").value = "someday"
        await settle(app, pilot, 2)
        seen["status"] = str(app.query_one("#status").render())
        await pilot.press("escape")

    _, picked = drive(cache_path, script, query="flux")
    assert "cannot understand --since" in seen["status"]
    assert picked is None


def test_search_without_a_terminal_points_to_query(cache_path: Path) -> None:
    r = cx("search", "flux")
    assert r.returncode == 2 and "needs a terminal" in r.stderr and "cxsync query" in r.stderr
