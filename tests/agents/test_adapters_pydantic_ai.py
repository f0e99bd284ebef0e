"""The PydanticAI adapter, offline: PydanticAI's own TestModel and FunctionModel."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent, ModelRetry
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaThinkingPart, DeltaToolCall, FunctionModel
from pydantic_ai.models.test import TestModel

from turnstream.agents.base import RunContext
from turnstream.agents.pydantic_ai import from_pydantic_ai
from turnstream.config import Settings
from turnstream.events import EventType

from . import support
from .adapter_support import (
    cancel_mid_stream,
    first_delta,
    kinds,
    make_ctx,
    of_type,
    run,
    stored_history,
    text_of,
    user,
)

StreamItem = str | dict[int, DeltaToolCall] | dict[int, DeltaThinkingPart]


class WeatherModel:
    """A FunctionModel script: think, call `weather` (arguments in two pieces), then
    answer with what the tool returned. It keeps every message list it was given."""

    def __init__(self) -> None:
        self.calls = 0
        self.seen: list[list[ModelMessage]] = []

    async def stream(
        self, messages: list[ModelMessage], info: AgentInfo
    ) -> AsyncIterator[StreamItem]:
        self.seen.append(list(messages))
        self.calls += 1
        returned = [
            part
            for part in messages[-1].parts
            if isinstance(messages[-1], ModelRequest) and isinstance(part, ToolReturnPart)
        ]
        if returned:
            yield "It is "
            yield str(returned[0].content)
            yield "."
            return
        yield {0: DeltaThinkingPart(content="The user wants ")}
        yield {0: DeltaThinkingPart(content="the weather.")}
        yield "Let me check."
        call_id = f"call_{self.calls}"
        yield {1: DeltaToolCall(name="weather", json_args='{"city": ', tool_call_id=call_id)}
        yield {1: DeltaToolCall(json_args='"Paris"}')}


def weather_agent(model: WeatherModel) -> Agent[None, str]:
    agent = Agent(FunctionModel(stream_function=model.stream), instructions="Be brief.")

    @agent.tool_plain
    def weather(city: str) -> str:
        return f"sunny in {city}"

    return agent


async def test_text_reply_streams_deltas_that_make_the_text() -> None:
    model = TestModel(custom_output_text="Hello there, nice to meet you")
    events = await run(from_pydantic_ai(Agent(model)), [user("hi")])

    assert text_of(events) == "Hello there, nice to meet you"
    assert len(of_type(events, EventType.DELTA)) > 1
    assert kinds(events) == [EventType.DELTA, EventType.USAGE]


async def test_tool_call_then_result_with_the_same_id_and_the_answer_uses_it() -> None:
    events = await run(from_pydantic_ai(weather_agent(WeatherModel())), [user("Weather?")])

    assert kinds(events) == [
        EventType.REASONING,
        EventType.DELTA,
        EventType.TOOL_CALL,
        EventType.TOOL_RESULT,
        EventType.DELTA,
        EventType.USAGE,
    ]
    [call] = of_type(events, EventType.TOOL_CALL)
    [result] = of_type(events, EventType.TOOL_RESULT)
    assert (call.data["id"], call.data["name"]) == ("call_1", "weather")
    assert json.loads(call.data["arguments"]) == {"city": "Paris"}
    assert result.data == {"id": "call_1", "content": "sunny in Paris", "isError": False}
    assert "".join(e.data["text"] for e in of_type(events, EventType.REASONING)) == (
        "The user wants the weather."
    )
    assert text_of(events) == "Let me check.It is sunny in Paris."


async def test_usage_is_the_runs_usage() -> None:
    model = TestModel(custom_output_text="Four words of reply")
    agent = Agent(model)
    events = await run(from_pydantic_ai(agent), [user("count")])

    [usage] = of_type(events, EventType.USAGE)
    async with agent.run_stream_events("count") as stream:
        async for _ in stream:
            pass
    assert stream.result is not None
    expected = stream.result.usage
    assert usage.data == {
        "prompt_tokens": expected.input_tokens,
        "completion_tokens": expected.output_tokens,
    }
    assert expected.input_tokens > 0 and expected.output_tokens > 0


async def test_a_model_retry_is_a_tool_result_marked_as_an_error() -> None:
    agent = Agent(TestModel(), retries=2)
    attempts = 0

    @agent.tool_plain
    def lookup(key: str) -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ModelRetry("no such key, try another")
        return "found"

    events = await run(from_pydantic_ai(agent), [user("look it up")])

    calls = of_type(events, EventType.TOOL_CALL)
    results = of_type(events, EventType.TOOL_RESULT)
    assert [c.data["id"] for c in calls] == [r.data["id"] for r in results]
    assert results[0].data["isError"] is True
    assert "no such key, try another" in results[0].data["content"]
    assert results[1].data == {"id": calls[1].data["id"], "content": "found", "isError": False}


async def test_a_structured_output_is_written_as_json_text() -> None:
    class City(BaseModel):
        name: str
        population: int

    agent = Agent(
        TestModel(custom_output_args={"name": "Paris", "population": 2}), output_type=City
    )
    events = await run(from_pydantic_ai(agent), [user("a city")])

    assert json.loads(text_of(events)) == {"name": "Paris", "population": 2}
    assert not of_type(events, EventType.TOOL_CALL)  # the output tool is not a tool call


async def test_second_turn_gives_the_model_the_first_turns_tool_call_result_and_text() -> None:
    model = WeatherModel()
    agent = from_pydantic_ai(weather_agent(model))
    first = await run(agent, [user("Weather in Paris?")])
    history = stored_history("Weather in Paris?", first)
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]

    second = await run(agent, [*history, user("And tomorrow?")])

    [call] = of_type(first, EventType.TOOL_CALL)
    arguments = call.data["arguments"]
    assert model.calls == 4  # two requests a turn: the tool call, then the answer
    sent = model.seen[2]  # what the model got for turn 2's first request
    assert [type(m) for m in sent] == [
        ModelRequest,
        ModelResponse,
        ModelRequest,
        ModelResponse,
        ModelRequest,
    ]
    assert [type(p) for p in sent[0].parts] == [UserPromptPart]
    assert sent[0].parts[0].content == "Weather in Paris?"
    assert sent[1].parts == [
        TextPart("Let me check."),
        ToolCallPart("weather", arguments, tool_call_id="call_1"),
    ]
    [returned] = sent[2].parts
    assert isinstance(returned, ToolReturnPart)
    assert (returned.tool_name, returned.tool_call_id, returned.content) == (
        "weather",
        "call_1",
        "sunny in Paris",
    )
    assert sent[3].parts == [TextPart("It is sunny in Paris.")]
    [prompt] = sent[4].parts
    assert isinstance(prompt, UserPromptPart) and prompt.content == "And tomorrow?"
    # Turn 2 runs the tool again, with ids of its own.
    assert [c.data["id"] for c in of_type(second, EventType.TOOL_CALL)] == ["call_3"]


async def test_cancelling_the_run_mid_stream_stops_the_model() -> None:
    closed = asyncio.Event()

    async def stalls(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        try:
            yield "Once upon"
            await asyncio.sleep(3600)
            yield " a time"
        finally:
            closed.set()

    agent = from_pydantic_ai(Agent(FunctionModel(stream_function=stalls)))
    seen = await cancel_mid_stream(agent, [user("a story")], first_delta)

    assert text_of(seen) == "Once upon"
    assert closed.is_set()


@pytest.mark.parametrize("system", ["system", "developer"])
async def test_system_messages_of_the_history_reach_the_model(system: str) -> None:
    model = WeatherModel()
    history = [{"role": system, "content": "Answer in French."}, user("Weather?")]
    await run(from_pydantic_ai(weather_agent(model)), history)

    first_request = model.seen[0][0]
    assert isinstance(first_request, ModelRequest)
    assert [getattr(p, "content", None) for p in first_request.parts] == [
        "Answer in French.",
        "Weather?",
    ]


@pytest.mark.parametrize(
    ("rule", "refusal"),
    [({"tool_deny": "weath*"}, "TURNSTREAM_TOOL_DENY"), ({"tool_approval": "weather"}, "wait")],
)
async def test_the_tool_policy_keeps_a_call_from_running_and_the_model_reads_why(rule, refusal):
    ran: list[str] = []
    model = WeatherModel()
    agent = Agent(FunctionModel(stream_function=model.stream), instructions="Be brief.")

    @agent.tool_plain
    def weather(city: str) -> str:
        ran.append(city)
        return f"sunny in {city}"

    ctx = make_ctx([user("Weather?")])
    ctx = dataclasses.replace(ctx, settings=ctx.settings.model_copy(update=rule))
    events = [e async for e in from_pydantic_ai(agent)(ctx)]

    [result] = [e for e in events if not isinstance(e, str) and e.type == EventType.TOOL_RESULT]
    assert refusal in result.data["content"] and ran == []
    allowed = [e async for e in from_pydantic_ai(agent)(make_ctx([user("Weather?")]))]
    assert ran == ["Paris"] and any(
        not isinstance(e, str) and e.data.get("content") == "sunny in Paris" for e in allowed
    )


async def test_the_reasoning_effort_setting_reaches_the_model_settings() -> None:
    seen: list[Any] = []

    async def answers(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        seen.append(info.model_settings)
        yield "ok"

    agent = from_pydantic_ai(
        Agent(FunctionModel(stream_function=answers)), model_settings={"temperature": 0.5}
    )
    async for _item in agent(make_ctx_with(Settings(reasoning_effort="high"), "think hard")):
        pass
    await run(agent, [user("as you like")])  # unset: only the agent's own settings

    assert seen[0] == {"openai_reasoning_effort": "high", "temperature": 0.5}
    assert seen[1] == {"temperature": 0.5}


def make_ctx_with(settings: Settings, text: str) -> RunContext:
    return support.make_ctx(settings, [user(text)])
