"""Run a PydanticAI agent as a turnstream agent (`pip install 'turnstream[pydantic-ai]'`).

    # myapp/chat.py, then TURNSTREAM_AGENT=myapp.chat:agent
    from pydantic_ai import Agent
    from turnstream.agents.pydantic_ai import from_pydantic_ai

    agent = from_pydantic_ai(Agent("openai:gpt-4o", instructions="Be brief.", tools=[...]))

The conversation's history (OpenAI chat messages) becomes PydanticAI's
`message_history`, prior tool calls and their results included; the new user
message is the prompt. The run is streamed with `Agent.run_stream_events`: text
and thinking deltas become `delta` and `reasoning`, each function tool call a
`tool_call` once its arguments are complete, its return (or the retry prompt a
`ModelRetry` sends back, as an error) a `tool_result`, and the run's usage one
`usage` at the end. A structured `output_type` is written as JSON text.
Provider-side tools (web search run by the model's API) are not shown: their
calls come with no result of turnstream's kind, and their effect is in the text.

PydanticAI sends an agent's `system_prompt` only when it gets no message
history, so from a conversation's second turn on it would be missing: give the
agent `instructions`, which it sends on every request.

Cancelling the run cancels the agent's task: leaving `run_stream_events`
cancels PydanticAI's background run and waits for it to end.

The tool policy (agents/policy.py) wraps the agent's toolsets for the run: an
allowed call runs, any other returns why it did not (a denial's reason, or that
this agent cannot wait for the user's approval) as the tool's result, so that
the model reads it and goes on (docs/approvals.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from pydantic_ai import AgentRunResultEvent
from pydantic_ai import RunContext as ToolRunContext
from pydantic_ai.agent import AbstractAgent
from pydantic_ai.messages import (
    AgentStreamEvent,
    FunctionToolCallEvent,
    FunctionToolResultEvent,
    ModelMessage,
    ModelRequest,
    ModelRequestPart,
    ModelResponse,
    ModelResponsePart,
    PartDeltaEvent,
    PartStartEvent,
    SystemPromptPart,
    TextPart,
    TextPartDelta,
    ThinkingPart,
    ThinkingPartDelta,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.toolsets import WrapperToolset
from pydantic_ai.toolsets.abstract import ToolsetTool

from turnstream import events
from turnstream.agents.base import Agent, AgentEvent, RunContext
from turnstream.agents.policy import CANNOT_ASK, has_policy, judge

__all__ = ["from_pydantic_ai"]

_ANY_JSON = TypeAdapter[Any](Any)


def from_pydantic_ai(
    agent: AbstractAgent[Any, Any],
    *,
    deps: Callable[[RunContext], Any] | None = None,
    **run_options: Any,
) -> Agent:
    """A turnstream agent that runs `agent` on each user message.

    `deps(ctx)` builds the run's dependencies from the turnstream run context
    (the user id, the conversation id, ...); `run_options` go to
    `run_stream_events` as they are (`model_settings`, `usage_limits`, ...), with
    TURNSTREAM_REASONING_EFFORT as `openai_reasoning_effort` unless they set it.
    """

    async def run(ctx: RunContext) -> AsyncIterator[AgentEvent]:
        prompt, history = _split(ctx)
        options = dict(run_options)
        if deps is not None:
            options["deps"] = deps(ctx)
        effort = ctx.settings.reasoning_effort
        if effort is not None:  # for OpenAI models; other providers ignore the key
            options["model_settings"] = {"openai_reasoning_effort": effort} | dict(
                options.get("model_settings") or {}
            )
        with _under_policy(agent, ctx):
            async with agent.run_stream_events(prompt, message_history=history, **options) as s:
                async for event in s:
                    if isinstance(event, AgentRunResultEvent):
                        for item in _finish(event):
                            yield item
                    else:
                        for item in _translate(event):
                            yield item

    return run


def _under_policy(agent: AbstractAgent[Any, Any], ctx: RunContext) -> AbstractContextManager[None]:
    """The agent's toolsets under the tool policy for this run (none to judge: as they are)."""
    if not has_policy(ctx.settings):
        return nullcontext()
    judged = [_Judged(toolset, ctx) for toolset in agent.toolsets]
    return agent.override(toolsets=judged, tools=[])  # its own tools are in `toolsets` too


