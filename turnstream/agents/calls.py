"""One tool call: its arguments checked, its deadline, its failures as results, its output capped.

Nothing a tool does crashes the run: an exception, a timeout, arguments that are
not JSON or fail validation, or a name no tool has, becomes a result with
`is_error` that the model reads and may act on. An unknown name never calls
anything. Output is capped at TURNSTREAM_TOOL_OUTPUT_CHARS characters.

A sync tool runs in a worker thread, which cannot be interrupted: on a timeout
or a stop its result is dropped, but the thread runs to its end. Long-running
tools should be async.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic_core import to_json

from turnstream.agents.base import RunContext
from turnstream.agents.tools import Tool, ToolArgumentsError, ToolContext

logger = logging.getLogger("turnstream.agents.tools")


@dataclass
class ToolCall:
    id: str = ""
    name: str = ""
    arguments: str = ""  # JSON text, as the model wrote it


@dataclass(frozen=True)
class ToolResult:
    content: str
    is_error: bool = False


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
