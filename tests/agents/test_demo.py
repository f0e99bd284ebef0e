"""The built-in demo agent: deterministic, no network."""

from __future__ import annotations

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


async def test_tool_message_yields_call_then_result_before_text() -> None:
    events = await run("/tool weather in Paris")

    kinds = [e.type for e in events if isinstance(e, Event) and not is_text(e)]
    assert kinds[:2] == [EventType.TOOL_CALL, EventType.TOOL_RESULT]
    first_text = next(i for i, e in enumerate(events) if is_text(e))
    call, result = events[0], events[1]
    assert isinstance(call, Event) and isinstance(result, Event)
    assert first_text == 2
    assert call.type == EventType.TOOL_CALL and result.type == EventType.TOOL_RESULT
    assert call.data["name"] == "echo"
    assert call.data["arguments"] == '{"query": "weather in Paris"}'
    assert result.data == {"id": call.data["id"], "content": call.data["arguments"]}
    assert len(text_of(events).split()) == 5
