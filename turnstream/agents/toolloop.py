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

Before any call runs, the policy judges it (agents/policy.py): a denied call gets
an error result with the reason; an asked one an `approval_request`, and once the
step's other calls are done the loop ends there: the run waits for the user with
no worker (docs/approvals.md). When it goes on, `ctx.decided` holds those calls:
the approved ones run, the denied ones get an error result, and the loop goes on.

Nothing a tool does crashes the run: every failure of a call is its error result
(agents/calls.py). Stopping a run cancels the task that pulls this generator (or
closes it): the calls still running are cancelled and awaited before it goes on,
so no task outlives the run.

A model step that raises `ContextTooLong` before its first event (the model
said its input is too long) is tried once more on `ctx.refit(messages)`; a
second refusal ends the run with code `context_length_exceeded`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from turnstream import events
from turnstream.agents.base import AgentEvent, ContextTooLong, RunContext
from turnstream.agents.calls import ToolCall, ToolResult, cap, run_calls
from turnstream.agents.policy import ALLOW, Verdict, judge
from turnstream.agents.tools import Tool, ToolArgumentsError
from turnstream.clock import now_ms
from turnstream.events import Event
from turnstream.ids import uuid7

logger = logging.getLogger("turnstream.agents.tools")

__all__ = ["ModelStep", "StepOutcome", "ToolCall", "ToolResult", "tool_loop"]


@dataclass
class StepOutcome:
    """What a model step says besides its events: its text and the tool calls it asks for."""

    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)


# One model call: given the messages so far, stream events and fill in the outcome.
ModelStep = Callable[[list[dict[str, Any]], StepOutcome], AsyncGenerator[AgentEvent, None]]


async def tool_loop(
    ctx: RunContext, tools: Mapping[str, Tool], model_step: ModelStep
) -> AsyncGenerator[AgentEvent, None]:
    """Run `model_step` and the tools it calls until it answers without a call."""
    messages = list(ctx.history)
    limit = ctx.settings.max_steps
    seen: set[str] = set()
    if ctx.decided:  # the run goes on after the user's decisions: those calls first
        calls = [ToolCall(d.call_id, d.name, d.arguments) for d in ctx.decided]
        seen.update(call.id for call in calls)
        results: dict[str, ToolResult] = {}
        async with aclosing(_decided_calls(ctx, tools)) as answering:
            async for call, result in answering:
                results[call.id] = result
                yield events.tool_result(call.id, result.content, is_error=result.is_error)
        messages.append(assistant_message(StepOutcome(calls=calls)))
        messages.extend(tool_message(call.id, results[call.id]) for call in calls)
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
        results = {}
        if step < limit:
            asked = False
            async with aclosing(_judged_calls(ctx, tools, outcome.calls)) as running:
                async for call, answer in running:
                    if isinstance(answer, Event):  # an `approval_request`: the call waits
                        asked = True
                        yield answer
                        continue
                    results[call.id] = answer
                    yield events.tool_result(call.id, answer.content, is_error=answer.is_error)
            if asked:
                return  # the run waits for the user, with no worker (docs/approvals.md)
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


async def _judged_calls(
    ctx: RunContext, tools: Mapping[str, Tool], calls: Sequence[ToolCall]
) -> AsyncGenerator[tuple[ToolCall, ToolResult | Event], None]:
    """The step's calls under the policy (agents/policy.py): a denied call's error result and
    an asked call's `approval_request` first, in call order; then the allowed calls run."""
    allowed = []
    for call in calls:
        verdict = await _verdict(ctx, tools, call)
        if verdict.action == "deny":
            yield call, ToolResult(cap(verdict.reason, ctx.settings.tool_output_chars), True)
        elif verdict.action == "ask":
            expires_at = now_ms() + ctx.settings.approval_ttl_seconds * 1000
            yield (
                call,
                events.approval_request(uuid7(), call.id, call.name, call.arguments, expires_at),
            )
        else:
            allowed.append(call)
    async with aclosing(run_calls(ctx, tools, allowed)) as running:
        async for item in running:
            yield item


async def _verdict(ctx: RunContext, tools: Mapping[str, Tool], call: ToolCall) -> Verdict:
    """The policy's verdict; a call that cannot run anyway is let through to its error."""
    tool = tools.get(call.name)
    if tool is None:
        return ALLOW
    try:
        arguments = tool.parse(call.arguments)
    except ToolArgumentsError:
        return ALLOW
    return await judge(ctx, call.name, arguments)


async def _decided_calls(
    ctx: RunContext, tools: Mapping[str, Tool]
) -> AsyncGenerator[tuple[ToolCall, ToolResult], None]:
    """The calls the user decided on: a denied one's error result, then the approved ones run."""
    approved = []
    for d in ctx.decided:
        call = ToolCall(d.call_id, d.name, d.arguments)
        if d.approved:
            approved.append(call)
        else:
            yield call, ToolResult(_denied(d.reason), is_error=True)
    async with aclosing(run_calls(ctx, tools, approved)) as running:
        async for item in running:
            yield item


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


def _denied(reason: str) -> str:
    return "Not run: the user denied this call" + (f" ({reason})." if reason else ".")


def _not_run(limit: int) -> str:
    return f"Not run: the run reached its limit of {limit} model calls"
