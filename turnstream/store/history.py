"""Stored messages → the OpenAI chat messages an agent is given (SPEC §8).

Whatever was stored (a run cut short, rows written before tool results were
stored, messages written by hand), `to_openai` returns a transcript that the
OpenAI chat completions API accepts. Its rules (`tests/openai_rules.py` checks
them, and the property test in `tests/store/` holds this module to them):

1. Each message has a role OpenAI knows and only the fields OpenAI gives that
   role (`FIELDS`; a tool message: `role`, `content`, `tool_call_id`), none
   of them None but an assistant's `content`; a `name` matches OpenAI's
   pattern (`NAME`) or is left out. A message with another role is dropped.
2. User, system, developer, tool and function messages have string content
   (None becomes ""). A function message has a name; one without is dropped.
3. Every tool call has an id and a function name, `type` "function" and string
   `arguments`. A call lacking the id or the name is dropped, and so is a
   call whose id its message already has.
4. An assistant message has content, tool calls or a function call: a refusal
   alone becomes its content too, and one with none of them is dropped.
5. No two assistant messages in a row: consecutive ones are merged, contents
   joined by a newline and tool calls concatenated.
6. Tool messages come directly after the assistant message whose calls they
   answer, each answering one of its calls, once. Any other tool message (for
   no call of that message, a second answer, after another role) is dropped.
7. Every tool call is answered before the next non-tool message and before
   the end: a call left without an answer is dropped from its message. (A run
   stores an answer for each of its calls, a stand-in when the run ended
   first; calls without one come from rows written before tool results were
   stored, whose results are lost.)

A user message stored with the files uploaded before it (`files`) tells the
agent about them in a note after its text, so that a model knows to read
`data.csv` without guessing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

# The fields each role may carry besides `role` and `content` (`tool_calls` is built apart).
FIELDS: dict[str, tuple[str, ...]] = {
    "system": ("name",),
    "developer": ("name",),
    "user": ("name",),
    "assistant": ("name", "refusal", "function_call"),
    "tool": ("tool_call_id",),
    "function": ("name",),
}
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's pattern for a participant's `name`


def to_openai(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Convert stored messages, in order, into a transcript following the rules above."""
    out: list[dict[str, Any]] = []
    turn: _Turn | None = None  # the assistant message being built, with its answers
    for message in messages:
        converted = _convert(message)
        if converted is None:
            continue
        role = converted["role"]
        if role == "tool":
            if turn is not None:
                turn.answer(converted)
            continue  # rule 6: an answer to nothing is dropped
        if role == "assistant" and turn is not None and not turn.answers:
            turn.merge(converted)  # rule 5
            continue
        if turn is not None:
            out.extend(turn.close())
            turn = None
        if role == "assistant":
            turn = _Turn(converted)
        else:
            out.append(converted)
    if turn is not None:
        out.extend(turn.close())
    return out


class _Turn:
    """An assistant message and the tool messages answering its calls, so far."""

    def __init__(self, assistant: dict[str, Any]) -> None:
        self.assistant = assistant
        self.answers: list[dict[str, Any]] = []

    def _call_ids(self) -> set[str]:
        return {c["id"] for c in self.assistant.get("tool_calls", [])}

    def answer(self, tool: dict[str, Any]) -> None:
        call_id = tool.get("tool_call_id")
        if call_id in self._call_ids() and all(a["tool_call_id"] != call_id for a in self.answers):
            self.answers.append(tool)

    def merge(self, extra: dict[str, Any]) -> None:
        target = self.assistant
        parts = [p for p in (target.get("content"), extra.get("content")) if p]
        target["content"] = "\n".join(parts) if parts else None
        _set_calls(target, target.get("tool_calls", []) + extra.get("tool_calls", []))
        for field in FIELDS["assistant"]:
            if field in extra and field not in target:
                target[field] = extra[field]

    def close(self) -> list[dict[str, Any]]:
        """The assistant message with its answered calls only (rule 7), then the answers."""
        answered = {a["tool_call_id"] for a in self.answers}
        kept = [c for c in self.assistant.get("tool_calls", []) if c["id"] in answered]
        _set_calls(self.assistant, kept)
        if not _has_substance(self.assistant):
            return []
        return [self.assistant, *self.answers]


def _convert(message: dict[str, Any]) -> dict[str, Any] | None:
    """One stored message in OpenAI's form (rules 1-4), or None to drop it."""
    role = message.get("role")
    if not isinstance(role, str) or role not in FIELDS:
        return None
    content = message.get("content")
    converted: dict[str, Any] = {"role": role, "content": content}
    for field in FIELDS[role]:
        value = message.get(field)
        if value is not None and (
            field != "name" or (isinstance(value, str) and NAME.fullmatch(value))
        ):
            converted[field] = value
    if role != "assistant":
        converted["content"] = content or ""
        if role == "user" and message.get("files"):
            converted["content"] += uploads_note(message["files"])
        if role == "function" and "name" not in converted:
            return None
        return converted
    _set_calls(converted, [_tool_call(c) for c in message.get("tool_calls") or []])
    if not content and converted.get("refusal"):
        converted["content"] = converted["refusal"]
    return converted if _has_substance(converted) else None


def uploads_note(files: Any) -> str:
    """The note on the files uploaded with a user message, as the agent reads it."""
    named = [
        f"{f['path']} ({f.get('mediaType', 'unknown type')}, {f.get('size', '?')} bytes)"
        for f in files
        if isinstance(f, dict) and isinstance(f.get("path"), str)
    ]
    if not named:
        return ""
    return (
        "\n\n[The user uploaded these files to the conversation's workspace: "
        + ", ".join(named)
        + ". Read them with the workspace tools.]"
    )


def _tool_call(call: Any) -> dict[str, Any] | None:
    if not isinstance(call, dict):
        return None
    call_id, function = call.get("id"), call.get("function")
    if not call_id or not isinstance(call_id, str) or not isinstance(function, dict):
        return None
    name, arguments = function.get("name"), function.get("arguments") or ""
    if not name or not isinstance(name, str):
        return None
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _set_calls(message: dict[str, Any], calls: list[dict[str, Any] | None]) -> None:
    """Set the message's valid tool calls, each id once (rule 3); no key when there are none."""
    unique: dict[str, dict[str, Any]] = {}
    for call in calls:
        if call is not None:
            unique.setdefault(call["id"], call)
    if unique:
        message["tool_calls"] = list(unique.values())
    else:
        message.pop("tool_calls", None)


def _has_substance(assistant: dict[str, Any]) -> bool:
    return any(assistant.get(field) for field in ("content", "tool_calls", "function_call"))
