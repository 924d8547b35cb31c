"""tray.model: the icon, tooltip and menu for every agent state — pure data, no pystray, no display."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from cxsync.tray import model
from cxsync.tray.model import STATES, TrayView, view

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=timezone.utc)


def status(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "state": "idle", "pid": 4242, "uptime_s": 120.0, "transcripts_watched": 3, "messages": 1234,
        "sessions": 56, "import": {"done": 10, "total": 10}, "outbox": 0,
        "last_push": (NOW - timedelta(minutes=3)).isoformat(), "last_pull": (NOW - timedelta(minutes=5)).isoformat(),
        "streams": {"u/alice": {"cursor": "00" * 12, "behind": 0}, "team": {"cursor": None, "behind": 0}},
        "last_error": None, "credential_backend": "SecretService Keyring", "target": "sqlite:/tmp/log.db",
    }
    base.update(over)
    return base


def v(**over: Any) -> TrayView:
    return view(status(**over), now=NOW)


def actions(tv: TrayView) -> list[str]:
    return [e.action for e in tv.menu if e.kind == "action" and e.action]


# --- the icon --------------------------------------------------------------------------------------------------

def test_every_state_has_its_own_colour_and_glyph() -> None:
    looks = [v(state=s).icon for s in STATES]
    assert [look.state for look in looks] == list(STATES)
    assert len({look.colour for look in looks}) == 7
    assert len({look.glyph for look in looks}) == 7
    assert all(look.colour.startswith("#") and len(look.colour) == 7 for look in looks)
    assert {look.glyph for look in looks} <= set(model.GLYPHS)


@pytest.mark.parametrize("state", ["offline", "not-running"])
def test_queued_events_show_as_a_badge_when_nothing_leaves_the_machine(state: str) -> None:
    assert v(state=state, outbox=7).icon.badge == "7"
    assert v(state=state, outbox=0).icon.badge is None


@pytest.mark.parametrize("state", ["idle", "syncing", "paused", "error", "needs-auth"])
def test_no_badge_while_the_agent_is_online(state: str) -> None:
    assert v(state=state, outbox=7).icon.badge is None


def test_badge_caps_at_99_plus() -> None:
    assert v(state="offline", outbox=99).icon.badge == "99"
    assert v(state="offline", outbox=100).icon.badge == "99+"
    assert v(state="offline", outbox=123456).icon.badge == "99+"


# --- the tooltip -----------------------------------------------------------------------------------------------

def test_title_says_the_state_in_words() -> None:
    assert v(state="idle").title == "cxsync — Up to date · 1,234 messages"
    assert v(state="syncing", messages=1).title == "cxsync — Syncing · 1 message"
    assert v(state="paused").title == "cxsync — Paused"
    assert v(state="offline", outbox=12).title == "cxsync — Offline — 12 events queued"
    assert v(state="offline", outbox=1).title == "cxsync — Offline — 1 event queued"


def test_title_carries_the_error_title_when_in_error() -> None:
    tv = v(state="error", last_error={"title": "cannot reach FoundationDB", "hint": "check the cluster file"})
    assert tv.title == "cxsync — Error: cannot reach FoundationDB"


def test_title_is_bounded_for_windows_tooltips() -> None:
    tv = v(state="error", last_error={"title": "x" * 500, "hint": ""})
    assert len(tv.title) == model.TITLE_MAX
    assert tv.title.endswith("…")


# --- the status lines ------------------------------------------------------------------------------------------

def test_status_lines_for_a_healthy_syncing_agent() -> None:
    assert v(state="idle").status_lines == (
        "cxsync: Up to date",
        "1,234 messages in 56 sessions",
        "Outbox: empty",
        "Last sync: 3 min ago",
    )


def test_outbox_line_counts_events_to_push() -> None:
    assert "Outbox: 5 events to push" in v(outbox=5).status_lines
    assert "Outbox: 1 event to push" in v(outbox=1).status_lines


def test_last_sync_is_the_newer_of_push_and_pull() -> None:
    tv = v(last_push=(NOW - timedelta(hours=2)).isoformat(), last_pull=(NOW - timedelta(seconds=20)).isoformat())
    assert "Last sync: just now" in tv.status_lines
    assert "Last sync: 2 h ago" in v(last_push=(NOW - timedelta(hours=2)).isoformat(), last_pull=None).status_lines
    assert "Last sync: never" in v(last_push=None, last_pull=None).status_lines


def test_last_sync_older_than_a_day_is_a_date_and_z_suffix_parses() -> None:
    line = [s for s in v(last_push="2025-05-01T08:00:00Z", last_pull=None).status_lines if s.startswith("Last")][0]
    assert line.startswith("Last sync: 2025-0")  # local time zone decides the exact day and hour
    assert "ago" not in line


def test_local_only_agent_says_sync_is_off_instead_of_outbox_and_last_sync() -> None:
    lines = v(target="none", last_push=None, last_pull=None).status_lines
    assert "Sync: off (local cache only)" in lines
    assert not any(s.startswith(("Outbox", "Last sync")) for s in lines)


def test_import_progress_shows_until_done() -> None:
    assert "Importing history: 40 of 500 transcripts" in v(**{"import": {"done": 40, "total": 500}}).status_lines
    assert not any("Importing" in s for s in v(**{"import": {"done": 500, "total": 500}}).status_lines)


def test_events_behind_are_summed_over_streams() -> None:
    tv = v(streams={"u/alice": {"cursor": None, "behind": 3}, "team": {"cursor": "ab", "behind": 4}})
    assert "Behind: 7+ events to pull" in tv.status_lines
    assert not any("Behind" in s for s in v().status_lines)


def test_last_error_and_its_hint_are_shown() -> None:
    tv = v(state="error", last_error={"title": "cannot reach FoundationDB", "hint": "check the cluster file"})
    assert "Last error: cannot reach FoundationDB" in tv.status_lines
    assert "→ check the cluster file" in tv.status_lines


def test_long_error_lines_are_clipped_for_the_menu() -> None:
    tv = v(state="error", last_error={"title": "boom " * 40, "hint": "do\nthis " * 40})
    err_lines = [s for s in tv.status_lines if s.startswith(("Last error", "→"))]
    assert len(err_lines) == 2
    assert all(len(s) <= model.LINE_MAX and s.endswith("…") and "\n" not in s for s in err_lines)


def test_needs_auth_without_an_error_points_at_login() -> None:
    assert "→ run `cxsync login` to store a credential" in v(state="needs-auth").status_lines


def test_not_running_says_how_to_start_it() -> None:
    lines = v(state="not-running", pid=None, outbox=3).status_lines
    assert lines[0] == "cxsync: Agent not running — 3 events queued"
    assert "→ start it with `cxsync run` or `cxsync tray`" in lines


def test_status_lines_are_never_clickable() -> None:
    for s in STATES:
        assert all(not e.enabled and e.action is None for e in v(state=s).menu if e.kind == "info")


# --- the actions -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("state", ["idle", "syncing", "offline", "error", "needs-auth"])
def test_running_agent_offers_pause_and_sync_now(state: str) -> None:
    tv = v(state=state)
    assert actions(tv) == ["pause", "sync-now", "open-log", "open-config", "quit"]
    assert all(e.enabled for e in tv.menu if e.kind == "action")
    assert tv.entry("sync-now") is not None and tv.entry("sync-now").default  # type: ignore[union-attr]


def test_paused_agent_offers_resume_as_the_default_and_disables_sync_now() -> None:
    tv = v(state="paused")
    assert actions(tv) == ["resume", "sync-now", "open-log", "open-config", "quit"]
    resume, sync = tv.entry("resume"), tv.entry("sync-now")
    assert resume is not None and resume.enabled and resume.default and resume.label == "Resume syncing"
    assert sync is not None and not sync.enabled and not sync.default


def test_not_running_disables_pause_and_sync_now_but_keeps_the_rest() -> None:
    tv = v(state="not-running")
    assert not tv.entry("pause").enabled  # type: ignore[union-attr]
    assert not tv.entry("sync-now").enabled  # type: ignore[union-attr]
    for action in ("open-log", "open-config", "quit"):
        assert tv.entry(action).enabled  # type: ignore[union-attr]
    assert not any(e.default for e in tv.menu)


def test_exactly_one_enabled_default_at_most() -> None:
    for s in STATES:
        defaults = [e for e in v(state=s).menu if e.default]
        assert len(defaults) <= 1
        assert all(e.enabled for e in defaults)


def test_quit_label_depends_on_whether_the_tray_owns_the_agent() -> None:
    assert view(status(), now=NOW).entry("quit").label == "Quit cxsync"  # type: ignore[union-attr]
    client = view(status(), now=NOW, owner=False)
    assert client.entry("quit").label == "Quit tray (agent keeps running)"  # type: ignore[union-attr]


def test_menu_layout_groups_with_separators() -> None:
    kinds = [e.kind for e in v().menu]
    assert kinds == ["info"] * 4 + ["separator", "action", "action", "separator", "action", "action",
                                    "separator", "action"]
    assert set(actions(v())) <= set(model.ACTIONS)


# --- robustness ------------------------------------------------------------------------------------------------

def test_a_minimal_or_malformed_status_still_renders() -> None:
    tv = view({"state": "idle", "messages": "lots", "outbox": None, "import": "?", "streams": [1]}, now=NOW)
    assert tv.state == "idle"
    assert "0 messages in 0 sessions" in tv.status_lines


def test_an_unknown_state_renders_as_an_error_naming_it() -> None:
    tv = view({"state": "exploded"}, now=NOW)
    assert tv.state == "error" and tv.icon.glyph == "cross"
    assert "Last error: unknown agent state 'exploded'" in tv.status_lines


def test_views_are_frozen_and_compare_by_value() -> None:
    a, b = v(), v()
    assert a == b and hash(a) == hash(b)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.state = "error"  # type: ignore[misc]
    assert v(outbox=1) != a


def test_same_status_later_changes_only_the_relative_time() -> None:
    later = view(status(), now=NOW + timedelta(minutes=10))
    assert later.icon == v().icon and later.title == v().title
    assert "Last sync: 13 min ago" in later.status_lines


def test_the_model_imports_neither_pystray_nor_pillow() -> None:
    code = "import sys, cxsync.tray.model; print(sorted(m for m in ('pystray', 'PIL') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
