"""``cxsync show`` for a person: a header, then each message with its blocks marked and folded, paged on a tty."""

from __future__ import annotations

import io
import sys
from typing import Any, Mapping, Sequence

import click

from cxsync.agent import render
from cxsync.agent.conversation import Block, blocks_of, short_key, strip_wrappers
from cxsync.cache.search import NotFound

RESULT_LINES = 3  # lines of a tool result shown when folded


def window(messages: list[dict[str, Any]], around: str, context: int) -> list[dict[str, Any]]:
    """The messages within ``context`` of the one whose key is ``around`` (or starts with it)."""
    want = around.strip()
    idx = next((i for i, m in enumerate(messages) if m["key"] == want), None)
    if idx is None:
        short = want.replace("msg_", "")
        found = [i for i, m in enumerate(messages)
                 if m["key"].startswith(want) or m["key"].replace("msg_", "").startswith(short)]
        if len(found) > 1:
            from cxsync.cache.search import QueryError

            raise QueryError(f"key {want!r} matches {len(found)} messages of this session",
                             "give more characters of the key")
        idx = found[0] if found else None
    if idx is None:
        raise NotFound(f"no message {want!r} in this session",
                       "take the key from `cxsync query` output (the second column), or add --agents")
    for i, m in enumerate(messages):
        m["is_hit"] = i == idx
    return messages[max(0, idx - context): idx + context + 1]


def message_records(cache: Any, keys: Sequence[str]) -> dict[str, list[Any]]:
    """Each message's raw records, decoded from the event that brought it (for its blocks)."""
    import orjson

    from cxsync.sync import events as ev

    out: dict[str, list[Any]] = {}
    for i in range(0, len(keys), 500):
        chunk = list(keys[i:i + 500])
        sql = ("SELECT m.key, e.payload FROM messages m JOIN events e ON e.event_id = m.event_id"
               f" WHERE m.key IN ({','.join('?' * len(chunk))})")
        for key, payload in cache.conn.execute(sql, chunk):
            try:
                raws = ev.decode(payload).data.get("records", [])
                out[key] = [orjson.loads(r) if isinstance(r, (str, bytes)) else r for r in raws]
            except Exception:  # noqa: BLE001 - an undecodable event: show the stored text instead
                continue
    return out


def _fold(text: str, lines: int) -> tuple[str, int]:
    all_lines = text.splitlines() or [""]
    return "\n".join(all_lines[:lines]), max(0, len(all_lines) - lines)


def _indented(con: Any, text: str, prefix: str, width: int, style: str = "", first: Any = None) -> None:
    """``text`` wrapped to the width, every line behind ``prefix`` (``first``: the first line's own prefix)."""
    from rich.text import Text

    lines = render.visible(text, tabs=False).splitlines() or [""]
    n = 0
    for line in lines:
        room = width - max(len(prefix), len(first.plain) if first is not None else 0)
        for piece in Text(line, style=style).wrap(con, max(10, room)) or [Text("")]:
            head = first if (n == 0 and first is not None) else Text(prefix, style=style)
            con.print(Text.assemble(head, piece), overflow="ignore", crop=False)
            n += 1


def _print_block(con: Any, b: Block, full: bool, width: int) -> None:
    from rich.text import Text

    if b.kind == "thinking":
        con.print(Text("  ┆ thinking", style="dim italic"))
        _indented(con, b.text, "  ┆ ", width, "dim italic")
    elif b.kind == "tool_use":
        text = render.visible(b.text) if full else render.one_line(b.text, max(20, width - len(b.name) - 6))
        con.print(Text("  ▸ ", style="yellow").append(b.name, style="bold yellow").append(" " + text))
    elif b.kind == "tool_result":
        label = "  ◂ error" if b.error else "  ◂ result"
        shown, more = (b.text, 0) if full else _fold(b.text, RESULT_LINES)
        _indented(con, shown, "    ", width, first=Text(label + " ", style="red" if b.error else "yellow"))
        if more:
            con.print(Text(f"    … {more} more lines (--full)", style="dim"))
    elif b.kind == "command":
        con.print(Text(render.visible(b.text), style="bold"))
    elif b.kind == "local":
        shown, more = (b.text, 0) if full else _fold(b.text, 1)
        label = "  (interrupted) " if b.text.lstrip().startswith("[Request interrupted") else "  (command output) "
        con.print(Text(label, style="dim").append(render.one_line(shown, width - 20)
                                                                  if not full else render.visible(shown)))
    else:
        _indented(con, b.text, "", width)


def print_conversation(data: Mapping[str, Any], records: Mapping[str, list[Any]], *, around: str | None,
                       full: bool, pager: bool) -> None:
    from rich.text import Text

    tty = sys.stdout.isatty()
    width = render.terminal_width()
    buf = io.StringIO()
    from rich.console import Console

    con = Console(file=buf, width=width, markup=False, emoji=False, highlight=False, force_terminal=tty,
                  color_system="auto" if tty else None)
    info = data.get("session") or {}
    con.print(Text("# ", style="bold").append(render.one_line(info.get("label") or info.get("session") or ""),
                                              style="bold"))
    meta = Text(f"session {info.get('session')}", style="dim")
    for name, value in (("project", info.get("project")), ("branch", info.get("branch"))):
        if value:
            meta.append(f"  {name} {render.visible(str(value))}", style="dim")
    if info.get("remote"):
        meta.append(f"  from machine {render.visible(str(info.get('machine')))}", style="magenta")
    if info.get("first_at"):
        meta.append(f"  {render.local_time(info.get('first_at'))} → {render.when_long(info.get('last_at'))}",
                    style="dim")
    con.print(meta)
    if around:
        con.print(Text(f"around {around}; the whole conversation: cxsync show {str(info.get('session'))[:8]}",
                       style="dim"))
    for m in data["messages"]:
        con.print()
        head = Text("▶ " if m.get("is_hit") else "── ", style="bold red" if m.get("is_hit") else "dim")
        role = "you" if m["role"] == "user" else m["role"]
        head.append(role, style={"user": "bold green", "assistant": "bold blue"}.get(m["role"], "bold"))
        if m.get("agent_id"):
            head.append(f" ({render.visible(m['agent_id'])})", style="magenta")
        head.append(f" · {render.when_long(m.get('occurred_at'))}", style="dim")
        head.append(f" · {short_key(m['key'])}", style="dim")
        con.print(head)
        blocks = blocks_of(records.get(m["key"], []))
        if not blocks:
            blocks = [Block("text", strip_wrappers(m["content"]))]
        for b in blocks:
            _print_block(con, b, full, width)
    text = buf.getvalue()
    if pager and tty:
        import shutil

        height = shutil.get_terminal_size((80, 24)).lines
        if text.count("\n") > height:
            click.echo_via_pager(text, color=True)
            return
    sys.stdout.write(text)
