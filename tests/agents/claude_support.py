"""Claude Code played for the SDK: a scripted transport and the stdout lines Claude Code
writes (stream events, assistant and user messages, a result), which the SDK parses into
its message types as usual."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from claude_agent_sdk import Transport

Line = dict[str, Any]
SESSION = "3f2a7c1e-0000-4000-8000-000000000001"


class ScriptedClaude(Transport):
    """Plays Claude Code for one query: answers the user message with `script`."""

    def __init__(self, script: list[Line], *, stall: bool = False) -> None:
        self.script = script
        self.stall = stall  # after the script, keep the stream open (a model still writing)
        self.prompts: list[Line] = []  # the user messages the SDK wrote
        self.closed = False
        self._out: asyncio.Queue[Line | None] = asyncio.Queue()

    async def connect(self) -> None:
        pass

    async def write(self, data: str) -> None:
        message = json.loads(data)
        if message["type"] == "control_request":
            response = {"subtype": "success", "request_id": message["request_id"], "response": {}}
            self._out.put_nowait({"type": "control_response", "response": response})
        elif message["type"] == "user":
            self.prompts.append(message)
            for line in self.script:
                self._out.put_nowait(line)

    async def read_messages(self) -> AsyncIterator[Line]:
        while (line := await self._out.get()) is not None:
            yield line

    async def end_input(self) -> None:
        if not self.stall:
            self._out.put_nowait(None)  # like the program: exit once stdin is closed

    async def close(self) -> None:
        self.closed = True
        self._out.put_nowait(None)

    def is_ready(self) -> bool:
        return not self.closed


# Claude Code's stdout lines -----------------------------------------------------


def streamed(message_id: str, *blocks: tuple[str, list[str]]) -> list[Line]:
    """The stream events of one model message: blocks of ("text" | "thinking", pieces)."""
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": message_id, "usage": {"input_tokens": 3}}}
    ]
    for index, (kind, pieces) in enumerate(blocks):
        delta_type, field = ("text_delta", "text") if kind == "text" else ("thinking_delta", kind)
        events.append(
            {"type": "content_block_start", "index": index, "content_block": {"type": kind}}
        )
        for piece in pieces:
            delta = {"type": delta_type, field: piece}
            events.append({"type": "content_block_delta", "index": index, "delta": delta})
        events.append({"type": "content_block_stop", "index": index})
    events += [
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}},
        {"type": "message_stop"},
    ]
    return [
        {"type": "stream_event", "uuid": f"u{i}", "session_id": SESSION, "event": e}
        for i, e in enumerate(events)
    ]


def assistant(message_id: str, *content: dict[str, Any], parent: str | None = None) -> Line:
    message = {
        "id": message_id,
        "model": "claude-sonnet",
        "role": "assistant",
        "content": list(content),
    }
    return {
        "type": "assistant",
        "message": message,
        "parent_tool_use_id": parent,
        "session_id": SESSION,
    }


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(call_id: str, name: str, **arguments: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def tool_result(call_id: str, content: Any, *, is_error: bool = False) -> Line:
    block = {
        "type": "tool_result",
        "tool_use_id": call_id,
        "content": content,
        "is_error": is_error,
    }
    return {
        "type": "user",
        "message": {"role": "user", "content": [block]},
        "parent_tool_use_id": None,
    }


def result(*, subtype: str = "success", is_error: bool = False, text: str | None = None) -> Line:
    usage = {
        "input_tokens": 40,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 2000,
        "output_tokens": 25,
    }
    return {
        "type": "result",
        "subtype": subtype,
        "duration_ms": 1200,
        "duration_api_ms": 1100,
        "is_error": is_error,
        "num_turns": 2,
        "session_id": SESSION,
        "usage": usage,
        "result": text,
    }


def weather_turn(call_id: str, city: str) -> list[Line]:
    """Think, say a word, call the weather tool, then answer with its result."""
    return [
        *streamed(
            "msg_1",
            ("thinking", ["The user wants ", "the weather."]),
            ("text", ["Let me ", "check."]),
        ),
        assistant(
            "msg_1",
            {"type": "thinking", "thinking": "The user wants the weather.", "signature": "s"},
        ),
        assistant("msg_1", text("Let me check.")),
        assistant("msg_1", tool_use(call_id, "WebSearch", query=f"weather {city}")),
        tool_result(call_id, [{"type": "text", "text": f"sunny in {city}"}]),
        *streamed("msg_2", ("text", ["It is ", f"sunny in {city}."])),
        assistant("msg_2", text(f"It is sunny in {city}.")),
        result(text=f"It is sunny in {city}."),
    ]
