"""The LangGraph adapter, offline: LangChain's fake chat model in a LangGraph graph.

The graph is the usual agent loop built by hand (a model node, LangGraph's
`ToolNode`, `tools_condition`). The model is LangChain's `GenericFakeChatModel`,
taught to stream tool calls as providers do: in `tool_call_chunks` whose
arguments come in pieces.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.tools import BaseTool, tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from turnstream.agents.langgraph import from_langgraph
from turnstream.events import EventType

from .adapter_support import (
    cancel_mid_stream,
    first_delta,
    kinds,
    of_type,
    run,
    stored_history,
    text_of,
    user,
)


class FakeModel(GenericFakeChatModel):
    """Streams each scripted message word by word, then its tool calls in fragments and
    its usage; keeps the messages it was given."""

    seen: list[list[BaseMessage]] = []

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> FakeModel:
        return self

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        self.seen.append(list(messages))
        message = next(self.messages)
        assert isinstance(message, AIMessage)
        pieces: list[AIMessageChunk] = []
        for key, value in message.additional_kwargs.items():
            pieces.append(AIMessageChunk(content="", additional_kwargs={key: value}))
        words = str(message.content).split(" ") if message.content else []
        pieces += [AIMessageChunk(content=(" " if i else "") + w) for i, w in enumerate(words)]
        for index, call in enumerate(message.tool_calls):
            arguments = json.dumps(call["args"])
            half = len(arguments) // 2
            first = {
                "name": call["name"],
                "args": arguments[:half],
                "id": call["id"],
                "index": index,
            }
            rest = {"name": None, "args": arguments[half:], "id": None, "index": index}
            pieces += [AIMessageChunk(content="", tool_call_chunks=[c]) for c in (first, rest)]
        if message.usage_metadata:
            pieces.append(AIMessageChunk(content="", usage_metadata=message.usage_metadata))
        for piece in pieces:
            piece.id = message.id
            yield ChatGenerationChunk(message=piece)


class StallingModel(GenericFakeChatModel):
    """Streams one word, then waits for ever; `closed` is set once its stream is closed."""

    closed: asyncio.Event

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        try:
            yield ChatGenerationChunk(message=AIMessageChunk(content="Once upon"))
            await asyncio.sleep(3600)
            yield ChatGenerationChunk(message=AIMessageChunk(content=" a time"))
        finally:
            self.closed.set()


@tool
async def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@tool
async def forecast(city: str) -> str:
    """Tomorrow's weather in a city."""
    raise ValueError(f"no forecast for {city}")


def agent_graph(model: GenericFakeChatModel, tools: list[BaseTool]) -> Any:
    async def call_model(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", call_model)
    graph.add_node("tools", ToolNode(tools, handle_tool_errors=True))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition)
    graph.add_edge("tools", "model")
    return graph.compile()


def calls(name: str, call_id: str, **args: Any) -> list[dict[str, Any]]:
    return [{"name": name, "args": args, "id": call_id, "type": "tool_call"}]


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "input_tokens": prompt,
        "output_tokens": completion,
        "total_tokens": prompt + completion,
    }


def weather_script() -> list[AIMessage]:
    return [
        AIMessage(
            content="Let me check.",
            tool_calls=calls("weather", "call_1", city="Paris"),
            usage_metadata=usage(20, 7),
            additional_kwargs={"reasoning_content": "The user wants the weather."},
        ),
        AIMessage(content="It is sunny in Paris.", usage_metadata=usage(30, 6)),
    ]


async def test_text_reply_streams_deltas_that_make_the_text() -> None:
    model = FakeModel(messages=iter([AIMessage(content="Hello there, nice to meet you")]))
    events = await run(from_langgraph(agent_graph(model, [weather])), [user("hi")])

    assert text_of(events) == "Hello there, nice to meet you"
    assert len(of_type(events, EventType.DELTA)) == 6
    assert kinds(events) == [EventType.DELTA]  # the fake reported no usage