@dataclass
class _Judged(WrapperToolset[Any]):
    """A toolset of the agent's under turnstream's tool policy, for one run."""

    turn: RunContext

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: ToolRunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        verdict = await judge(self.turn, name, tool_args)
        if verdict.action == "allow":
            return await super().call_tool(name, tool_args, ctx, tool)
        return verdict.reason or CANNOT_ASK


def _split(ctx: RunContext) -> tuple[str, list[ModelMessage]]:
    """The prompt (the new user message, last in the history) and the history before it."""
    history = ctx.history
    if history and history[-1].get("role") == "user":
        return _text(history[-1].get("content")), to_pydantic_ai(history[:-1])
    return ctx.message, to_pydantic_ai(history)


def _translate(event: AgentStreamEvent) -> Iterator[AgentEvent]:
    if isinstance(event, PartStartEvent):
        yield from _part_start(event.part)
    elif isinstance(event, PartDeltaEvent):
        delta = event.delta
        if isinstance(delta, TextPartDelta) and delta.content_delta:
            yield events.delta(delta.content_delta)
        elif isinstance(delta, ThinkingPartDelta) and delta.content_delta:
            yield events.reasoning(delta.content_delta)
    elif isinstance(event, FunctionToolCallEvent):
        part = event.part
        yield events.tool_call(part.tool_call_id, part.tool_name, part.args_as_json_str())
    elif isinstance(event, FunctionToolResultEvent):
        # A failed, denied or retried call (`ModelRetry`) is an error; its content says why.
        result = event.part
        is_error = result.outcome != "success"
        yield events.tool_result(
            result.tool_call_id, result.model_response_str(), is_error=is_error
        )


def _part_start(part: ModelResponsePart) -> Iterator[AgentEvent]:
    """A new part may already hold some text (later text comes as deltas)."""
    if isinstance(part, TextPart) and part.content:
        yield events.delta(part.content)
    elif isinstance(part, ThinkingPart) and part.content:
        yield events.reasoning(part.content)


def _finish(event: AgentRunResultEvent[Any]) -> Iterator[AgentEvent]:
    result = event.result
    if not isinstance(result.output, str):  # a structured output_type: it was no text part
        yield events.delta(_ANY_JSON.dump_json(result.output).decode())
    usage = result.usage
    if usage.input_tokens or usage.output_tokens:
        yield events.usage(usage.input_tokens, usage.output_tokens)


def to_pydantic_ai(history: list[dict[str, Any]]) -> list[ModelMessage]:
    """OpenAI chat messages as PydanticAI messages.

    An assistant message becomes a `ModelResponse` of its text and tool calls;
    system, user and tool messages become parts of a `ModelRequest`, consecutive
    ones sharing one request as PydanticAI itself builds them.
    """
    out: list[ModelMessage] = []
    tool_names: dict[str, str] = {}  # a tool message names only the call's id
    for message in history:
        if message.get("role") == "assistant":
            response = _response(message, tool_names)
            if response.parts:
                out.append(response)
            continue
        part = _request_part(message, tool_names)
        if part is None:
            continue
        previous = out[-1] if out else None
        if isinstance(previous, ModelRequest):
            out[-1] = ModelRequest(parts=[*previous.parts, part])
        else:
            out.append(ModelRequest(parts=[part]))
    return out


def _response(message: dict[str, Any], tool_names: dict[str, str]) -> ModelResponse:
    parts: list[ModelResponsePart] = []
    text = _text(message.get("content"))
    if text:
        parts.append(TextPart(text))
    for call in message.get("tool_calls") or ():
        name = call["function"]["name"]
        tool_names[call["id"]] = name
        arguments = call["function"].get("arguments") or "{}"
        parts.append(ToolCallPart(name, arguments, tool_call_id=call["id"]))
    return ModelResponse(parts=parts)


def _request_part(message: dict[str, Any], tool_names: dict[str, str]) -> ModelRequestPart | None:
    role = message.get("role")
    text = _text(message.get("content"))
    if role == "system" or role == "developer":
        return SystemPromptPart(text)
    if role == "user":
        return UserPromptPart(text)
    if role == "tool":
        call_id = message.get("tool_call_id") or ""
        return ToolReturnPart(tool_names.get(call_id, ""), text, tool_call_id=call_id)
    return None


def _text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""
