"""MCP servers' tools in the tool loop: named `mcp__SERVER__TOOL`, called over stdio and
Streamable HTTP, through the demo agent (the API) and the openai agent (the fake server).

The servers start once for the module: its tests share one event loop, and a
process's connections belong to its loop.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fake_openai import serving, text_reply, tool_reply
from mcp_support import stdio, write_config
from sse import parse_sse

from turnstream.agents.base import RunContext
from turnstream.agents.calls import ToolCall, ToolResult, call_tool
from turnstream.agents.openai import openai_agent
from turnstream.agents.tools import offered_tools
from turnstream.config import Settings
from turnstream.events import Event, EventType

pytestmark = pytest.mark.asyncio(loop_scope="module")


def mcp__test__echo(text: str) -> str:
    """A configured tool whose name an MCP tool would have."""
    return f"configured: {text}"


CLASHING = [mcp__test__echo]


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, http_url: str) -> Path:
    servers = {"test": stdio(), "web": {"type": "http", "url": http_url}}
    return write_config(tmp_path_factory.mktemp("mcp") / "mcp.json", servers)


def settings_for(config: Path, **overrides: Any) -> Settings:
    return Settings(mcp_config=config, tool_timeout_seconds=0.5, **overrides)


def context(settings: Settings) -> RunContext:
    return RunContext(
        conversation_id="c1",
        user_id="alice",
        session_id="s1",
        message_id="m1",
        message="hi",
        history=[{"role": "user", "content": "hi"}],
        settings=settings,
        cancelled=lambda: False,
    )


async def call(config: Path, name: str, arguments: dict[str, Any]) -> ToolResult:
    settings = settings_for(config)
    tools = await offered_tools(settings)
    tool_call = ToolCall("call_1", name, json.dumps(arguments))
    return await call_tool(context(settings), tools, tool_call)


async def test_each_servers_tools_join_under_names_that_carry_the_server(config: Path) -> None:
    tools = await offered_tools(settings_for(config, tools="basic"))

    mcp = {name for name in tools if name.startswith("mcp__")}
    expected = {"echo", "add", "sleep_forever", "die", "fail", "picture", "pid"}
    assert mcp == {f"mcp__{server}__{t}" for server in ("test", "web") for t in expected}
    assert "echo" in tools  # the built-in echo beside both servers' echo
    add = tools["mcp__web__add"]
    assert add.description == "Add two integers."
    assert add.parameters["properties"] == {
        "a": {"title": "A", "type": "integer"},
        "b": {"title": "B", "type": "integer"},
    }
    assert add.openai_schema()["function"]["name"] == "mcp__web__add"


async def test_a_configured_tool_keeps_its_name_and_the_mcp_tool_gets_a_suffix(
    config: Path,
) -> None:
    tools = await offered_tools(settings_for(config, tools=f"{__name__}:CLASHING"))

    assert tools["mcp__test__echo"].function is mcp__test__echo
    (renamed,) = [n for n in tools if n.startswith("mcp__test__echo_")]
    assert len(renamed) == len("mcp__test__echo_") + 8
    context_ = context(settings_for(config))
    result = await call_tool(context_, tools, ToolCall("c", renamed, '{"text": "hi"}'))
    assert result == ToolResult("hi")


@pytest.mark.parametrize("server", ["test", "web"])
async def test_calls_over_stdio_and_http(config: Path, server: str) -> None:
    assert await call(config, f"mcp__{server}__echo", {"text": "hi"}) == ToolResult("hi")
    assert await call(config, f"mcp__{server}__add", {"a": 2, "b": 3}) == ToolResult("5")


async def test_the_server_checks_the_arguments(config: Path) -> None:
    result = await call(config, "mcp__test__add", {"a": 2, "c": 3})

    assert result.is_error
    assert "b" in result.content and "Field required" in result.content


async def test_an_error_result_is_an_error_with_the_servers_text(config: Path) -> None:
    result = await call(config, "mcp__test__fail", {})

    assert result == ToolResult("mcp__test__fail failed: McpToolError: the disk is full", True)


async def test_an_image_becomes_a_note_beside_the_text(config: Path) -> None:
    result = await call(config, "mcp__web__picture", {})

    assert result == ToolResult("[image/png image: not shown]\na tiny picture")


@pytest.mark.parametrize("server", ["test", "web"])
async def test_a_call_that_never_answers_times_out_and_the_connection_stays(
    config: Path, server: str
) -> None:
    before = await call(config, f"mcp__{server}__pid", {})

    result = await call(config, f"mcp__{server}__sleep_forever", {})

    assert result.is_error
    assert f"MCP server {server!r} did not answer within 0.5 s" in result.content
    assert await call(config, f"mcp__{server}__pid", {}) == before  # the same process


async def test_a_server_that_dies_mid_call_gives_an_error_and_starts_again(config: Path) -> None:
    before = await call(config, "mcp__test__pid", {})

    result = await call(config, "mcp__test__die", {})

    assert result.is_error
    assert "MCP server 'test' went away during the call" in result.content
    after = await call(config, "mcp__test__pid", {})
    assert not after.is_error and after != before  # a new process


async def test_the_demo_agent_calls_an_mcp_tool_through_the_api(api, config: Path) -> None:
    message = '/tool mcp__test__echo {"text": "hi"}'
    async with api(mcp_config=config) as (http, headers, _):
        cid = (await http.post("/api/v1/conversations", headers=headers)).json()["id"]
        sent = await http.post(
            f"/api/v1/conversations/{cid}/message/", data={"content": message}, headers=headers
        )
        events = parse_sse(sent.text)
        (tool_call,) = [e.data for e in events if e.event == "tool_call"]
        (result,) = [e.data for e in events if e.event == "tool_result"]
        assert (tool_call["name"], json.loads(tool_call["arguments"])) == (
            "mcp__test__echo",
            {"text": "hi"},
        )
        assert (result["content"], result["isError"]) == ("hi", False)
        reply = "".join(e.data["text"] for e in events if e.event == "delta")
        assert reply == "The mcp__test__echo tool answered: hi"
        assert events[-1].data["status"] == "completed"


async def test_the_openai_agent_calls_an_mcp_tool(config: Path) -> None:
    async with serving() as fake:
        fake.script = [
            tool_reply(("call_1", "mcp__web__add", '{"a": 2, "b": 3}')),
            text_reply("2 + 3 = 5."),
        ]
        settings = settings_for(
            config, openai_base_url=fake.base_url, openai_api_key="test", openai_model="m"
        )

        events = [e async for e in openai_agent(context(settings))]

    assert fake.refused == []
    sent = {t["function"]["name"]: t["function"] for t in fake.requests[0]["tools"]}
    assert sent["mcp__web__add"]["parameters"]["required"] == ["a", "b"]
    results = [e.data for e in events if isinstance(e, Event) and e.type == EventType.TOOL_RESULT]
    assert results == [{"id": "call_1", "content": "5", "isError": False}]
    assert fake.requests[1]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": "5",
    }
