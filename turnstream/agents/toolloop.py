"""The tool loop: model step, its tool calls run concurrently, their results back, repeat.

    for each step, up to TURNSTREAM_MAX_STEPS model calls:
        the model step streams its events (delta, reasoning, usage) and says which
        tools it wants                                  -> tool_call, tool_call, …
        every call runs in its own task, at once, each under TURNSTREAM_TOOL_TIMEOUT_SECONDS
                                                        -> tool_result as each one finishes
        the assistant message (text + tool_calls) and one tool message per call are
        appended to the messages, and the model is asked again
    a step that asks for no tool ends the run; a last step that still does gets
    error results ("not run") and the run an `error` event, code `step_limit`.

Nothing a tool does crashes the run: an exception, a timeout, arguments that are
not JSON or fail validation, or a name no tool has, becomes a `tool_result` with
`isError` that the model reads and may act on. An unknown name never calls
anything. Output is capped at TURNSTREAM_TOOL_OUTPUT_CHARS characters.

A model step that raises `ContextTooLong` before its first event (the model
said its input is too long) is tried once more on `ctx.refit(messages)`; a
second refusal ends the run with code `context_length_exceeded`.

Stopping a run cancels the task that pulls this generator (or closes it): the
calls still running are cancelled and awaited before it goes on, so no task
outlives the run. A sync tool runs in a worker thread, which cannot be
interrupted: on a timeout or a stop its result is dropped, but the thread runs
to its end. Long-running tools should be async.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import to_json

from turnstream import events
from turnstream.agents.base import AgentEvent, ContextTooLong, RunContext
from turnstream.agents.tools import Tool, ToolArgumentsError, ToolContext
from turnstream.ids import uuid7

logger = logging.getLogger("turnstream.agents.tools")


@dataclass
class ToolCall:
    id: str = ""
    name: str = ""
    arguments: str = ""  # JSON text, as the model wrote it


@dataclass
class StepOutcome:
    """What a model step says besides its events: its text and the tool calls it asks for."""

    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)


@dataclass(frozen=True)
class ToolResult:
    content: str
    is_error: bool = False


# One model call: given the messages so far, stream events and fill in the outcome.
ModelStep = Callable[[list[dict[str, Any]], StepOutcome], AsyncGenerator[AgentEvent, None]]


async def tool_loop(
    ctx: RunContext, tools: Mapping[str, Tool], model_step: ModelStep
) -> AsyncGenerator[AgentEvent, None]:
    """Run `model_step` and the tools it calls until it answers without a call."""
    messages = list(ctx.history)
    limit = ctx.settings.max_steps
    seen: set[str] = set()
    for step in range(1, limit + 1):
        outcome = StepOutcome()
        try:
            async for event in _step(ctx, model_step, messages, outcome):
                yield event
        except ContextTooLong as exc:
            yield events.error(str(exc), "context_length_exceeded")
            return
        if not outcome.calls:
            return
        _name_calls(outcome.calls, seen)
        for call in outcome.calls:
            yield events.tool_call(call.id, call.name, call.arguments)
        results: dict[str, ToolResult] = {}
        if step < limit:
            async with aclosing(run_calls(ctx, tools, outcome.calls)) as running:
                async for call, result in running:
                    results[call.id] = result
                    yield events.tool_result(call.id, result.content, is_error=result.is_error)
        else:
            for call in outcome.calls:
                results[call.id] = ToolResult(_not_run(limit), is_error=True)
                yield events.tool_result(call.id, results[call.id].content, is_error=True)
        messages.append(assistant_message(outcome))
        messages.extend(tool_message(call.id, results[call.id]) for call in outcome.calls)
    message = (
        f"The agent stopped after {limit} model calls (TURNSTREAM_MAX_STEPS) while it "
        "still asked for tools; the reply may be unfinished"
    )
    yield events.error(message, "step_limit")


async def _step(
    ctx: RunContext, model_step: ModelStep, messages: list[dict[str, Any]], outcome: StepOutcome
) -> AsyncGenerator[AgentEvent, None]:
    """One model step; refused as too long before any event, once more on a tighter fit
    (`messages` is replaced in place, so the later steps build on it)."""
    for attempt in (1, 2):
        produced = False
        try:
            async with aclosing(model_step(messages, outcome)) as stream:
                async for event in stream:
                    produced = True
                    yield event
            return
        except ContextTooLong:
            if attempt == 2 or produced or ctx.refit is None:
                raise
            logger.warning(
                "run %s: the model found its input too long; retrying tighter", ctx.session_id
            )
            messages[:] = ctx.refit(messages)


def _name_calls(calls: list[ToolCall], seen: set[str]) -> None:
    """Give every call an id no other call of the run has (some servers send none)."""
    for call in calls:
        if not call.id or call.id in seen:
            call.id = f"call_{uuid7().replace('-', '')[-24:]}"
        seen.add(call.id)


def assistant_message(outcome: StepOutcome) -> dict[str, Any]:
    """The assistant turn with its tool calls, in the OpenAI chat format."""
    return {
        "role": "assistant",
        "content": outcome.text or None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in outcome.calls
        ],
    }


def tool_message(call_id: str, result: ToolResult) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": result.content}


async def run_calls(
    ctx: RunContext, tools: Mapping[str, Tool], calls: Sequence[ToolCall]
) -> AsyncGenerator[tuple[ToolCall, ToolResult], None]:
    """Run every call at once; yield each with its result as it finishes.

    The calls still running when this generator is cancelled or closed are
    cancelled and awaited: none outlives it.
    """
    tasks = {asyncio.create_task(call_tool(ctx, tools, call)): call for call in calls}
    pending = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in (t for t in tasks if t in done):  # in call order
                yield tasks[task], task.result()
    finally:
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)


async def call_tool(ctx: RunContext, tools: Mapping[str, Tool], call: ToolCall) -> ToolResult:
    """One call's result, capped; every failure of the tool or its arguments is an error result."""
    limit = ctx.settings.tool_output_chars
    try:
        return ToolResult(cap(await _invoke(ctx, tools, call), limit))
    except _Failed as failed:
        return ToolResult(cap(str(failed), limit), is_error=True)


