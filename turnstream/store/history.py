"""Stored messages → the OpenAI chat messages an agent is given (SPEC §8)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def to_openai(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Convert stored messages, merging consecutive assistant messages into one.

    Merged contents are joined by a newline and their tool calls concatenated;
    a tool call without an id or a function name is skipped, and so is an
    assistant message left with nothing in it, since providers reject the whole
    request for one malformed message.
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        converted = _convert(message)
        if converted["role"] == "assistant" and not any(
            converted.get(field) for field in ("content", "tool_calls", "refusal", "function_call")
        ):
            continue  # an empty reply (stopped before a word): providers reject it
        previous = out[-1] if out else None
        if converted["role"] == "assistant" and previous and previous["role"] == "assistant":
            _merge_into(previous, converted)
        else:
            out.append(converted)
    return out


def _convert(message: dict[str, Any]) -> dict[str, Any]:
    converted: dict[str, Any] = {"role": message["role"], "content": message.get("content")}
    for field in ("name", "tool_call_id", "refusal", "function_call"):
        if message.get(field) is not None:
            converted[field] = message[field]
    calls = [_tool_call(c) for c in message.get("tool_calls") or []]
    calls = [c for c in calls if c is not None]
    if calls:
        converted["tool_calls"] = calls
    return converted


def _tool_call(call: dict[str, Any]) -> dict[str, Any] | None:
    function = call.get("function") or {}
    if not call.get("id") or not function.get("name"):
        return None
    return {
        "id": call["id"],
        "type": "function",
        "function": {"name": function["name"], "arguments": function.get("arguments") or ""},
    }


def _merge_into(target: dict[str, Any], extra: dict[str, Any]) -> None:
    parts = [p for p in (target.get("content"), extra.get("content")) if p]
    target["content"] = "\n".join(parts) if parts else None
    calls = target.get("tool_calls", []) + extra.get("tool_calls", [])
    if calls:
        target["tool_calls"] = calls
