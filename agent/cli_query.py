"""Read commands: query, sessions, show.  Everything they print from the cache goes through ``agent.render``."""

from __future__ import annotations

import sys
from typing import Any, Callable, Mapping, Sequence

import click

from cxsync.agent.cli import Ctx
from cxsync.agent.conversation import short_key

ROLE_WEIGHT = {"user": 2.0, "assistant": 1.0, "system": 0.8, "tool": 0.5}  # a prompt outranks tool output
COUNT_CAP = 1000  # counting every match of a common word would cost more than the search itself


def open_for_reading(cfg: Any) -> Any:
    from cxsync.cache import open_cache

    return open_cache(cfg.paths.cache_db, readonly=True)


def format_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--format table|json|jsonl|csv|tsv`` (as sqlite-utils has) and ``--json``, its short form."""
    from cxsync.agent.render import FORMATS

    fn = click.option("--json", "as_json", is_flag=True, help="Same as --format json.")(fn)
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
                        help="Output format: a table for people, json/jsonl/csv/tsv for programs.")(fn)


def _fmt(fmt: str, as_json: bool) -> str:
    return "json" if as_json else fmt


def _since(since: str | None) -> str | None:
    from cxsync.cache.querytext import since_to_iso

    return since_to_iso(since) if since else None


def snippet_text(snippet: str, style: str = "bold yellow") -> Any:
    """The FTS snippet as rich Text: one line, control characters visible, the matched words styled."""
    from rich.text import Text

    from cxsync.agent.render import one_line
    from cxsync.cache.search import HL_CLOSE, HL_OPEN

    out = Text()
    flat = one_line(snippet.replace(HL_OPEN, "\ue000").replace(HL_CLOSE, "\ue001"))
    for i, part in enumerate(flat.split("\ue000")):
        hit, _, rest = part.partition("\ue001") if i else ("", "", part)
        out.append(hit, style=style)
        out.append(rest)
    return out


def plain_snippet(snippet: str) -> str:
    from cxsync.agent.render import one_line
    from cxsync.cache.search import HL_CLOSE, HL_OPEN

    return one_line(snippet.replace(HL_OPEN, "**").replace(HL_CLOSE, "**"))


def count_matches(cache: Any, text: str, *, fts: bool, project: str | None, session: str | None,
                  role: str | None, since: str | None) -> int:
    """How many messages match (at most ``COUNT_CAP + 1``), with the same filters as the search."""
    from cxsync.cache.querytext import to_fts

    where = ["messages_fts MATCH :q"]
    params: dict[str, Any] = {"q": to_fts(text, fts=fts), "cap": COUNT_CAP + 1}
    if project:
        where.append("(m.project = :project OR m.project LIKE :project_like)")
        params.update(project=project, project_like="%/" + project.strip("/"))
    if session:
        where.append("(m.root_session = :sid OR m.session_id = :sid)")
        params["sid"] = cache.resolve_session(session)
    if role:
        where.append("m.role = :role")
        params["role"] = role
    if since:
        where.append("m.occurred_at >= :since")
        params["since"] = since
    sql = ("SELECT count(*) FROM (SELECT 1 FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid"
           f" WHERE {' AND '.join(where)} LIMIT :cap)")
    return int(cache.conn.execute(sql, params).fetchone()[0])


def weighted_search(cache: Any, text: str, *, limit: int, role: str | None, **kw: Any) -> list[Any]:
    """Hits ranked by bm25 weighted by role, so a user's prompt is not drowned by long tool output."""
    if role:
        return list(cache.search(text, limit=limit, role=role, **kw))
    hits = [h for r in ROLE_WEIGHT for h in cache.search(text, limit=limit, role=r, **kw)]
    hits.sort(key=lambda h: h.rank * ROLE_WEIGHT.get(h.role, 1.0))  # bm25: lower (more negative) is better
    return hits[:limit]


def local_machine(cfg: Any) -> str | None:
    return getattr(getattr(cfg, "identity", None), "machine", None)


def _label_fallback(cache: Any, session: str) -> list[str]:
    return [str(r[0]) for r in cache.conn.execute(
        "SELECT cx_text(event_id) FROM messages WHERE session_id=? AND role='user' AND is_meta=0"
        " ORDER BY coalesce(occurred_at, ''), source_line LIMIT 50", (session,))]


def with_labels(cache: Any, rows: list[dict[str, Any]], machine: str | None) -> list[dict[str, Any]]:
    """Each session row with ``label`` (title, or the first prompt as Claude Code shows it) and ``remote``."""
    from cxsync.agent.conversation import prompt_text, session_label

    out = []
    for r in rows:
        label = session_label(r.get("title"), r.get("first_prompt"))
        if not label and not r.get("title"):
            fp = r.get("first_prompt")
            if not fp or prompt_text(fp) is None:
                label = session_label(None, None, _label_fallback(cache, r["session"]))
        remote = bool(machine and r.get("machine") and r["machine"] != machine)
        out.append({**r, "label": label, "remote": remote})
    return out