class _Failed(Exception):
    """A call that gives the model an error result; the message is that result."""


async def _invoke(ctx: RunContext, tools: Mapping[str, Tool], call: ToolCall) -> str:
    """The tool's output as text; `_Failed` with the error result when there is none."""
    tool = tools.get(call.name)
    if tool is None:
        known = ", ".join(sorted(tools)) or "none"
        raise _Failed(f"Unknown tool {call.name!r}; the tools are: {known}")
    try:
        kwargs = tool.parse(call.arguments)
    except ToolArgumentsError as exc:
        raise _Failed(str(exc)) from None
    if tool.context_parameter is not None:
        kwargs[tool.context_parameter] = ToolContext(
            user_id=ctx.user_id,
            conversation_id=ctx.conversation_id,
            session_id=ctx.session_id,
            tool_call_id=call.id,
            workspace=ctx.workspace,
            settings=ctx.settings,
        )
    timeout = tool.timeout(ctx.settings) if tool.timeout else ctx.settings.tool_timeout_seconds
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            return await _run(tool, kwargs)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # a stop, or the run's end: not the tool's doing
        raise _Failed(f"{call.name} failed: it was cancelled") from None
    except TimeoutError as exc:
        if deadline.expired():
            raise _Failed(f"{call.name} timed out after {timeout:g} s") from None
        raise _Failed(_failure(call, exc)) from None
    except Exception as exc:
        raise _Failed(_failure(call, exc)) from None


async def _run(tool: Tool, kwargs: dict[str, Any]) -> str:
    """Call the tool (a sync one in a worker thread); its return value as text (JSON)."""
    if inspect.iscoroutinefunction(tool.function):
        value = await tool.function(**kwargs)
    else:
        value = await asyncio.to_thread(tool.function, **kwargs)
        if inspect.isawaitable(value):
            value = await value
    return value if isinstance(value, str) else to_json(value, fallback=str).decode()


def _failure(call: ToolCall, exc: BaseException) -> str:
    logger.info("tool %s (call %s) failed", call.name, call.id, exc_info=exc)
    return f"{call.name} failed: {type(exc).__name__}: {exc}"


def cap(content: str, limit: int) -> str:
    """`content`, cut to at most `limit` characters with a note saying so."""
    if len(content) <= limit:
        return content
    note = f"\n[truncated: the output had {len(content)} characters]"
    keep = limit - len(note)
    return content[:keep] + note if keep > 0 else content[:limit]


def _not_run(limit: int) -> str:
    return f"Not run: the run reached its limit of {limit} model calls"
