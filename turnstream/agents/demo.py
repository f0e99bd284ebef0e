"""The built-in `demo` agent: a deterministic reply with no network, for trying things out.

It runs the same tool loop as the `openai` agent (agents/toolloop.py), with a
scripted "model" in place of a real one:

- `/tool NAME {JSON object}` calls the tool NAME (a built-in one, any tool of
  `TURNSTREAM_TOOLS`, or an MCP server's `mcp__SERVER__TOOL`) once, with that object
  as its arguments:
  `/tool write_file {"path": "notes.md", "content": "# hi"}`. This is how a person,
  or a test, tries any tool without a model;
- any other message that starts with `/tool` makes the first step ask for
  built-in tools (agents/builtin_tools.py): the clock when the message speaks of
  time or dates, the calculator for the arithmetic in it (both at once when it
  has both), the echo otherwise. `/tool what time is it?`, `/tool (3 + 4) * 5`;
- the step after the tools' results answers with them;
- any other message gets `TURNSTREAM_DEMO_WORDS` words, the same for the same message.

Reply text streams word by word, one every `TURNSTREAM_DEMO_DELAY_MS`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncGenerator
from contextlib import aclosing
from functools import partial
from typing import Any

from turnstream import events
from turnstream.agents.base import AgentEvent, RunContext
from turnstream.agents.builtin_tools import TOOLS
from turnstream.agents.toolloop import StepOutcome, ToolCall, tool_loop
from turnstream.agents.tools import Tool, offered_tools, tools_by_name

_WORDS = (
    "turnstream keeps every reply safe while the agent writes it so a client may leave "
    "and come back from any point on any server and read the rest exactly once"
).split()
DEMO_TOOLS = tools_by_name(TOOLS)
_TIME = re.compile(r"\b(time|clock|date|day|today|hour|now)\b", re.I)
_ZONE = re.compile(r"\b[A-Z][A-Za-z_]+/[A-Za-z_]+(?:/[A-Za-z_]+)?\b")
_ARITHMETIC = re.compile(r"[-+*/%^().\d\s]*\d[-+*/%^().\d\s]*")
_OPERATOR = re.compile(r"\d\s*\)*\s*(\*\*|[-+*/%^])")
_FAILED = ("Unknown tool", "Invalid arguments", "The arguments", "Not run")
_NAMED_CALL = re.compile(r"^([A-Za-z0-9_-]{1,64})\s+(\{.*\})\s*$", re.S)
_QUOTED_RESULT_CHARS = 200


def demo_reply(message: str, words: int) -> list[str]:
    """The words of the reply to `message`: the same message always gets the same reply."""
    seed = int(hashlib.sha256(message.encode()).hexdigest()[:8], 16)
    return [_WORDS[(seed + i) % len(_WORDS)] for i in range(words)]


async def demo_agent(ctx: RunContext) -> AsyncGenerator[AgentEvent, None]:
    tools: dict[str, Tool] = {**DEMO_TOOLS, **await offered_tools(ctx.settings)}
    async with aclosing(tool_loop(ctx, tools, partial(_scripted_model, ctx))) as loop:
        async for event in loop:
            yield event


async def _scripted_model(
    ctx: RunContext, messages: list[dict[str, Any]], outcome: StepOutcome
) -> AsyncGenerator[AgentEvent, None]:
    """One step of the demo's "model": plan tool calls, answer with their results, or chat."""
    prompt_tokens = sum(len(m["content"].split()) for m in messages if _is_text(m))
    if messages and messages[-1].get("role") == "tool":
        words = _answer(messages).split()
    elif ctx.message.startswith("/tool"):
        outcome.calls = plan(ctx.message[len("/tool") :].strip(), ctx.message_id)
        yield events.usage(prompt_tokens, completion_tokens=len(outcome.calls))
        return
    else:
        words = demo_reply(ctx.message, ctx.settings.demo_words)
    delay = ctx.settings.demo_delay_ms / 1000
    for i, word in enumerate(words):
        await asyncio.sleep(delay)
        text = word if i == 0 else " " + word
        outcome.text += text
        yield text
    yield events.usage(prompt_tokens, completion_tokens=len(words))


def plan(query: str, message_id: str) -> list[ToolCall]:
    """The tool calls for a `/tool` message: the one it names, or clock and/or calculator,
    else echo."""
    wanted: list[tuple[str, dict[str, Any]]] = []
    named = _named_call(query)
    if named is not None:
        wanted.append(named)
    else:
        if _TIME.search(query):
            zone = _ZONE.search(query)
            wanted.append(("clock", {"timezone": zone[0]} if zone else {}))
        expressions = [m.strip() for m in _ARITHMETIC.findall(query) if _OPERATOR.search(m)]
        if expressions:
            expression = max(expressions, key=len).replace("^", "**")
            wanted.append(("calculator", {"expression": expression}))
    if not wanted:
        wanted.append(("echo", {"text": query}))
    return [
        ToolCall(f"call_{message_id[-12:]}_{i}", name, json.dumps(arguments))
        for i, (name, arguments) in enumerate(wanted)
    ]


def _named_call(query: str) -> tuple[str, dict[str, Any]] | None:
    """`NAME {JSON object}`: the tool's name and its arguments; None for anything else."""
    named = _NAMED_CALL.match(query)
    if named is None:
        return None
    try:
        arguments = json.loads(named[2])
    except json.JSONDecodeError:
        return None
    return (named[1], arguments) if isinstance(arguments, dict) else None


def _answer(messages: list[dict[str, Any]]) -> str:
    """The reply after the tools: one sentence per call of the last assistant message."""
    last = max(i for i, m in enumerate(messages) if m.get("role") == "assistant")
    results = {
        m.get("tool_call_id"): str(m.get("content"))
        for m in messages[last + 1 :]
        if m.get("role") == "tool"
    }
    sentences = []
    for call in messages[last].get("tool_calls") or ():
        name, arguments = call["function"]["name"], json.loads(call["function"]["arguments"])
        sentences.append(_sentence(name, arguments, results.get(call["id"], "")))
    return " ".join(sentences)


def _sentence(name: str, arguments: dict[str, Any], result: str) -> str:
    if result.startswith((f"{name} failed", f"{name} timed out", *_FAILED)):
        return f"The {name} tool could not answer: {result}"
    if name == "clock":
        return f"It is {result}."
    if name == "calculator":
        return f"{arguments.get('expression')} = {result}."
    if name == "echo":
        return f"You said: {result}"
    if len(result) > _QUOTED_RESULT_CHARS:
        result = result[:_QUOTED_RESULT_CHARS] + "…"
    return f"The {name} tool answered: {result}"


def _is_text(message: dict[str, Any]) -> bool:
    return isinstance(message.get("content"), str)
