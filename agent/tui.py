"""``cxsync search``: an interactive full-screen search — what ``atuin search`` is to shell history.

Results update as you type (debounced), a preview shows the conversation around the highlighted hit, filters narrow
by project, role and age, and Enter picks the hit: the command prints ``claude --resume <session>`` (with a ``cd``
into the project) so the session can be reopened.  Built on Textual; tested headlessly with its Pilot.

All transcript text reaches the screen as ``rich.text.Text`` through ``agent.render``: never markup, never control.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Input, Select, Static

from cxsync.agent import render
from cxsync.sync.errors import CxError

ROLES = [("any role", ""), ("user", "user"), ("assistant", "assistant"), ("tool", "tool"), ("system", "system")]
DEBOUNCE_S = 0.12


@dataclass(frozen=True)
class Picked:
    """What Enter chose: the session to resume and where it ran."""

    session: str
    key: str
    project: str | None

    def resume_command(self) -> str:
        cmd = f"claude --resume {shlex.quote(self.session)}"
        return f"cd {shlex.quote(self.project)} && {cmd}" if self.project else cmd


class SearchApp(App[Picked | None]):
    CSS = """
    #filters { height: 3; }
    #query { width: 2fr; }
    #project { width: 1fr; }
    #since { width: 14; }
    #role { width: 18; }
    #hits { height: 1fr; }
    #preview { height: 1fr; border-top: solid $accent; padding: 0 1; overflow-y: auto; }
    #status { height: 1; color: $text-muted; }
    """
    BINDINGS = [Binding("escape", "quit_search", "Quit"), Binding("ctrl+c", "quit_search", "Quit", show=False),
                Binding("down", "move(1)", "Next", show=False), Binding("up", "move(-1)", "Previous", show=False),
                Binding("enter", "pick", "Resume")]

    def __init__(self, cache: Any, *, query: str = "", limit: int = 50) -> None:
        super().__init__()
        self.cache = cache
        self.initial = query
        self.limit = limit
        self.hits: list[Any] = []
        self.searches = 0  # how many searches ran (the pilot test watches it)
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        with Vertical():
            with Horizontal(id="filters"):
                yield Input(value=self.initial, placeholder="search every session…", id="query")
                yield Input(placeholder="project", id="project")
                yield Input(placeholder="since: 3d", id="since")
                yield Select(ROLES, value="", allow_blank=False, id="role")
            yield DataTable(id="hits", cursor_type="row", zebra_stripes=True)
            yield Static(id="preview", markup=False)
            yield Static(id="status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#hits", DataTable)
        table.add_columns("when", "role", "project", "match")
        self.query_one("#query", Input).focus()
        self.run_search()

    # ---- searching ------------------------------------------------------------------------------------------

    @on(Input.Changed)
    @on(Select.Changed)
    def _changed(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE_S, self.run_search)

    def _status(self, text: str) -> None:
        self.query_one("#status", Static).update(Text(text))

    def run_search(self) -> None:
        from cxsync.agent.cli_query import weighted_search
        from cxsync.cache.querytext import since_to_iso

        self.searches += 1
        text = self.query_one("#query", Input).value.strip()
        project = self.query_one("#project", Input).value.strip() or None
        since = self.query_one("#since", Input).value.strip() or None
        role = self.query_one("#role", Select).value or None
        table = self.query_one("#hits", DataTable)
        table.clear()
        self.hits = []
        if not text:
            self.query_one("#preview", Static).update(Text(""))
            self._status("Type to search.  Enter: resume the session · Esc: quit")
            return
        try:
            self.hits = weighted_search(self.cache, text, limit=self.limit, role=str(role) if role else None,
                                        project=project, session=None,
                                        since=since_to_iso(since) if since else None, fts=False)
        except CxError as exc:
            self._status(f"{exc.title}" + (f" — {exc.hint}" if exc.hint else ""))
            return
        from cxsync.agent.cli_query import snippet_text

        for h in self.hits:
            table.add_row(render.styled(render.when(h.occurred_at, short=True)), render.styled(h.role),
                          render.styled(render.path_tail(h.project, 18)), snippet_text(h.snippet))
        n = len(self.hits)
        self._status(f"{n}{'+' if n >= self.limit else ''} {'hit' if n == 1 else 'hits'}"
                     "  ·  ↑↓ move · Enter: resume the session · Esc: quit")
        if self.hits:
            table.move_cursor(row=0)
            self.show_preview(0)
        else:
            self.query_one("#preview", Static).update(Text("No matches."))

    # ---- the preview and the choice ------------------------------------------------------------------------

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_preview(event.cursor_row)

    def show_preview(self, row: int) -> None:
        if not 0 <= row < len(self.hits):
            return
        from cxsync.agent.conversation import strip_wrappers
        from cxsync.agent.showtext import window

        h = self.hits[row]
        try:
            data = self.cache.show(h.session, include_subagents=bool(h.agent_id))
            msgs = window(data["messages"], h.key, 2)
        except CxError as exc:
            self.query_one("#preview", Static).update(Text(exc.title))
            return
        out = Text()
        out.append(f"{h.session}  {render.visible(h.project or '')}\n", style="dim")
        for m in msgs:
            mark = "▶ " if m.get("is_hit") else "  "
            out.append(f"{mark}{m['role']} · {render.when(m.get('occurred_at'))}\n",
                       style="bold yellow" if m.get("is_hit") else "bold")
            body = render.visible(strip_wrappers(m["content"]))
            lines = body.splitlines()
            out.append("\n".join(lines[:8]) + ("\n  …" if len(lines) > 8 else "") + "\n\n")
        self.query_one("#preview", Static).update(out)

    def action_move(self, delta: int) -> None:
        table = self.query_one("#hits", DataTable)
        if self.hits:
            table.move_cursor(row=max(0, min(len(self.hits) - 1, table.cursor_row + delta)))

    def action_pick(self) -> None:
        if not self.hits:
            return
        row = self.query_one("#hits", DataTable).cursor_row
        h = self.hits[max(0, min(row, len(self.hits) - 1))]
        self.exit(Picked(h.root_session, h.key, h.project))

    @on(DataTable.RowSelected)
    def _selected(self) -> None:
        self.action_pick()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_pick()

    def action_quit_search(self) -> None:
        self.exit(None)
