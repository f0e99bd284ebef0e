"""What an agent is: an async generator from a run's context to events.

    async def my_agent(ctx: RunContext) -> AsyncIterator[Event | str]:
        yield "Hello"                      # a bare string is reply text (a delta)
        yield events.tool_call("c1", "search", '{"q": "x"}')

The run writes every event into the stream, and stores the run in SQL as the
OpenAI messages its events make (runs/reply.py): per step, an assistant
message with the step's text and tool calls, then one `tool` message per call
(yield each `tool_result` with its call's id). An `events.error(message, code)`
ends the run with status `error` there and then: the generator is closed, and
what it streamed so far is stored. Raising does the same, with code
`agent_error`. Cancellation cancels the
generator's task, so an agent need not poll `ctx.cancelled()` unless it does
work that ignores task cancellation.

The history an agent gets fits the model's context budget already
(context/compaction.py); a model step that still finds it too long raises
`ContextTooLong`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from turnstream.config import Settings
from turnstream.events import Event
from turnstream.live.approvals import Decision
from turnstream.store.claude_sessions import ClaudeSessions
from turnstream.store.workspace import Workspace

AgentEvent = Event | str


@dataclass(frozen=True)
class RunContext:
    conversation_id: str
    user_id: str
    session_id: str
    message_id: str  # the id the run's last assistant message will be stored under
    message: str  # the user message this run answers
    history: list[dict[str, Any]]  # OpenAI chat messages, the user message last
    settings: Settings
    cancelled: Callable[[], bool]
    # The conversation's files, for tools (agents/workspace_tools.py); None outside a run.
    workspace: Workspace | None = None
    # A run going on after the user decided on its tool calls (docs/approvals.md): those
    # calls, in call order, which the tool loop answers first; empty otherwise.
    decided: tuple[Decision, ...] = ()
    # A tighter fit of a transcript, for the one retry after the model answered that its
    # input is too long (context/fit.py `tighter`); None: no retry.
    refit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None
    # The conversation's Claude Code session in SQL, for the Claude Agent SDK adapter
    # (agents/claude_sessions.py); None outside a run, or with TURNSTREAM_CLAUDE_SESSION_BYTES=0.
    claude_sessions: ClaudeSessions | None = None


class ContextTooLong(Exception):
    """The model refused the input as longer than its context window (HTTP 400
    `context_length_exceeded`); the message says so. The tool loop retries once with
    `RunContext.refit`, then ends the run with code `context_length_exceeded`."""


Agent = Callable[[RunContext], AsyncIterator[AgentEvent]]
