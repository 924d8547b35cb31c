"""`cxsync mcp` as Claude Code uses it: the official SDK's client starts it as a subprocess and calls every tool
over the real protocol (stdio, JSON-RPC), against a cache built from the real transcripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable

import anyio
import jsonschema
import pytest

TOOLS = {"search", "recall", "list_sessions", "get_session", "status"}
LONG_SESSION = "ae4a77f8-aedd-4bc1-888f-c94edc91af04"  # 466 messages with its subagents' share


def cx(home: Path, *args: str) -> Any:
    r = subprocess.run([sys.executable, "-m", "cxsync.agent", *args], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "CXSYNC_HOME": str(home)})
    assert r.returncode in ((0, 3) if args[0] == "status" else (0,)), r.stderr  # status: 3 = agent not running
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import REAL_FIXTURES

    if not REAL_FIXTURES.is_dir():
        pytest.skip(f"real transcripts not present at {REAL_FIXTURES}")
    h = tmp_path_factory.mktemp("cxhome")
    assert cx(h, "import", "--root", str(REAL_FIXTURES), "--json")["messages"] > 900
    return h


def with_client(home: Path, body: Callable[[Any], Awaitable[None]]) -> None:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=sys.executable, args=["-m", "cxsync.agent", "mcp"],
                                   env={**os.environ, "CXSYNC_HOME": str(home)})

    async def main() -> None:
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                assert init.server_info.name == "cxsync"
                await body(session)

    anyio.run(main)


def payload(result: Any) -> Any:
    assert not result.is_error, result.content
    text = result.content[0].text
    try:
        return json.loads(text)
    except ValueError:
        return text


def test_every_tool_is_listed_with_a_valid_schema_and_marked_read_only(home: Path) -> None:
    async def body(s: Any) -> None:
        tools = {t.name: t for t in (await s.list_tools()).tools}
        assert set(tools) == TOOLS
        for t in tools.values():
            jsonschema.Draft202012Validator.check_schema(t.input_schema)
            assert t.input_schema["type"] == "object"
            assert t.description
            assert t.annotations.read_only_hint is True and t.annotations.destructive_hint is False
        search = tools["search"].input_schema
        assert search["required"] == ["query"]
        assert search["properties"]["limit"]["maximum"] == 100
        assert tools["get_session"].input_schema["required"] == ["session"]

    with_client(home, body)


def test_every_tool_answers_over_the_protocol_as_the_cli_does(home: Path) -> None:
    cache_db = home / "data" / "cache.db"
    before = cache_db.read_bytes()
    got: dict[str, Any] = {}

    async def body(s: Any) -> None:
        tools = {t.name: t.input_schema for t in (await s.list_tools()).tools}

        async def call(name: str, args: dict[str, Any]) -> Any:
            jsonschema.validate(args, tools[name])  # what we send is what the schema promises to accept
            return payload(await s.call_tool(name, args))

        got["search"] = (await call("search", {"query": "phoenix server", "limit": 20}))["hits"]
        got["search_role"] = (await call("search", {"query": "phoenix", "role": "user", "project": "spotter"}))["hits"]
        got["recall"] = await call("recall", {"topic": "mix phx.server does not start", "budget": 800})
        got["recent"] = await call("recall", {"project": "spotter", "budget": 600})
        got["sessions"] = (await call("list_sessions", {"limit": 200}))["sessions"]
        pages, offset = [], 0
        while offset is not None:
            page = await call("get_session", {"session": LONG_SESSION[:8], "offset": offset, "limit": 100,
                                              "include_subagents": True})
            pages.append(page)
            offset = page["next_offset"]
        got["pages"] = pages
        got["status"] = await call("status", {})

    with_client(home, body)

    cli_hits = cx(home, "query", "phoenix", "server", "--limit", "20", "--json")
    assert [h["key"] for h in got["search"]] == [h["key"] for h in cli_hits]
    assert got["search_role"] and {h["role"] for h in got["search_role"]} == {"user"}
    assert all("spotter" in h["project"] for h in got["search_role"])

    assert "mix phx.server doesnt seem to start" in got["recall"]
    assert got["recall"] == cx(home, "recall", "mix phx.server does not start", "--budget", "800",
                               "--json")["markdown"]
    assert got["recent"].startswith("## Recent work on spotter") and "start phoenix in background" in got["recent"]

    assert got["sessions"] == cx(home, "sessions", "--json")

    shown = cx(home, "show", LONG_SESSION, "--agents", "--json")["messages"]
    paged = [m for p in got["pages"] for m in p["messages"]]
    assert len(got["pages"]) == -(-len(shown) // 100) > 1
    assert [m["key"] for m in paged] == [m["key"] for m in shown]
    assert all(p["total"] == len(shown) for p in got["pages"]) and got["pages"][-1]["next_offset"] is None
    long_one = max(shown, key=lambda m: len(m["content"]))
    sent = next(m for m in paged if m["key"] == long_one["key"])
    assert len(long_one["content"]) > 4000 and sent["truncated"] and sent["chars"] == len(long_one["content"])
    assert sent["content"] == long_one["content"][:4000]

    assert got["status"]["messages"] == cx(home, "status", "--json")["messages"] > 900
    assert cache_db.read_bytes() == before  # read-only: the cache is exactly as it was


def test_bad_input_and_failed_queries_are_tool_errors_and_the_server_keeps_serving(home: Path) -> None:
    errors: dict[str, str] = {}

    async def body(s: Any) -> None:
        cases = {
            "missing_query": ("search", {}),
            "limit_too_big": ("search", {"query": "x", "limit": 1000}),
            "wrong_type": ("get_session", {"session": "ae4a77f8", "offset": "ten"}),
            "bad_role": ("search", {"query": "x", "role": "robot"}),
            "no_such_session": ("get_session", {"session": "ffffffff"}),
            "bad_fts": ("search", {"query": "AND OR (", "fts": True}),
            "bad_since": ("search", {"query": "phoenix", "since": "yesterday-ish"}),
            "nothing_to_recall": ("recall", {}),
            "unknown_tool": ("delete_everything", {}),
        }
        for name, (tool, args) in cases.items():
            r = await s.call_tool(tool, args)
            assert r.is_error, (name, r.content)
            errors[name] = r.content[0].text
        assert payload(await s.call_tool("status", {}))["messages"] > 900  # still serving

    with_client(home, body)
    assert "query" in errors["missing_query"] and "100" in errors["limit_too_big"]
    assert "offset" in errors["wrong_type"] and "role" in errors["bad_role"]
    assert "no session 'ffffffff'" in errors["no_such_session"] and "cxsync sessions" in errors["no_such_session"]
    assert "bad full-text query" in errors["bad_fts"]
    assert "--since" in errors["bad_since"]
    assert "give a topic" in errors["nothing_to_recall"]


def test_without_a_cache_the_tools_say_how_to_make_one(tmp_path: Path) -> None:
    out: dict[str, Any] = {}

    async def body(s: Any) -> None:
        out["search"] = await s.call_tool("search", {"query": "anything"})
        out["status"] = await s.call_tool("status", {})

    with_client(tmp_path / "empty-home", body)
    assert out["search"].is_error and "cxsync import" in out["search"].content[0].text
    assert payload(out["status"])["messages"] == 0


def test_the_server_sees_what_is_captured_while_it_runs(claude_home: Path, tmp_path: Path) -> None:
    """Each call reads the cache afresh: a session captured while the server is up is found by the next call."""
    from tests import transcripts as T

    home = tmp_path / "live-home"
    s1, s2 = "71000000-0000-4000-8000-000000000001", "71000000-0000-4000-8000-000000000002"
    T.write(T.session_file(claude_home, s1), [T.user(s1, "first session about gyroscopes")])
    cx(home, "import", "--root", str(claude_home), "--json")
    found: list[list[str]] = []

    async def body(s: Any) -> None:
        found.append([h["session"] for h in payload(await s.call_tool("search", {"query": "magnetometer"}))["hits"]])
        T.write(T.session_file(claude_home, s2), [T.user(s2, "second session about the magnetometer")])
        await anyio.to_thread.run_sync(lambda: cx(home, "import", "--root", str(claude_home), "--json"))
        found.append([h["session"] for h in payload(await s.call_tool("search", {"query": "magnetometer"}))["hits"]])

    with_client(home, body)
    assert found == [[], [s2]]
