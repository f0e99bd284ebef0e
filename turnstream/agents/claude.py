"""Run a Claude Agent SDK agent as a turnstream agent (`pip install 'turnstream[claude]'`).

    # myapp/chat.py, then TURNSTREAM_AGENT=myapp.chat:agent
    from claude_agent_sdk import ClaudeAgentOptions
    from turnstream.agents.claude import from_claude

    agent = from_claude(ClaudeAgentOptions(allowed_tools=["WebSearch"], max_turns=8))

Each run is one `claude_agent_sdk.query()`: the SDK starts the Claude Code
command-line program bundled in its wheel, which needs `ANTHROPIC_API_KEY` (or
another of its ways to log in) and runs its tools itself. The stream comes
with partial messages on: text and thinking deltas become `delta` and
`reasoning`, each `tool_use` block of an assistant message a `tool_call` (its
input is complete there), each `tool_result` block Claude Code sends back a
`tool_result`, the result message's usage one `usage`, and a result that is an
error (too many turns, over budget, an API error) an `error`. Messages of
subagents (those with a `parent_tool_use_id`) are not shown, nor the tools the
API runs itself (`server_tool_use` blocks): no result of turnstream's kind
comes for them, and their effect is in the text.

Each conversation keeps its own Claude Code session in turnstream's database
(agents/claude_sessions.py): a turn resumes it on whichever worker runs it, with
the earlier turns' tool calls and results as Claude Code's own blocks, and sends
only the new user message. A conversation with no such session (its first turn,
or one that is missing, invalid, past TURNSTREAM_CLAUDE_SESSION_BYTES or not
ending where the conversation does) gets the earlier turns as a transcript in
the prompt instead (the OpenAI chat messages of the fitted history, tool calls
and results included), ahead of the new message, and a new session starts;
so does every turn with a custom `transport`.

Cancelling the run cancels the agent's task: the SDK then stops the program
(or closes the transport) before the cancellation goes on.

The tool policy (agents/policy.py: TURNSTREAM_TOOL_DENY, _APPROVAL, _POLICY)
becomes Claude Code's permission callback (`can_use_tool`) unless the options
bring their own: allowed calls run, denied ones are refused with the reason.
Claude Code asks only about calls its own rules do not allow already (a tool in
`allowed_tools` is never asked about), and it cannot wait for a person: a call
the policy would ask about is refused, saying so (docs/approvals.md).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import aclosing
from typing import Any, cast

from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    Message,
    PermissionResultAllow,
    PermissionResultDeny,
    ResultMessage,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    Transport,
    UserMessage,
    query,
)
from claude_agent_sdk.types import StreamEvent, ToolPermissionContext

from turnstream import events
from turnstream.agents import claude_sessions
from turnstream.agents.base import Agent, AgentEvent, RunContext
from turnstream.agents.policy import CANNOT_ASK, has_policy, judge

__all__ = ["from_claude"]


def from_claude(
    options: ClaudeAgentOptions | Callable[[RunContext], ClaudeAgentOptions] | None = None,
    *,
    transport: Callable[[RunContext], Transport] | None = None,
) -> Agent:
    """A turnstream agent that answers each user message with Claude Code.

    `options` may be a function of the turnstream run context, for example to
    give each user their own `cwd`. `transport(ctx)` replaces the program with
    a custom `Transport` (a remote Claude Code, or a test double); the SDK then
    applies none of the options that become command-line flags.
    """

    async def run(ctx: RunContext) -> AsyncIterator[AgentEvent]:
        chosen = options(ctx) if callable(options) else options or ClaudeAgentOptions()
        chosen = dataclasses.replace(chosen, include_partial_messages=True)
        chosen = _with_policy(ctx, chosen)
        turn = await claude_sessions.prepare(
            ctx,
            chosen,
            custom_transport=transport is not None,
            new_message=new_message,
            transcript=prompt_of,
        )
        stream = query(
            prompt=turn.prompt,
            options=turn.options,
            transport=transport(ctx) if transport is not None else None,
        )
        translator = _Translator()
        # query() is an async generator: close it now if we stop early, not when it is collected.
        async with aclosing(cast("AsyncGenerator[Message, None]", stream)) as messages:
            async for message in messages:
                if turn.mirror is not None:
                    await turn.mirror.seen(message)
                for item in translator.feed(message):
                    yield item

    return run


def _with_policy(ctx: RunContext, options: ClaudeAgentOptions) -> ClaudeAgentOptions:
    """The options with turnstream's tool policy as the permission callback, if one is set."""
    if options.can_use_tool is not None or not has_policy(ctx.settings):
        return options

    async def can_use_tool(
        name: str, arguments: dict[str, Any], _context: ToolPermissionContext
    ) -> PermissionResultAllow | PermissionResultDeny:
        verdict = await judge(ctx, name, arguments)
        if verdict.action == "allow":
            return PermissionResultAllow()
        return PermissionResultDeny(message=verdict.reason or CANNOT_ASK)

    return dataclasses.replace(options, can_use_tool=can_use_tool)


