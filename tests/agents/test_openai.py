"""The openai agent against a real OpenAI-compatible server on a loopback port.

The fake server (tests/fake_openai.py) speaks the chat completions streaming
protocol exactly as OpenAI does (SSE `data:` chunks, a usage chunk with no
choices, `[DONE]`), so the real SDK, HTTP stack and SSE parsing are all
exercised; it checks every request's messages as OpenAI would. The tool loop's
own behaviours are in test_openai_tool_loop.py.
"""

from __future__ import annotations

import asyncio

import pytest
from fake_openai import (
    FakeServer,
    chunk,
    text_reply,
    tool_fragment,
    usage_chunk,
)
from helpers import free_port

from turnstream.agents.base import AgentEvent
from turnstream.agents.openai import OpenAIAgentError, openai_agent
from turnstream.config import Settings
from turnstream.events import EventType

from .support import HISTORY, TOOLS, make_ctx, of_type, run, settings_for

TOOL_REPLY = [
    chunk({"role": "assistant", "content": None, "refusal": None}),
    tool_fragment(0, "", id="call_paris", name="get_weather"),
    tool_fragment(0, '{"ci'),
    tool_fragment(0, 'ty": "Pa'),
    tool_fragment(0, 'ris"}'),
    tool_fragment(1, "", id="call_rome", name="get_weather"),
    tool_fragment(1, '{"city": '),
    tool_fragment(1, '"Rome"}'),
    chunk({}, finish_reason="tool_calls"),
    usage_chunk(40, 18),
]


async def test_text_reply_streams_deltas_and_usage(fake: FakeServer) -> None:
    events = await run(make_ctx(settings_for(fake.base_url)))

    deltas = of_type(events, EventType.DELTA)
    assert [d.data["text"] for d in deltas] == ["The weather", " in Paris", " is sunny."]
    assert "".join(d.data["text"] for d in deltas) == "The weather in Paris is sunny."
    assert of_type(events, EventType.USAGE) == [events[-1]]
    assert events[-1].data == {"prompt_tokens": 31, "completion_tokens": 7}
    assert of_type(events, EventType.TOOL_CALL) == []


async def test_streamed_tool_calls_are_assembled_run_and_answered(fake: FakeServer) -> None:
    fake.script = [list(TOOL_REPLY), text_reply("Sunny in both.", usage=(60, 4))]

    events = await run(make_ctx(settings_for(fake.base_url, tools=TOOLS)))

    calls = of_type(events, EventType.TOOL_CALL)
    assert [c.data for c in calls] == [
        {"id": "call_paris", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"id": "call_rome", "name": "get_weather", "arguments": '{"city": "Rome"}'},
    ]
    results = {r.data["id"]: r.data for r in of_type(events, EventType.TOOL_RESULT)}
    assert results == {
        "call_paris": {"id": "call_paris", "content": "sunny, 21 C in Paris", "isError": False},
        "call_rome": {"id": "call_rome", "content": "sunny, 21 C in Rome", "isError": False},
    }
    assert "".join(d.data["text"] for d in of_type(events, EventType.DELTA)) == "Sunny in both."
    usages = [u.data for u in of_type(events, EventType.USAGE)]
    assert usages == [
        {"prompt_tokens": 40, "completion_tokens": 18},
        {"prompt_tokens": 60, "completion_tokens": 4},
    ]


async def test_request_carries_history_and_model(fake: FakeServer) -> None:
    await run(make_ctx(settings_for(fake.base_url)))

    assert len(fake.requests) == 1
    body = fake.requests[0]
    assert body["model"] == "test-model"
    assert body["messages"] == HISTORY
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert fake.headers[0]["authorization"] == "Bearer test"


async def test_reasoning_fields_become_reasoning_events(fake: FakeServer) -> None:
    fake.chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "The user greets; "}),
        chunk({"reasoning": "answer briefly."}),
        chunk({"content": "Hi!"}),
        chunk({"refusal": " (no more)"}),
        chunk({}, finish_reason="stop"),
        usage_chunk(5, 3),
    ]

    events = await run(make_ctx(settings_for(fake.base_url)))

    thoughts = of_type(events, EventType.REASONING)
    assert [t.data["text"] for t in thoughts] == ["The user greets; ", "answer briefly."]
    assert [d.data["text"] for d in of_type(events, EventType.DELTA)] == ["Hi!", " (no more)"]


async def test_unauthorized_raises_agent_error(fake: FakeServer) -> None:
    fake.status = 401

    with pytest.raises(OpenAIAgentError, match="TURNSTREAM_OPENAI_API_KEY") as info:
        await run(make_ctx(settings_for(fake.base_url)))

    assert "401" in str(info.value)
    assert "fake failure 401" in str(info.value)
    assert len(fake.requests) == 1  # a 401 is not retried


async def test_server_error_raises_agent_error_after_one_retry(fake: FakeServer) -> None:
    fake.status = 500

    with pytest.raises(OpenAIAgentError, match="HTTP 500") as info:
        await run(make_ctx(settings_for(fake.base_url)))

    assert "TURNSTREAM_OPENAI_BASE_URL" in str(info.value)
    assert len(fake.requests) == 2  # max_retries=1


async def test_unreachable_base_url_raises_agent_error() -> None:
    port = free_port()  # just free, and nothing listens on it

    with pytest.raises(OpenAIAgentError, match="connection to the chat completions") as info:
        await run(make_ctx(settings_for(f"http://127.0.0.1:{port}/v1")))

    assert f"127.0.0.1:{port}" in str(info.value)
    assert "TURNSTREAM_OPENAI_BASE_URL" in str(info.value)


async def test_missing_key_without_base_url_raises_agent_error() -> None:
    settings = Settings(openai_base_url=None, openai_api_key=None, openai_model="test-model")

    with pytest.raises(OpenAIAgentError, match="TURNSTREAM_OPENAI_API_KEY"):
        await run(make_ctx(settings))


async def test_local_server_needs_no_key(fake: FakeServer) -> None:
    settings = Settings(openai_base_url=fake.base_url, openai_api_key=None, openai_model="m")

    events = await run(make_ctx(settings))

    assert of_type(events, EventType.DELTA)
    assert fake.requests[0]["model"] == "m"


async def test_error_mid_stream_raises_agent_error(fake: FakeServer) -> None:
    fake.chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Partial"}),
        {"error": {"message": "upstream provider crashed", "type": "server_error"}},
    ]

    seen: list[AgentEvent] = []
    with pytest.raises(OpenAIAgentError, match="upstream provider crashed"):
        async with asyncio.timeout(10):
            async for event in openai_agent(make_ctx(settings_for(fake.base_url))):
                seen.append(event)

    assert [d.data["text"] for d in of_type(seen, EventType.DELTA)] == ["Partial"]


async def test_dropped_stream_raises_agent_error(fake: FakeServer) -> None:
    fake.drop_after = 2

    seen: list[AgentEvent] = []
    with pytest.raises(OpenAIAgentError, match="TURNSTREAM_OPENAI_BASE_URL"):
        async with asyncio.timeout(10):
            async for event in openai_agent(make_ctx(settings_for(fake.base_url))):
                seen.append(event)

    assert [d.data["text"] for d in of_type(seen, EventType.DELTA)] == ["The weather"]
