"""The tray as data: what the icon looks like and what the menu says, from one status dict.

Pure on purpose — no pystray, no Pillow — so every state and every menu line is tested without a display.
``view(status)`` takes the dict that ``cxsync.agent.status.collect`` and ``Supervisor.snapshot`` return and
yields a frozen ``TrayView``; the pystray adapter (``tray/app.py``) only renders it and dispatches the actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

# The seven agent states, in the order the docs list them.
STATES: tuple[str, ...] = ("idle", "syncing", "offline", "paused", "error", "needs-auth", "not-running")

# Menu actions the adapter knows how to run.
ACTIONS: tuple[str, ...] = ("pause", "resume", "sync-now", "open-log", "open-config", "quit")

# Windows truncates tray tooltips at 127 characters; keep every platform the same.
TITLE_MAX = 127
# Menus get unusably wide with long error text; the full text is in the log and `cxsync status`.
LINE_MAX = 72


@dataclass(frozen=True)
class IconLook:
    """How the icon is drawn: a disc of ``colour`` with a white ``glyph``, and an optional badge."""

    state: str
    colour: str  # "#RRGGBB"
    glyph: str  # one of GLYPHS
    badge: str | None = None  # e.g. "7", "99+"


@dataclass(frozen=True)
class MenuEntry:
    """One menu line.  ``kind`` is "info" (a status line, never clickable), "action" or "separator"."""

    kind: str
    label: str = ""
    action: str | None = None
    enabled: bool = True
    default: bool = False  # the action a plain click on the icon runs (the only one on bare X11)


SEPARATOR = MenuEntry("separator")


@dataclass(frozen=True)
class TrayView:
    state: str
    icon: IconLook
    title: str
    menu: tuple[MenuEntry, ...]

    def entry(self, action: str) -> MenuEntry | None:
        """The menu entry running ``action``, if the menu has one."""
        for e in self.menu:
            if e.action == action:
                return e
        return None

    @property
    def status_lines(self) -> tuple[str, ...]:
        return tuple(e.label for e in self.menu if e.kind == "info")


# state -> (colour, glyph, headline).  Colours stay distinguishable for the common colour-vision deficiencies
# because every state also has its own glyph.
_LOOKS: dict[str, tuple[str, str, str]] = {
    "idle": ("#2E7D32", "check", "Up to date"),
    "syncing": ("#1565C0", "arrows", "Syncing"),
    "offline": ("#607D8B", "cloud-off", "Offline"),
    "paused": ("#F9A825", "pause", "Paused"),
    "error": ("#C62828", "cross", "Error"),
    "needs-auth": ("#EF6C00", "key", "Sign-in needed"),
    "not-running": ("#616161", "stop", "Agent not running"),
}
GLYPHS: tuple[str, ...] = tuple(g for _, g, _ in _LOOKS.values())

# States in which queued events are worth a badge: nothing is leaving the machine right now.
_BADGE_STATES = frozenset({"offline", "not-running"})


def badge_text(count: int) -> str | None:
    if count <= 0:
        return None
    return str(count) if count < 100 else "99+"


def _int(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def _clip(text: str, limit: int = LINE_MAX) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def ago(then: datetime, now: datetime) -> str:
    """A short relative time: "just now", "5 min ago", "3 h ago", else the local date and time."""
    seconds = (now - then).total_seconds()
    if seconds < 60:
        return "just now"  # also absorbs small clock skew between machines
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return then.astimezone().strftime("%Y-%m-%d %H:%M")


def _last_sync(status: Mapping[str, Any]) -> datetime | None:
    times = [t for t in (_parse_time(status.get("last_push")), _parse_time(status.get("last_pull"))) if t]
    return max(times) if times else None


def _headline(state: str, outbox: int) -> str:
    head = _LOOKS[state][2]
    if state in _BADGE_STATES and outbox:
        head += f" — {_plural(outbox, 'event')} queued"
    return head


def _status_lines(state: str, status: Mapping[str, Any], now: datetime) -> list[str]:
    outbox = _int(status.get("outbox"))
    lines = [f"cxsync: {_headline(state, outbox)}"]
    lines.append(f"{_plural(_int(status.get('messages')), 'message')} in "
                 f"{_plural(_int(status.get('sessions')), 'session')}")
    imp = status.get("import")
    if isinstance(imp, Mapping):
        done, total = _int(imp.get("done")), _int(imp.get("total"))
        if total and done < total:
            lines.append(f"Importing history: {done:,} of {total:,} transcripts")
    target = status.get("target")
    if target in ("none", ""):
        lines.append("Sync: off (local cache only)")
    else:
        lines.append("Outbox: empty" if outbox == 0 else f"Outbox: {_plural(outbox, 'event')} to push")
        last = _last_sync(status)
        lines.append(f"Last sync: {ago(last, now) if last else 'never'}")
        streams = status.get("streams")
        if isinstance(streams, Mapping):
            # ``behind`` is what status writes per stream: events known to wait in the log (a lower bound while
            # a catch-up is under way, hence the "+").
            behind = sum(_int(s.get("behind")) for s in streams.values() if isinstance(s, Mapping))
            if behind:
                lines.append(f"Behind: {behind:,}+ events to pull")
        skipped = _int(status.get("undecodable"))
        if skipped:
            lines.append(f"Unreadable: {_plural(skipped, 'event')} kept aside (upgrade cxsync)")
    err = status.get("last_error")
    if isinstance(err, Mapping) and err.get("title"):
        lines.append(_clip(f"Last error: {err['title']}"))
        if err.get("hint"):
            lines.append(_clip(f"→ {err['hint']}"))
    elif state == "needs-auth":
        lines.append("→ run `cxsync login` to store a credential")
    elif state == "not-running":
        lines.append("→ start it with `cxsync run` or `cxsync tray`")
    return lines


def _title(state: str, status: Mapping[str, Any]) -> str:
    outbox = _int(status.get("outbox"))
    title = f"cxsync — {_headline(state, outbox)}"
    err = status.get("last_error")
    if state in ("error", "needs-auth") and isinstance(err, Mapping) and err.get("title"):
        title += f": {err['title']}"
    elif state in ("idle", "syncing"):
        title += f" · {_plural(_int(status.get('messages')), 'message')}"
    title = " ".join(title.split())
    return title if len(title) <= TITLE_MAX else title[: TITLE_MAX - 1] + "…"


def view(status: Mapping[str, Any], now: datetime | None = None, *, owner: bool = True) -> TrayView:
    """The icon, tooltip and menu for one status snapshot.  Missing or malformed fields read as zero/none.

    ``owner`` says whether this tray runs the agent itself; a tray that is only a client of another agent
    (``cxsync run`` under systemd, say) quits alone and says so.
    """
    now = now or datetime.now(timezone.utc)
    raw_state = status.get("state")
    state = raw_state if raw_state in _LOOKS else "error"
    status = dict(status)
    if raw_state not in _LOOKS:
        status.setdefault("last_error", {"title": f"unknown agent state {raw_state!r}",
                                         "hint": "the tray and the agent may be different versions"})
    colour, glyph, _ = _LOOKS[state]
    outbox = _int(status.get("outbox"))
    look = IconLook(state, colour, glyph, badge_text(outbox) if state in _BADGE_STATES else None)

    running = state != "not-running"
    paused = state == "paused"
    menu: list[MenuEntry] = [MenuEntry("info", line, enabled=False) for line in _status_lines(state, status, now)]
    menu.append(SEPARATOR)
    if paused:
        menu.append(MenuEntry("action", "Resume syncing", "resume", default=True))
    else:
        menu.append(MenuEntry("action", "Pause syncing", "pause", enabled=running))
    menu.append(MenuEntry("action", "Sync now", "sync-now", enabled=running and not paused,
                          default=running and not paused))
    menu.append(SEPARATOR)
    menu.append(MenuEntry("action", "Open log folder", "open-log"))
    menu.append(MenuEntry("action", "Open config", "open-config"))
    menu.append(SEPARATOR)
    menu.append(MenuEntry("action", "Quit cxsync" if owner else "Quit tray (agent keeps running)", "quit"))
    return TrayView(state, look, _title(state, status), tuple(menu))
