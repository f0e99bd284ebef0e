"""What the OpenAI chat completions API accepts as `messages`: one checker for the tests.

`check_transcript(messages)` lists the rules a transcript breaks, `[]` when
OpenAI would accept it; `assert_valid(messages)` fails an assert with that
list. The history property tests (tests/store/test_history_rules.py) hold
`turnstream/store/history.py` to it, and the loopback OpenAI-compatible server
(tests/fake_openai.py) answers `400` with `check_transcript(body["messages"])`.

The rules, written independently of history.py (each violation names its rule):

- `role`: every message is a JSON object whose role is system, developer,
  user, assistant, tool or function.
- `fields`: it carries only the fields OpenAI gives its role (`ALLOWED`); a
  tool message has no `name`. No field but an assistant's `content` is null.
- `content`: system, developer, user, tool and function messages have string
  content; an assistant's content is a string or null.
- `name`: a `name` matches `^[a-zA-Z0-9_-]{1,64}$`; a function message has one.
- `empty-assistant`: an assistant message has non-empty content, tool calls or
  a function call.
- `tool-call`: each `tool_calls` entry is `{"id", "type": "function",
  "function": {"name", "arguments"}}` with a non-empty string id and name and
  string arguments; `tool_calls`, when present, is a non-empty list; ids are
  unique within a message.
- `consecutive-assistant`: no two assistant messages in a row (SPEC §8: they
  are merged).
- `orphan-tool`: a tool message comes directly after the assistant message
  whose call it answers (only tool messages between them) and names one of
  its calls by `tool_call_id`.
- `duplicate-answer`: no call is answered twice.
- `unanswered`: every call is answered before the next non-tool message and
  before the end of the list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

ALLOWED: dict[str, frozenset[str]] = {
    "system": frozenset({"role", "content", "name"}),
    "developer": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset({"role", "content", "name", "refusal", "tool_calls", "function_call"}),
    "tool": frozenset({"role", "content", "tool_call_id"}),
    "function": frozenset({"role", "content", "name"}),
}
_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def check_transcript(messages: Sequence[Any]) -> list[str]:
    """Every rule the transcript breaks, as `"messages[i]: <rule>: <what>"` lines."""
    found: list[str] = []
    open_calls: set[str] = set()  # calls of the last assistant message not yet answered
    answered: set[str] = set()
    in_tool_block = False  # only tool messages since the last assistant message
    previous_role = None
    for i, message in enumerate(messages):
        problems = _shape(message)
        found += [f"messages[{i}]: {p}" for p in problems]
        if not isinstance(message, Mapping) or message.get("role") not in ALLOWED:
            previous_role, in_tool_block = None, False
            continue
        role = message["role"]
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not in_tool_block or (call_id not in open_calls and call_id not in answered):
                found.append(f"messages[{i}]: orphan-tool: no call {call_id!r} just before it")
            elif call_id in answered:
                found.append(f"messages[{i}]: duplicate-answer: {call_id!r} answered again")
            else:
                open_calls.discard(call_id)
                answered.add(call_id)
        else:
            if open_calls:
                found.append(f"messages[{i}]: unanswered: {sorted(open_calls)} before a {role}")
            if role == "assistant" and previous_role == "assistant":
                found.append(f"messages[{i}]: consecutive-assistant: follows another")
            in_tool_block = role == "assistant"
            open_calls = {c["id"] for c in _calls(message)}
            answered = set()
        previous_role = role
    if open_calls:
        found.append(f"end: unanswered: {sorted(open_calls)} at the end of the messages")
    return found


def assert_valid(messages: Sequence[Any]) -> None:
    """Assert that OpenAI would accept the transcript; the failure lists every broken rule."""
    problems = check_transcript(messages)
    assert not problems, "\n".join(problems)


def _shape(message: Any) -> list[str]:
    """The rules one message breaks on its own."""
    if not isinstance(message, Mapping):
        return ["role: not a JSON object"]
    role = message.get("role")
    if role not in ALLOWED:
        return [f"role: unknown role {role!r}"]
    problems = [f"fields: {role} has no field {f!r}" for f in message if f not in ALLOWED[role]]
    problems += [
        f"fields: {f!r} is null"
        for f, v in message.items()
        if v is None and not (role == "assistant" and f == "content")
    ]
    content = message.get("content")
    if role == "assistant":
        if content is not None and not isinstance(content, str):
            problems.append("content: an assistant's content is a string or null")
        if not (content or message.get("tool_calls") or message.get("function_call")):
            problems.append("empty-assistant: no content, tool calls or function call")
        problems += _tool_call_problems(message)
    elif not isinstance(content, str):
        problems.append(f"content: a {role} message's content is a string")
    name = message.get("name")
    if name is not None and not (isinstance(name, str) and _NAME.fullmatch(name)):
        problems.append(f"name: {name!r} does not match ^[a-zA-Z0-9_-]{{1,64}}$")
    if role == "function" and name is None:
        problems.append("name: a function message has a name")
    if role == "tool" and not (isinstance(message.get("tool_call_id"), str)):
        problems.append("fields: a tool message has a string tool_call_id")
    return problems


def _tool_call_problems(message: Mapping[str, Any]) -> list[str]:
    if "tool_calls" not in message or message["tool_calls"] is None:
        return []
    calls = message["tool_calls"]
    if not isinstance(calls, list) or not calls:
        return ["tool-call: tool_calls is a non-empty list"]
    problems = []
    ids = []
    for n, call in enumerate(calls):
        function = call.get("function") if isinstance(call, Mapping) else None
        if not (
            isinstance(call, Mapping)
            and set(call) == {"id", "type", "function"}
            and isinstance(call["id"], str)
            and call["id"]
            and call["type"] == "function"
            and isinstance(function, Mapping)
            and set(function) == {"name", "arguments"}
            and isinstance(function["name"], str)
            and function["name"]
            and isinstance(function["arguments"], str)
        ):
            problems.append(f"tool-call: tool_calls[{n}] is not a complete function call")
            continue
        ids.append(call["id"])
    if len(ids) != len(set(ids)):
        problems.append(f"tool-call: ids repeat within the message: {ids}")
    return problems


def _calls(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The message's well-formed tool calls (the malformed ones are reported by `_shape`)."""
    calls = message.get("tool_calls")
    if not isinstance(calls, list):
        return []
    return [c for c in calls if isinstance(c, Mapping) and isinstance(c.get("id"), str)]