class _Translator:
    """Turns the SDK's messages into turnstream events.

    Text arrives twice: as stream events while the model writes, then in the
    whole assistant message. It is taken from the stream events, and from the
    assistant message only when none came for it (a message the program makes
    up itself, such as an error notice).
    """

    def __init__(self) -> None:
        self._streamed: set[str] = set()  # ids of the model messages seen as stream events

    def feed(self, message: Message) -> Iterator[AgentEvent]:
        if _from_subagent(message):
            return
        if isinstance(message, StreamEvent):
            yield from self._stream_event(message.event)
        elif isinstance(message, AssistantMessage):
            yield from self._assistant(message)
        elif isinstance(message, UserMessage):  # what Claude Code's tools returned
            yield from _tool_results(message)
        elif isinstance(message, ResultMessage):
            yield from _result(message)

    def _stream_event(self, event: dict[str, Any]) -> Iterator[AgentEvent]:
        kind = event.get("type")
        if kind == "message_start":
            message_id = (event.get("message") or {}).get("id")
            if message_id:
                self._streamed.add(message_id)
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                yield events.delta(delta["text"])
            elif delta.get("type") == "thinking_delta" and delta.get("thinking"):
                yield events.reasoning(delta["thinking"])

    def _assistant(self, message: AssistantMessage) -> Iterator[AgentEvent]:
        streamed = message.message_id is not None and message.message_id in self._streamed
        for block in message.content:
            if isinstance(block, TextBlock) and not streamed and block.text:
                yield events.delta(block.text)
            elif isinstance(block, ThinkingBlock) and not streamed and block.thinking:
                yield events.reasoning(block.thinking)
            elif isinstance(block, ToolUseBlock):
                arguments = json.dumps(block.input, ensure_ascii=False)
                yield events.tool_call(block.id, block.name, arguments)


def _tool_results(message: UserMessage) -> Iterator[AgentEvent]:
    for block in message.content if isinstance(message.content, list) else ():
        if isinstance(block, ToolResultBlock):
            is_error = bool(block.is_error)
            yield events.tool_result(block.tool_use_id, _text(block.content), is_error=is_error)


def _from_subagent(message: Message) -> bool:
    if isinstance(message, StreamEvent | AssistantMessage | UserMessage):
        return message.parent_tool_use_id is not None
    return False


def _result(message: ResultMessage) -> Iterator[AgentEvent]:
    usage = message.usage or {}
    # Anthropic counts cached prompt tokens apart from `input_tokens`.
    prompt = sum(
        int(usage.get(key) or 0)
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    completion = int(usage.get("output_tokens") or 0)
    if prompt or completion:
        yield events.usage(prompt, completion)
    if message.is_error:
        why = message.result or "; ".join(message.errors or ()) or message.subtype
        code = message.subtype if message.subtype.startswith("error") else "claude_error"
        yield events.error(f"Claude Code: {why}", code)


def new_message(ctx: RunContext) -> str:
    """The user message this run answers, as stored (with its note of uploaded files)."""
    history = ctx.history
    if history and history[-1].get("role") == "user":
        return _text(history[-1].get("content"))
    return ctx.message


def prompt_of(ctx: RunContext) -> str:
    """The new user message, after a transcript of the conversation's earlier turns."""
    history = ctx.history
    message = new_message(ctx)
    if history and history[-1].get("role") == "user":
        history = history[:-1]
    if not history:
        return message
    lines = [_transcript_line(m) for m in history]
    transcript = "\n".join(line for line in lines if line)
    return (
        "The conversation so far, for context (earlier turns, tool calls and their results):\n"
        f"<conversation>\n{transcript}\n</conversation>\n\n{message}"
    )


def _transcript_line(message: dict[str, Any]) -> str:
    role = message.get("role")
    text = _text(message.get("content"))
    if role == "tool":
        return f'<tool_result id="{message.get("tool_call_id")}">{text}</tool_result>'
    lines = [f"<{role}>{text}</{role}>"] if text else []
    for call in message.get("tool_calls") or ():
        function = call["function"]
        lines.append(
            f'<tool_call id="{call["id"]}" name="{function["name"]}">'
            f"{function.get('arguments') or '{}'}</tool_call>"
        )
    return "\n".join(lines)


def _text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""
