"""What an agent is: an async generator from a run's context to events.

    async def my_agent(ctx: RunContext) -> AsyncIterator[Event | str]:
        yield "Hello"                      # a bare string is reply text (a delta)
        yield events.tool_call("c1", "search", '{"q": "x"}')

The run writes every event into the stream; the reply stored in SQL is the
concatenated deltas plus the tool calls. Cancellation cancels the generator's
task, so an agent need not poll `ctx.cancelled()` unless it does work that
ignores task cancellation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from turnstream.config import Settings
from turnstream.events import Event

AgentEvent = Event | str


@dataclass(frozen=True)
class RunContext:
    conversation_id: str
    user_id: str
    session_id: str
    message_id: str  # the id the assistant reply will be stored under
    message: str  # the user message this run answers
    history: list[dict[str, Any]]  # OpenAI chat messages, the user message last
    settings: Settings
    cancelled: Callable[[], bool]


Agent = Callable[[RunContext], AsyncIterator[AgentEvent]]
