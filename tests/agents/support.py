"""What the openai agent's tests share: a run context, settings and a way to collect events."""

from __future__ import annotations

import asyncio
from typing import Any

from turnstream.agents.base import AgentEvent, RunContext
from turnstream.agents.openai import openai_agent
from turnstream.config import Settings
from turnstream.events import Event, EventType

from . import toolbox

HISTORY = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "What's the weather in Paris and Rome?"},
]
TOOLS = f"{toolbox.__name__}:TOOLS"  # every tool of tests/agents/toolbox.py


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


def settings_for(base_url: str, **overrides: Any) -> Settings:
    return Settings(
        openai_base_url=base_url, openai_api_key="test", openai_model="test-model", **overrides
    )


async def run(ctx: RunContext) -> list[AgentEvent]:
    async with asyncio.timeout(10):  # a failure must raise, never hang
        return [event async for event in openai_agent(ctx)]


def of_type(events: list[AgentEvent], kind: EventType) -> list[Event]:
    return [e for e in events if isinstance(e, Event) and e.type == kind]
