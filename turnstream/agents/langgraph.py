"""Run a LangGraph graph as a turnstream agent (`pip install 'turnstream[langgraph]'`).

    # myapp/chat.py, then TURNSTREAM_AGENT=myapp.chat:agent
    from langchain.agents import create_agent
    from turnstream.agents.langgraph import from_langgraph

    agent = from_langgraph(create_agent("openai:gpt-4o", tools=[...]))

Any compiled graph whose state keeps the conversation under `messages` (a
`MessagesState`, `create_agent`, a hand-built `StateGraph`) will do. The
conversation's history (OpenAI chat messages) is converted by LangChain's own
`convert_to_messages` and given as the graph's input, so prior tool calls and
their results reach the model; the graph needs no checkpointer, since turnstream
keeps the history. The run is streamed with `astream(stream_mode="messages")`:
text and reasoning blocks of each model chunk become `delta` and `reasoning`,
the tool calls of a model message become `tool_call`s once the message is
complete, each `ToolMessage` a `tool_result` (an error when its status is
`error`), and a model message's `usage_metadata` a `usage`.

Cancelling the run cancels the agent's task; the graph's stream is closed with it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import aclosing
from typing import Any, cast

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ToolMessage,
    convert_to_messages,
)
from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel
from langgraph.types import StreamPart

from turnstream import events
from turnstream.agents.base import Agent, AgentEvent, RunContext

__all__ = ["from_langgraph"]


def from_langgraph(
    graph: Pregel[Any, Any, Any, Any],
    *,
    context: Callable[[RunContext], Any] | None = None,
    config: RunnableConfig | None = None,
    **stream_options: Any,
) -> Agent:
    """A turnstream agent that runs `graph` on each user message.

    `context(ctx)` builds the graph's runtime context from the turnstream run
    context (the user id, the conversation id, ...); `config` and
    `stream_options` go to `astream` as they are (`subgraphs=True` also streams
    what subgraphs' models say).
    """

    async def run(ctx: RunContext) -> AsyncIterator[AgentEvent]:
        graph_input = {"messages": convert_to_messages(ctx.history)}
        options = dict(stream_options)
        if context is not None:
            options["context"] = context(ctx)
        stream = graph.astream(graph_input, config, stream_mode="messages", version="v2", **options)
        translator = _Translator()
        # astream is an async generator: close it now if we stop early, not when it is collected.
        async with aclosing(cast("AsyncGenerator[StreamPart[Any, Any], None]", stream)) as parts:
            async for part in parts:
                if part["type"] == "messages":
                    message, _metadata = part["data"]
                    for item in translator.feed(message):
                        yield item
        for item in translator.flush():
            yield item

    return run


class _Translator:
    """Turns the messages LangGraph streams into turnstream events.

    A streamed model message comes as chunks: their text is passed on as it
    arrives, while their tool-call fragments add up until the chunk marked
    `last` (or the next whole message) completes the message.
    """

    def __init__(self) -> None:
        self._pending: AIMessageChunk | None = None

    def feed(self, message: BaseMessage) -> Iterator[AgentEvent]:
        if isinstance(message, AIMessageChunk):
            yield from _content(message)
            self._pending = message if self._pending is None else self._pending + message
            if message.chunk_position == "last":
                yield from self.flush()
            return
        yield from self.flush()
        if isinstance(message, AIMessage):  # a model message that was not streamed
            yield from _content(message)
            yield from _calls_and_usage(message)
        elif isinstance(message, ToolMessage):
            is_error = message.status == "error"
            yield events.tool_result(message.tool_call_id, str(message.text), is_error=is_error)

    def flush(self) -> Iterator[AgentEvent]:
        pending, self._pending = self._pending, None
        if pending is not None:
            yield from _calls_and_usage(pending)


def _content(message: AIMessage) -> Iterator[AgentEvent]:
    """Text and reasoning, in LangChain's standard blocks whatever the provider's format."""
    for block in message.content_blocks:
        if block["type"] == "text" and block["text"]:
            yield events.delta(block["text"])
        elif block["type"] == "reasoning" and block.get("reasoning"):
            yield events.reasoning(block["reasoning"])


def _calls_and_usage(message: AIMessage) -> Iterator[AgentEvent]:
    for call in message.tool_calls:
        arguments = json.dumps(call["args"], ensure_ascii=False)
        yield events.tool_call(call["id"] or "", call["name"], arguments)
    usage = message.usage_metadata
    if usage is not None:
        yield events.usage(usage["input_tokens"], usage["output_tokens"])
