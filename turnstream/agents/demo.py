"""The built-in `demo` agent: a deterministic reply with no network, for trying things out."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator

from turnstream import events
from turnstream.agents.base import AgentEvent, RunContext

_WORDS = (
    "turnstream keeps every reply safe while the agent writes it so a client may leave "
    "and come back from any point on any server and read the rest exactly once"
).split()


def demo_reply(message: str, words: int) -> list[str]:
    """The words of the reply to `message`: the same message always gets the same reply."""
    seed = int(hashlib.sha256(message.encode()).hexdigest()[:8], 16)
    return [_WORDS[(seed + i) % len(_WORDS)] for i in range(words)]


async def demo_agent(ctx: RunContext) -> AsyncIterator[AgentEvent]:
    delay = ctx.settings.demo_delay_ms / 1000
    if ctx.message.startswith("/tool"):
        call_id = f"call_{ctx.message_id[-12:]}"
        arguments = json.dumps({"query": ctx.message[len("/tool") :].strip()})
        yield events.tool_call(call_id, "echo", arguments)
        yield events.tool_result(call_id, arguments)
    words = demo_reply(ctx.message, ctx.settings.demo_words)
    for i, word in enumerate(words):
        await asyncio.sleep(delay)
        yield word if i == 0 else " " + word
    yield events.usage(prompt_tokens=len(ctx.message.split()), completion_tokens=len(words))
