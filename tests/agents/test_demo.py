"""The built-in demo agent: deterministic, no network."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime

from turnstream.agents.base import AgentEvent, RunContext
from turnstream.agents.demo import demo_agent
from turnstream.config import Settings
from turnstream.events import Event, EventType

SETTINGS = Settings(demo_delay_ms=0, demo_words=5)


def make_ctx(message: str) -> RunContext:
    return RunContext(
        conversation_id="conv_1",
        user_id="user_1",
        session_id="sess_1",
        message_id="msg_0123456789abcdef",
        message=message,
        history=[{"role": "user", "content": message}],
        settings=SETTINGS,
        cancelled=lambda: False,
    )


async def run(message: str) -> list[AgentEvent]:
    return [event async for event in demo_agent(make_ctx(message))]


def text_of(events: list[AgentEvent]) -> str:
    parts = []
    for event in events:
        if isinstance(event, str):
            parts.append(event)
        elif event.type == EventType.DELTA:
            parts.append(event.data["text"])
    return "".join(parts)


def is_text(event: AgentEvent) -> bool:
    return isinstance(event, str) or event.type == EventType.DELTA


async def test_reply_is_deterministic() -> None:
    first = text_of(await run("hello there"))
    second = text_of(await run("hello there"))

    assert first == second
    assert first != text_of(await run("something else entirely"))


async def test_reply_has_demo_words_words() -> None:
    events = await run("hello there")

    assert len(text_of(events).split()) == 5
    assert events[-1] == Event(EventType.USAGE, {"prompt_tokens": 2, "completion_tokens": 5})


def calls_and_results(events: list[AgentEvent]) -> tuple[list[Event], list[Event]]:
    calls = [e for e in events if isinstance(e, Event) and e.type == EventType.TOOL_CALL]
    results = [e for e in events if isinstance(e, Event) and e.type == EventType.TOOL_RESULT]
    return calls, results


async def test_tool_time_calls_the_clock_and_the_reply_tells_its_result() -> None:
    events = await run("/tool what time is it?")

    [call], [result] = calls_and_results(events)
    assert call.data["name"] == "clock"
    assert result.data["id"] == call.data["id"] and result.data["isError"] is False
    now = datetime.now(UTC)
    stamp = datetime.strptime(result.data["content"], "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)
    assert abs((now - stamp).total_seconds()) < 5
    assert text_of(events) == f"It is {result.data['content']}."


async def test_tool_arithmetic_calls_the_calculator_and_the_reply_has_the_answer() -> None:
    events = await run("/tool 2+2")

    [call], [result] = calls_and_results(events)
    assert call.data["name"] == "calculator"
    assert json.loads(call.data["arguments"]) == {"expression": "2+2"}
    assert result.data["content"] == "4"
    assert text_of(events) == "2+2 = 4."


async def test_tool_events_come_in_the_order_the_storage_relies_on() -> None:
    events = await run("/tool what time is it, and what is (3 + 4) * 5^2?")

    kinds = ["text" if isinstance(e, str) else e.type.value for e in events]
    steps = [k for i, k in enumerate(kinds) if k != "usage" and (i == 0 or k != kinds[i - 1])]
    assert steps == ["tool_call", "tool_result", "text"]  # calls, their results, the answer
    calls, results = calls_and_results(events)
    assert [c.data["name"] for c in calls] == ["clock", "calculator"]
    assert {r.data["id"] for r in results} == {c.data["id"] for c in calls}
    assert "(3 + 4) * 5**2 = 175." in text_of(events)


async def test_a_failing_tool_is_reported_in_the_reply() -> None:
    events = await run("/tool 1/0")

    [_], [result] = calls_and_results(events)
    assert result.data["isError"] is True
    assert "ZeroDivisionError" in result.data["content"]
    assert text_of(events).startswith("The calculator tool could not answer")


async def test_other_tool_messages_are_echoed() -> None:
    events = await run("/tool weather in Paris")

    [call], [result] = calls_and_results(events)
    assert call.data["name"] == "echo"
    assert call.data["arguments"] == '{"text": "weather in Paris"}'
    assert result.data == {"id": call.data["id"], "content": "weather in Paris", "isError": False}
    assert text_of(events) == "You said: weather in Paris"


async def test_the_tool_reply_streams_word_by_word_with_the_demo_delay() -> None:
    settings = Settings(demo_delay_ms=30, demo_words=5)
    ctx = make_ctx("/tool 2+2")
    ctx = dataclasses.replace(ctx, settings=settings)
    loop = asyncio.get_running_loop()

    started = loop.time()
    events = [event async for event in demo_agent(ctx)]

    assert [e for e in events if isinstance(e, str)] == ["2+2", " =", " 4."]
    assert loop.time() - started >= 0.09  # three words, 30 ms before each


async def test_usage_is_reported_per_step() -> None:
    events = await run("/tool 2+2")

    usage = [e for e in events if isinstance(e, Event) and e.type == EventType.USAGE]
    assert [u.data["completion_tokens"] for u in usage] == [1, 3]  # one call, then three words
