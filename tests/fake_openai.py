"""A real OpenAI-compatible chat completions server on a loopback port, scripted per request.

It streams exactly as OpenAI does (SSE `data:` chunks, a usage chunk with no
choices, `[DONE]`), so the real SDK, HTTP stack and SSE parsing are all
exercised. Each request's `messages` are checked with the transcript rules
(openai_rules.py) and a broken history is answered 400, as OpenAI would.

    async with serving() as fake:
        fake.script = [
            tool_reply(("call_1", "get_weather", '{"city": "Paris"}')),  # the first request
            text_reply("Sunny."),  # the second
        ]

With `context_limit` it refuses a request longer than that (in its own token
count) with OpenAI's 400 `context_length_exceeded`; requests that do not stream
(the compaction's summary calls) are answered whole and kept apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from helpers import eventually
from openai_rules import check_transcript
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


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


def text_reply(text: str, usage: tuple[int, int] = (10, 3)) -> list[dict[str, Any]]:
    """A streamed answer with no tool call: the text in two pieces."""
    half = len(text) // 2
    return [
        chunk({"role": "assistant", "content": "", "refusal": None}),
        chunk({"content": text[:half]}),
        chunk({"content": text[half:]}),
        chunk({}, finish_reason="stop"),
        usage_chunk(*usage),
    ]


def tool_reply(
    *calls: tuple[str, str, str], usage: tuple[int, int] = (20, 5)
) -> list[dict[str, Any]]:
    """A streamed step that calls `(id, name, arguments)` each, arguments in two fragments."""
    out = [chunk({"role": "assistant", "content": None, "refusal": None})]
    for index, (call_id, name, arguments) in enumerate(calls):
        half = len(arguments) // 2
        out.append(tool_fragment(index, "", id=call_id, name=name))
        out.append(tool_fragment(index, arguments[:half]))
        out.append(tool_fragment(index, arguments[half:]))
    return [*out, chunk({}, finish_reason="tool_calls"), usage_chunk(*usage)]


TEXT_REPLY = [
    chunk({"role": "assistant", "content": "", "refusal": None}),
    chunk({"content": "The weather"}),
    chunk({"content": " in Paris"}),
    chunk({"content": " is sunny."}),
    chunk({}, finish_reason="stop"),
    usage_chunk(31, 7),
]


@dataclass
class FakeServer:
    """What the server answers next, and every request body it received."""

    port: int = 0
    chunks: list[dict[str, Any]] = field(default_factory=lambda: list(TEXT_REPLY))
    script: list[list[dict[str, Any]]] = field(default_factory=list)  # per request, then chunks
    status: int = 200
    drop_after: int | None = None  # abort the response after this many chunks
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    refused: list[list[str]] = field(default_factory=list)  # transcript problems answered 400
    # A context window in the fake's own tokens (`fake_tokens`): a longer request is
    # answered 400 `context_length_exceeded`, as OpenAI does, and each streamed answer's
    # usage counts the request's prompt so.
    context_limit: int | None = None
    too_long: list[int] = field(default_factory=list)  # the token counts refused so
    # Per request, the chunks to stream (instead of `script`/`chunks`), given the body.
    respond: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None
    # Requests with `stream` false (the compaction's summary calls), answered `summary`.
    summary_requests: list[dict[str, Any]] = field(default_factory=list)
    summary: str = "The user and the assistant talked about the weather."

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        problems = check_transcript(body.get("messages", [])) + _check_tools(body)
        if problems:
            self.refused.append(problems)
            return _error(400, "; ".join(problems), "invalid_request_error")
        tokens = fake_tokens(body.get("messages", []))
        if self.context_limit is not None and tokens > self.context_limit:
            self.too_long.append(tokens)
            return _too_long(self.context_limit, tokens)
        if self.status != 200:
            return _error(self.status, f"fake failure {self.status}", "test")
        if not body.get("stream"):
            self.summary_requests.append(body)
            return JSONResponse(_completion(self.summary, tokens))
        if self.respond is not None:
            chunks = self.respond(body)
        else:
            chunks = self.script.pop(0) if self.script else self.chunks
        if self.context_limit is not None:
            chunks = [_counted(c, tokens) for c in chunks]

        async def sse() -> AsyncIterator[str]:
            for i, data in enumerate(chunks):
                if i == self.drop_after:
                    raise ConnectionAbortedError("fake server drops the stream")
                yield f"data: {json.dumps(data)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")


def _error(status: int, message: str, kind: str) -> JSONResponse:
    error = {"message": message, "type": kind, "param": None, "code": None}
    # retry-after-ms keeps the SDK's one retry of a 5xx fast.
    return JSONResponse({"error": error}, status_code=status, headers={"retry-after-ms": "10"})


def fake_tokens(messages: list[Any]) -> int:
    """The fake's own token count: 4 characters of content a token, 3 more per message."""
    total = 3
    for message in messages:
        if isinstance(message, dict):
            total += 3 + len(json.dumps(message.get("content") or "")) // 4
            total += len(json.dumps(message.get("tool_calls") or "")) // 4
    return total


def _too_long(limit: int, tokens: int) -> JSONResponse:
    message = (
        f"This model's maximum context length is {limit} tokens. However, your messages "
        f"resulted in {tokens} tokens. Please reduce the length of the messages."
    )
    error = {
        "message": message,
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
    return JSONResponse({"error": error}, status_code=400)


def _counted(chunk: dict[str, Any], tokens: int) -> dict[str, Any]:
    """A usage chunk with the request's prompt tokens as the fake counts them."""
    if not chunk.get("usage"):
        return chunk
    usage = chunk["usage"] | {"prompt_tokens": tokens}
    usage["total_tokens"] = tokens + usage["completion_tokens"]
    return chunk | {"usage": usage}


def _completion(text: str, prompt_tokens: int) -> dict[str, Any]:
    """A whole (not streamed) `chat.completion`."""
    message = {"role": "assistant", "content": text, "refusal": None}
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "test-model",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 20,
            "total_tokens": prompt_tokens + 20,
        },
    }


def _check_tools(body: dict[str, Any]) -> list[str]:
    if "tools" not in body:
        return []
    tools = body["tools"]
    if not isinstance(tools, list) or not tools:
        return ["tools: must be a non-empty list when present"]
    problems = []
    for i, tool in enumerate(tools):
        function = tool.get("function") or {}
        if tool.get("type") != "function" or not function.get("name"):
            problems.append(f"tools[{i}]: needs type 'function' and a function name")
        if function.get("parameters", {}).get("type") != "object":
            problems.append(f"tools[{i}]: parameters must be a JSON schema of an object")
    return problems


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[FakeServer]:
    """A fake server on a free loopback port, stopped on exit."""
    state = FakeServer()
    app = Starlette(routes=[Route("/v1/chat/completions", state.completions, methods=["POST"])])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    def started() -> bool:
        if task.done():
            task.result()  # surface a startup failure
        return server.started

    await eventually(started, timeout=5, what="the fake OpenAI server to start")
    state.port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 5)