def register(main: click.Group) -> None:
    @main.command()
    @click.argument("text", nargs=-1, required=True)
    @click.option("--limit", "-n", default=10, show_default=True, type=click.IntRange(1, 10_000),
                  help="Show at most this many hits.")
    @click.option("--project", "-p", help="Only this project (its path, or its last path component).")
    @click.option("--session", "-s", help="Only this session (id or unambiguous prefix).")
    @click.option("--role", type=click.Choice(["user", "assistant", "tool", "system"]),
                  help="Only messages of this role.  [default: all, user prompts ranked first]")
    @click.option("--since", help="Only messages newer than this: 2h, 3d, 1w, today, yesterday, last week, "
                                  "or a date.  [default: any time]")
    @click.option("--fts", is_flag=True, help="Read TEXT as raw FTS5 query syntax (AND, OR, NOT, NEAR, prefix*). "
                                              "Without it every word is searched as typed.")
    @format_options
    @click.pass_obj
    def query(obj: Ctx, text: tuple[str, ...], limit: int, project: str | None, session: str | None,
              role: str | None, since: str | None, fts: bool, fmt: str, as_json: bool) -> None:
        """Search every captured message: ranked hits with their session, key, role, time and snippet.

        \b
        Example:
          cxsync query flaky test retry --since 'last week'
          cxsync query --fts 'retry NEAR(flaky test, 5)'
        """
        from cxsync.agent import render

        fmt = _fmt(fmt, as_json)
        words = " ".join(text)
        since_iso = _since(since)
        cfg = obj.config()
        kw: dict[str, Any] = dict(project=project, session=session, since=since_iso, fts=fts)
        with open_for_reading(cfg) as cache:
            hits = weighted_search(cache, words, limit=limit, role=role, **kw)
            total = count_matches(cache, words, role=role, **kw) if fmt == "table" else len(hits)
        if fmt != "table":
            cols = [render.Column("session", lambda h: h["root_session"]), render.Column("key", lambda h: h["key"]),
                    render.Column("role", lambda h: h["role"]), render.Column("time", lambda h: h["occurred_at"] or ""),
                    render.Column("project", lambda h: h["project"] or ""),
                    render.Column("snippet", lambda h: h["snippet"])]
            rows = [{**h.as_dict(), "snippet": plain_snippet(h.snippet)} for h in hits]
            render.emit(rows, cols, fmt)
            return
        con = render.console(width=render.terminal_width())
        if not hits:
            click.echo("No matches.", err=True)
            return
        from rich.text import Text

        for h in hits:
            head = Text()
            head.append(h.root_session[:8], style="cyan")
            head.append(f"  {short_key(h.key)}", style="dim")
            if h.agent_id:
                head.append(f"  agent {render.visible(h.agent_id)}", style="magenta")
            head.append(f"  {render.when(h.occurred_at)}", style="dim")
            head.append(f"  {h.role}", style="bold green" if h.role == "user" else "green")
            head.append(f"  {render.path_tail(h.project)}", style="blue")
            con.print(head)
            con.print(Text("  ").append(snippet_text(h.snippet)))
        more = "more than " + f"{COUNT_CAP:,}" if total > COUNT_CAP else f"{total:,}"
        noun = "match" if total == 1 else "matches"
        tail = f"; --limit {min(10_000, limit * 5)} shows more" if total > len(hits) else ""
        con.print(Text(f"{len(hits)} shown of {more} {noun}{tail}.  Open one: cxsync show SESSION --around KEY",
                       style="dim"))

    @main.command()
    @click.option("--limit", "-n", type=click.IntRange(1, 1_000_000), help="At most this many.  [default: all]")
    @click.option("--project", "-p", help="Only this project (its path, or its last path component).")
    @click.option("--all", "include_subagents", is_flag=True, help="List subagent sessions too, marked ↳.")
    @format_options
    @click.pass_obj
    def sessions(obj: Ctx, limit: int | None, project: str | None, include_subagents: bool, fmt: str,
                 as_json: bool) -> None:
        """List captured sessions, newest first: when, size, project, title or first prompt.

        \b
        Example:
          cxsync sessions -n 20 --project webapp
        """
        from cxsync.agent import render

        fmt = _fmt(fmt, as_json)
        cfg = obj.config()
        machine = local_machine(cfg)
        with open_for_reading(cfg) as cache:
            rows = with_labels(cache, cache.sessions(limit=limit, project=project,
                                                     include_subagents=include_subagents), machine)
        if fmt == "table" and not rows:
            click.echo("No sessions captured yet: run `cxsync import`.", err=True)
            return
        render.emit(rows, _session_columns(rows, fmt), fmt)

    @main.command()
    @click.argument("session")
    @click.option("--around", metavar="KEY", help="Show only the messages around this one (a key from `query`).")
    @click.option("--context", "-C", default=3, show_default=True, type=click.IntRange(0, 1000),
                  help="With --around: how many messages before and after.")
    @click.option("--agents", is_flag=True, help="Interleave the session's subagents.")
    @click.option("--full", is_flag=True, help="Unfold tool calls, tool results and command output.")
    @click.option("--pager/--no-pager", default=True, show_default=True,
                  help="Page long output when printing to a terminal.")
    @format_options
    @click.pass_obj
    def show(obj: Ctx, session: str, around: str | None, context: int, agents: bool, full: bool, pager: bool,
             fmt: str, as_json: bool) -> None:
        """Print one session's conversation in order: prompts, thinking, answers, folded tool calls.

        \b
        Example:
          cxsync show 491e126e
          cxsync show 491e126e --around u:5f1c0c2e -C 5
        """
        from cxsync.agent import render, showtext

        fmt = _fmt(fmt, as_json)
        cfg = obj.config()
        with open_for_reading(cfg) as cache:
            data = cache.show(session, include_subagents=agents)
            if around:
                from cxsync.cache.search import NotFound

                try:
                    data["messages"] = showtext.window(data["messages"], around, context)
                except NotFound:
                    if agents:
                        raise
                    # a hit in one of the session's subagents: show it among them
                    data = cache.show(session, include_subagents=True)
                    data["messages"] = showtext.window(data["messages"], around, context)
            data["session"] = with_labels(cache, [data["session"]], local_machine(cfg))[0] if data["session"] \
                else None
            records = showtext.message_records(cache, [m["key"] for m in data["messages"]]) \
                if fmt == "table" else {}
        if fmt != "table":
            cols = [render.Column(c, (lambda c: lambda m: str(m.get(c) if m.get(c) is not None else ""))(c))
                    for c in ("key", "role", "occurred_at", "agent_id", "content")]
            if fmt == "json":
                sys.stdout.write(render.json_text(data) + "\n")
            else:
                render.emit(data["messages"], cols, fmt)
            return
        showtext.print_conversation(data, records, around=around, full=full, pager=pager)

    @main.command()
    @click.argument("text", nargs=-1)
    @click.option("--limit", "-n", default=50, show_default=True, type=click.IntRange(1, 1000),
                  help="At most this many hits in the list.")
    @click.pass_obj
    def search(obj: Ctx, text: tuple[str, ...], limit: int) -> None:
        """Search interactively: hits update as you type, a preview of the conversation, Enter to resume it.

        Prints the `claude --resume` command for the chosen session (with a cd into its project).
        """
        import sys

        from cxsync.agent.cli_query import open_for_reading
        from cxsync.sync.errors import UsageError

        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise UsageError("cxsync search needs a terminal",
                             "use `cxsync query WORDS` in scripts and pipes")
        cfg = obj.config()
        with open_for_reading(cfg) as cache:
            from cxsync.agent.tui import SearchApp

            picked = SearchApp(cache, query=" ".join(text), limit=limit).run()
        if picked is not None:
            click.echo(picked.resume_command())


