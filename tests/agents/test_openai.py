"""The openai agent against a real OpenAI-compatible server on a loopback port.

The fake server speaks the chat completions streaming protocol exactly as
OpenAI does (SSE `data:` chunks, a usage chunk with no choices, `[DONE]`), so
the real SDK, HTTP stack and SSE parsing are all exercised.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from turnstream.agents.base import AgentEvent, RunContext
from turnstream.agents.openai import OpenAIAgentError, openai_agent
from turnstream.config import Settings
from turnstream.events import Event, EventType

HISTORY = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "What's the weather in Paris and Rome?"},
]


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    """One `chat.completion.chunk` exactly as OpenAI streams it."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "test-model",
        "system_fingerprint": "fp_test",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        "usage": None,
    }


def usage_chunk(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "test-model",
        "system_fingerprint": "fp_test",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def tool_fragment(index: int, arguments: str, id: str = "", name: str = "") -> dict[str, Any]:
    fragment: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if id:
        fragment.update(id=id, type="function")
        fragment["function"]["name"] = name
    return chunk({"tool_calls": [fragment]})


TEXT_REPLY = [
    chunk({"role": "assistant", "content": "", "refusal": None}),
    chunk({"content": "The weather"}),
    chunk({"content": " in Paris"}),
    chunk({"content": " is sunny."}),
    chunk({}, finish_reason="stop"),
    usage_chunk(31, 7),
]

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


@dataclass
class FakeServer:
    """What the server answers next, and every request body it received."""

    port: int = 0
    chunks: list[dict[str, Any]] = field(default_factory=lambda: list(TEXT_REPLY))
    status: int = 200
    drop_after: int | None = None  # abort the response after this many chunks
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def completions(self, request: Request) -> Response:
        self.requests.append(await request.json())
        self.headers.append(dict(request.headers))
        if self.status != 200:
            error = {"message": f"fake failure {self.status}", "type": "test", "code": None}
            # retry-after-ms keeps the SDK's one retry of a 5xx fast.
            return JSONResponse(
                {"error": error}, status_code=self.status, headers={"retry-after-ms": "10"}
            )

        async def sse() -> AsyncIterator[str]:
            for i, data in enumerate(self.chunks):
                if i == self.drop_after:
                    raise ConnectionAbortedError("fake server drops the stream")
                yield f"data: {json.dumps(data)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    state = FakeServer()
    app = Starlette(routes=[Route("/v1/chat/completions", state.completions, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(5):
        while not server.started:
            if task.done():
                task.result()  # surface a startup failure
            await asyncio.sleep(0.01)
    state.port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 5)


def make_ctx(settings: Settings, history: list[dict[str, Any]] = HISTORY) -> RunContext:
    return RunContext(
        conversation_id="conv_1",
        user_id="user_1",
        session_id="sess_1",
        message_id="msg_1",
        message=history[-1]["content"],
        history=history,
        settings=settings,
        cancelled=lambda: False,
    )


def settings_for(base_url: str) -> Settings:
    return Settings(openai_base_url=base_url, openai_api_key="test", openai_model="test-model")


async def run(ctx: RunContext) -> list[AgentEvent]:
    async with asyncio.timeout(10):  # a failure must raise, never hang
        return [event async for event in openai_agent(ctx)]


def of_type(events: list[AgentEvent], kind: EventType) -> list[Event]:
    return [e for e in events if isinstance(e, Event) and e.type == kind]


async def test_text_reply_streams_deltas_and_usage(fake: FakeServer) -> None:
    events = await run(make_ctx(settings_for(fake.base_url)))

    deltas = of_type(events, EventType.DELTA)
    assert [d.data["text"] for d in deltas] == ["The weather", " in Paris", " is sunny."]
    assert "".join(d.data["text"] for d in deltas) == "The weather in Paris is sunny."
    assert of_type(events, EventType.USAGE) == [events[-1]]
    assert events[-1].data == {"prompt_tokens": 31, "completion_tokens": 7}
    assert of_type(events, EventType.TOOL_CALL) == []


async def test_streamed_tool_calls_are_assembled(fake: FakeServer) -> None:
    fake.chunks = list(TOOL_REPLY)

    events = await run(make_ctx(settings_for(fake.base_url)))

    calls = of_type(events, EventType.TOOL_CALL)
    assert [c.data for c in calls] == [
        {"id": "call_paris", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"id": "call_rome", "name": "get_weather", "arguments": '{"city": "Rome"}'},
    ]
    assert json.loads(calls[0].data["arguments"]) == {"city": "Paris"}
    assert of_type(events, EventType.DELTA) == []
    assert events[-1].data == {"prompt_tokens": 40, "completion_tokens": 18}


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
    with socket.socket() as sock:  # a port that was just free and now has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

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