async def test_tool_call_then_result_with_the_same_id_and_the_answer_uses_it() -> None:
    model = FakeModel(messages=iter(weather_script()))
    events = await run(from_langgraph(agent_graph(model, [weather])), [user("Weather?")])

    assert kinds(events) == [
        EventType.REASONING,
        EventType.DELTA,
        EventType.TOOL_CALL,
        EventType.USAGE,
        EventType.TOOL_RESULT,
        EventType.DELTA,
        EventType.USAGE,
    ]
    [call] = of_type(events, EventType.TOOL_CALL)
    [result] = of_type(events, EventType.TOOL_RESULT)
    assert (call.data["id"], call.data["name"]) == ("call_1", "weather")
    assert json.loads(call.data["arguments"]) == {"city": "Paris"}  # both fragments
    assert result.data == {"id": "call_1", "content": "sunny in Paris", "isError": False}
    assert text_of(events) == "Let me check.It is sunny in Paris."
    [reasoning] = of_type(events, EventType.REASONING)
    assert reasoning.data["text"] == "The user wants the weather."
    assert [u.data for u in of_type(events, EventType.USAGE)] == [
        {"prompt_tokens": 20, "completion_tokens": 7},
        {"prompt_tokens": 30, "completion_tokens": 6},
    ]


async def test_a_failing_tool_is_a_tool_result_marked_as_an_error() -> None:
    model = FakeModel(
        messages=iter(
            [
                AIMessage(content="", tool_calls=calls("forecast", "call_9", city="Paris")),
                AIMessage(content="No forecast, sorry."),
            ]
        )
    )
    events = await run(from_langgraph(agent_graph(model, [forecast])), [user("Tomorrow?")])

    [call] = of_type(events, EventType.TOOL_CALL)
    [result] = of_type(events, EventType.TOOL_RESULT)
    assert call.data["id"] == result.data["id"] == "call_9"
    assert result.data["isError"] is True
    assert "no forecast for Paris" in result.data["content"]
    assert text_of(events) == "No forecast, sorry."


async def test_second_turn_gives_the_model_the_first_turns_tool_call_result_and_text() -> None:
    script = [
        *weather_script(),
        AIMessage(content="", tool_calls=calls("weather", "call_2", city="Lyon")),
        AIMessage(content="Sunny in Lyon too."),
    ]
    model = FakeModel(messages=iter(script))
    agent = from_langgraph(agent_graph(model, [weather]))
    first = await run(agent, [user("Weather in Paris?")])
    history = stored_history("Weather in Paris?", first)
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]

    second = await run(agent, [*history, user("And Lyon?")])

    sent = model.seen[2]  # what the model got for turn 2's first request
    assert [type(m) for m in sent] == [
        HumanMessage,
        AIMessage,
        ToolMessage,
        AIMessage,
        HumanMessage,
    ]
    assert sent[0].content == "Weather in Paris?"
    assert sent[1].content == "Let me check."
    assert isinstance(sent[1], AIMessage)
    assert sent[1].tool_calls == calls("weather", "call_1", city="Paris")
    assert isinstance(sent[2], ToolMessage)
    assert (sent[2].tool_call_id, sent[2].content) == ("call_1", "sunny in Paris")
    assert sent[3].content == "It is sunny in Paris."
    assert sent[4].content == "And Lyon?"
    assert text_of(second) == "Sunny in Lyon too."
    assert [r.data["content"] for r in of_type(second, EventType.TOOL_RESULT)] == ["sunny in Lyon"]


async def test_cancelling_the_run_mid_stream_closes_the_model_stream() -> None:
    model = StallingModel(messages=iter([]), closed=asyncio.Event())
    agent = from_langgraph(agent_graph(model, [weather]))
    seen = await cancel_mid_stream(agent, [user("a story")], first_delta)

    assert text_of(seen) == "Once upon"
    assert model.closed.is_set()
