"""What the framework adapters' tests share: run contexts, the events of a run, and the
history the storage would make of them (the contract in turnstream/agents/base.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from turnstream.agents.base import Agent, RunContext
from turnstream.config import Settings
from turnstream.events import Event, EventType

from . import support
from .support import of_type

SETTINGS = Settings()


def make_ctx(history: list[dict[str, Any]]) -> RunContext:
    """A run answering the last (user) message of `history`."""
    return support.make_ctx(SETTINGS, history)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


async def run(agent: Agent, history: list[dict[str, Any]]) -> list[Event]:
    """Every event of one run, a bare string as the delta it stands for."""
    out = []
    async for item in agent(make_ctx(history)):
        out.append(Event(EventType.DELTA, {"text": item}) if isinstance(item, str) else item)
    return out


def text_of(events: list[Event]) -> str:
    return "".join(e.data["text"] for e in of_type(events, EventType.DELTA))


def kinds(events: list[Event]) -> list[EventType]:
    """The event types in order, runs of the same type collapsed to one."""
    out: list[EventType] = []
    for event in events:
        if not out or out[-1] != event.type:
            out.append(event.type)
    return out


def stored_history(prompt: str, events: list[Event]) -> list[dict[str, Any]]:
    """The OpenAI messages the storage makes of one run: a step is text, then tool
    calls, then their results; the next step starts with text or a call after a result."""
    messages: list[dict[str, Any]] = [user(prompt)]
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []

    def close_step() -> None:
        if text or calls:
            message: dict[str, Any] = {"role": "assistant", "content": "".join(text) or None}
            if calls:
                message["tool_calls"] = list(calls)
            messages.append(message)
        messages.extend(results)
        text.clear()
        calls.clear()
        results.clear()

    for event in events:
        starts_step = event.type in (EventType.DELTA, EventType.REASONING, EventType.TOOL_CALL)
        if results and starts_step:
            close_step()
        if event.type == EventType.DELTA:
            text.append(event.data["text"])
        elif event.type == EventType.TOOL_CALL:
            function = {"name": event.data["name"], "arguments": event.data["arguments"]}
            calls.append({"id": event.data["id"], "type": "function", "function": function})
        elif event.type == EventType.TOOL_RESULT:
            results.append(
                {"role": "tool", "tool_call_id": event.data["id"], "content": event.data["content"]}
            )
    close_step()
    return messages


async def cancel_mid_stream(
    agent: Agent, history: list[dict[str, Any]], started: Callable[[Event], bool]
) -> list[Event]:
    """Consume a run in a task, cancel that task once an event matches `started`, and
    check that the cancellation reaches the consumer and leaves no task behind."""
    before = asyncio.all_tasks()
    seen: list[Event] = []
    reached = asyncio.Event()

    async def consume() -> None:
        async for item in agent(make_ctx(history)):
            event = Event(EventType.DELTA, {"text": item}) if isinstance(item, str) else item
            seen.append(event)
            if started(event):
                reached.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(reached.wait(), timeout=10)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the run ended normally instead of being cancelled")
    assert task.cancelled()
    for _ in range(5):  # let anything the cancellation woke up run its course
        await asyncio.sleep(0)
    left = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert not left, f"tasks still running after the cancellation: {left}"
    return seen


def first_delta(event: Event) -> bool:
    return event.type == EventType.DELTA
