"""``cxsync mcp``: the cache as a read-only Model Context Protocol server over stdio (the official ``mcp`` SDK).

Tools: ``search``, ``recall``, ``list_sessions``, ``get_session`` (paged) and ``status``. Each call opens a short
read-only connection to the local cache, so the server answers offline and while the agent writes (WAL readers).
Arguments are validated by the SDK against the tools' JSON schemas (built from the signatures below); a bad
argument or a failed query comes back as a tool error with the reason, never as a crash of the server.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Callable, Literal, Optional, TypeVar

from pydantic import Field

from cxsync.agent.config import Config

T = TypeVar("T")

INSTRUCTIONS = (
    "cxsync's memory of the user's past Claude Code sessions, on every machine of theirs (and their team's), read "
    "from the local cache. Use `recall` with a topic before re-solving a problem that may have been solved before; "
    "`search` for exact words; `list_sessions` / `get_session` to read a past session page by page."
)
# Argument types at module level: with postponed annotations the SDK resolves them in this module's namespace.
Project = Annotated[Optional[str], Field(description="Only this project: its path, or its last path component.")]
MESSAGE_CHARS = 4000  # one message's text in a get_session page; the rest is counted, not sent


def build_server(cfg: Config) -> Any:
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import ToolAnnotations

    from cxsync.sync.errors import CxError

    server = MCPServer("cxsync", instructions=INSTRUCTIONS, log_level="WARNING")
    read_only = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                                open_world_hint=False)

    def reading(fn: Callable[..., T]) -> Callable[..., T]:
        """Run a tool on a fresh read-only cache; our errors become tool errors carrying title and hint."""
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            from cxsync.cache import open_cache

            try:
                with open_cache(cfg.paths.cache_db, readonly=True) as cache:
                    return fn(cache, *args, **kwargs)
            except CxError as exc:
                raise ToolError(exc.title + (f" ({exc.hint})" if exc.hint else "")) from None
            except ToolError:
                raise
            except Exception as exc:  # noqa: BLE001 - the model gets the reason; the server keeps serving
                raise ToolError(f"{fn.__name__} failed: {type(exc).__name__}: {exc}") from exc
        # The SDK builds the schema from the signature: hide the cache argument, and hand it resolved types
        # (postponed annotations are strings the SDK would look up in its own namespace).
        import inspect
        import typing

        hints = typing.get_type_hints(fn, include_extras=True)
        sig = inspect.signature(fn)
        params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in list(sig.parameters.values())[1:]]
        wrapper.__signature__ = sig.replace(  # type: ignore[attr-defined]
            parameters=params, return_annotation=hints.get("return", sig.return_annotation))
        wrapper.__annotations__ = {k: v for k, v in hints.items() if k != "cache"}
        return wrapper

    @server.tool(annotations=read_only)
    @reading
    def search(cache: Any,
               query: Annotated[str, Field(min_length=1, max_length=1000,
                                           description="Words to find (all must occur).")],
               limit: Annotated[int, Field(ge=1, le=100)] = 10,
               project: Project = None,
               session: Annotated[str | None, Field(
                   description="Only this session (id or unambiguous prefix).")] = None,
               role: Literal["user", "assistant", "tool", "system"] | None = None,
               since: Annotated[str | None, Field(
                   description="Newer than: 2h, 3d, 1w, today, yesterday, last week or an ISO date.")] = None,
               fts: Annotated[bool, Field(description="`query` is raw FTS5 syntax (AND, OR, NEAR, prefix*).")] = False,
               ) -> dict[str, Any]:
        """Full-text search of past sessions: ranked messages with session, project, role, time and a snippet
        (matches between ** **)."""
        # Exactly what `cxsync query` answers: the same role-weighted ranking, time words and snippets.
        from cxsync.agent.cli_query import plain_snippet, weighted_search
        from cxsync.cache.querytext import since_to_iso

        hits = weighted_search(cache, query, limit=limit, role=role, project=project, session=session,
                               since=since_to_iso(since) if since else None, fts=fts)
        return {"hits": [{**h.as_dict(), "snippet": plain_snippet(h.snippet)} for h in hits]}

    @server.tool(annotations=read_only)
    @reading
    def recall(cache: Any,
               topic: Annotated[str | None, Field(max_length=1000, description=(
                   "What to remember; leave out, with a project, for a summary of that project's recent work."))
               ] = None,
               project: Project = None,
               budget: Annotated[int, Field(ge=100, le=20000, description="Size of the answer in tokens.")] = 2000,
               ) -> str:
        """The best past material for a topic as one Markdown block: recorded decisions and fixes, and earlier
        prompts with the answer or fix that followed, each with its session, project, machine and date."""
        from cxsync.cache.recall import recall as recall_topic, recent_work

        me = cfg.identity.user
        if topic and topic.strip():
            return recall_topic(cache, topic, project=project, budget=budget, me=me).markdown
        if project:
            return recent_work(cache.conn, project, budget=budget, me=me).markdown
        raise ToolError("give a topic, or a project for a summary of its recent work")

    @server.tool(annotations=read_only)
    @reading
    def list_sessions(cache: Any,
                      project: Project = None,
                      limit: Annotated[int, Field(ge=1, le=200)] = 20,
                      include_subagents: bool = False) -> dict[str, Any]:
        """Captured sessions, newest first: id, project, label (title or first prompt), times, machine (remote:
        captured on another machine), message count."""
        from cxsync.agent.cli_query import with_labels

        rows = cache.sessions(limit=limit, project=project, include_subagents=include_subagents)
        return {"sessions": with_labels(cache, rows, cfg.identity.machine)}  # as `cxsync sessions` lists them

    @server.tool(annotations=read_only)
    @reading
    def get_session(cache: Any,
                    session: Annotated[str, Field(min_length=1, description="Session id or unambiguous prefix.")],
                    offset: Annotated[int, Field(ge=0, description="First message to return (0-based).")] = 0,
                    limit: Annotated[int, Field(ge=1, le=200)] = 50,
                    include_subagents: bool = False) -> dict[str, Any]:
        """One session's conversation in order, a page at a time; `next_offset` is null on the last page.
        Long messages are cut to a few thousand characters (their full length is given)."""
        from cxsync.cache.recall import session_page

        return session_page(cache, session, offset=offset, limit=limit, include_subagents=include_subagents,
                            max_chars=MESSAGE_CHARS)

    @server.tool(annotations=read_only)
    def status() -> dict[str, Any]:
        """The local agent and cache: state, message and session counts, outbox, last push and pull."""
        from cxsync.agent.status import collect

        try:
            return collect(cfg)
        except CxError as exc:
            raise ToolError(exc.title) from None

    return server


def serve(cfg: Config) -> None:
    build_server(cfg).run("stdio")