def _session_columns(rows: Sequence[Mapping[str, Any]], fmt: str) -> list[Any]:
    from cxsync.agent import render

    if fmt != "table":
        return [render.Column(h, (lambda k: lambda r: "" if r.get(k) is None else str(r[k]))(k))
                for h, k in (("session", "session"), ("last", "last_at"), ("messages", "messages"),
                             ("machine", "machine"), ("project", "project"), ("title", "label"))]
    width = render.terminal_width()

    def sid(r: Mapping[str, Any]) -> str:
        return ("↳ " if r.get("parent_session") or r.get("agent_id") else "") + str(r["session"])[:8]

    def msgs(r: Mapping[str, Any]) -> str:
        return f"{r['messages']}" + (f"+{r['subagents']}" if r.get("subagents") else "")

    def fit(header: str, cell: Callable[[Mapping[str, Any]], str], cap: int) -> int:
        return min(cap, max([len(header)] + [len(cell(r)) for r in rows]))

    def last(r: Mapping[str, Any]) -> str:
        return render.when(r.get("last_at"), short=True)

    def machine(r: Mapping[str, Any]) -> str:
        return render.one_line(str(r.get("machine") or ""), 12) if r.get("remote") else ""

    tail = max(12, width // 5)

    def project(r: Mapping[str, Any]) -> str:
        return render.path_tail(r.get("project"), tail)

    cols = [render.Column("session", sid, style="cyan", width=fit("session", sid, 10)),
            render.Column("last", last, style="dim", width=fit("last", last, 16)),
            render.Column("msgs", msgs, justify="right", width=fit("msgs", msgs, 10))]
    if any(r.get("remote") for r in rows):
        cols.append(render.Column("machine", machine, style="magenta", width=fit("machine", machine, 12)))
    cols.append(render.Column("project", project, style="blue", width=fit("project", project, tail)))
    used = sum((c.width or 0) + 2 for c in cols)  # each column is padded by one space on either side
    cols.append(render.Column("title / first prompt", lambda r: render.one_line(r.get("label") or ""),
                              width=max(20, width - used)))
    return cols


__all__ = ["register", "open_for_reading"]
