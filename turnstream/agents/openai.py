"""The built-in `openai` agent: any OpenAI-compatible chat completions endpoint.

OpenAI, OpenRouter, vLLM and Ollama all speak the same streaming chat
completions protocol, so one small agent covers them: point
`TURNSTREAM_OPENAI_BASE_URL` at the server, set `TURNSTREAM_OPENAI_MODEL`, and
(except for local servers) `TURNSTREAM_OPENAI_API_KEY`.

The agent sends the conversation history, with the tools of `TURNSTREAM_TOOLS`
and of the MCP servers (agents/tools.py, `offered_tools`), and turns each
streamed step into run events: content (and refusal) deltas become `delta`, the
`reasoning` / `reasoning_content` fields some servers add become `reasoning`,
and the usage chunk becomes `usage` (one per model call; add them up).
Tool-call fragments are assembled by index; when the stream ends the tool loop
(agents/toolloop.py) emits them as whole `tool_call`s, runs them, and calls the
model again with the assistant message and the tool results appended. Every
SDK failure is raised as one `OpenAIAgentError` whose message says which setting
to check, so the run can show the user something actionable instead of an SDK
traceback, except a refusal of the input as too long (`context_length_exceeded`):
`ContextTooLong`, which the tool loop retries once on a tighter history.
`TURNSTREAM_REASONING_EFFORT` goes with every call as `reasoning_effort`.
`summariser` writes the compactions' summaries (context/compaction.py) on the
same endpoint.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
from collections.abc import AsyncGenerator
from contextlib import aclosing
from functools import partial
from typing import Any, TypedDict

import certifi
import openai
from openai.types.chat import ChatCompletionMessageParam

from turnstream import events
from turnstream.agents.base import AgentEvent, ContextTooLong, RunContext
from turnstream.agents.toolloop import StepOutcome, ToolCall, tool_loop
from turnstream.agents.tools import offered_tools
from turnstream.config import Settings
from turnstream.context.compaction import Summarise

logger = logging.getLogger("turnstream.agents.openai")

# Connect fast or fail; a reasoning model may think for minutes before its first token.
_TIMEOUT = openai.Timeout(300.0, connect=10.0)
_CHECK = "check TURNSTREAM_OPENAI_BASE_URL, TURNSTREAM_OPENAI_API_KEY and TURNSTREAM_OPENAI_MODEL"


class OpenAIAgentError(RuntimeError):
    """The chat completions call failed; the message says what to check."""


async def openai_agent(ctx: RunContext) -> AsyncGenerator[AgentEvent, None]:
    settings = ctx.settings
    tools = await offered_tools(settings)
    async with _client(settings) as client:
        logger.debug(
            "chat completion: model=%s base_url=%s tools=%s",
            settings.openai_model,
            client.base_url,
            list(tools),
        )
        schemas = [tool.openai_schema() for tool in tools.values()]
        extra: dict[str, Any] = {"tools": schemas} if schemas else {}
        if settings.reasoning_effort is not None:
            extra["reasoning_effort"] = settings.reasoning_effort
        step = partial(_model_step, client, settings.openai_model, extra)
        async with aclosing(tool_loop(ctx, tools, step)) as loop:
            async for event in loop:
                yield event


async def _model_step(
    client: openai.AsyncOpenAI,
    model: str,
    extra: dict[str, Any],
    messages: list[dict[str, Any]],
    outcome: StepOutcome,
) -> AsyncGenerator[AgentEvent, None]:
    """One streamed chat completion: its events, then its text and tool calls in `outcome`.

    `extra`: the request's other fields (tools, reasoning_effort)."""
    where = str(client.base_url)
    calls: dict[int, ToolCall] = {}
    usage = None
    try:
        stream = await client.chat.completions.create(
            model=model,
            **_history(messages),
            stream=True,
            stream_options={"include_usage": True},
            **extra,
        )
        async with stream:
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    delta = choice.delta
                    thought = _reasoning(delta)
                    if thought:
                        yield events.reasoning(thought)
                    for text in (delta.content, delta.refusal):
                        if text:
                            outcome.text += text
                            yield events.delta(text)
                    for fragment in delta.tool_calls or ():
                        _add_fragment(calls, fragment)
    except openai.OpenAIError as exc:
        if _too_long(exc):
            raise ContextTooLong(_explain(exc, where, model)) from exc
        raise OpenAIAgentError(_explain(exc, where, model)) from exc
    outcome.calls = [calls[index] for index in sorted(calls)]
    for call in outcome.calls:
        call.arguments = call.arguments or "{}"
    if usage is not None:
        yield events.usage(usage.prompt_tokens, usage.completion_tokens)


def summariser(settings: Settings) -> Summarise | None:
    """The compaction's summary writer on the OpenAI-compatible endpoint; None when no
    endpoint is configured (no key, no base URL): the compaction leaves a note instead."""
    if not settings.has_openai_endpoint:
        return None
    model = settings.summary_model or settings.openai_model

    async def summarise(messages: list[dict[str, Any]]) -> str:
        async with _client(settings) as client:
            try:
                answer = await client.chat.completions.create(
                    model=model,
                    **_history(messages),
                    max_completion_tokens=settings.summary_tokens,
                )
            except openai.OpenAIError as exc:
                raise OpenAIAgentError(_explain(exc, str(client.base_url), model)) from exc
        choice = answer.choices[0] if answer.choices else None
        return (choice.message.content or "") if choice else ""

    return summarise


def _too_long(exc: openai.OpenAIError) -> bool:
    """OpenAI's `context_length_exceeded`, or the wording other servers (vLLM) use."""
    if not isinstance(exc, openai.BadRequestError):
        return False
    return exc.code == "context_length_exceeded" or "maximum context length" in str(exc)


def _client(settings: Settings) -> openai.AsyncOpenAI:
    api_key = settings.openai_api_key
    if api_key is None:
        if settings.openai_base_url is None:
            raise OpenAIAgentError(
                "The openai agent needs an API key: set TURNSTREAM_OPENAI_API_KEY "
                "(or TURNSTREAM_OPENAI_BASE_URL for a local server that needs none)"
            )
        api_key = "not-needed"  # local servers (vLLM, Ollama) ignore the key
    kwargs: dict[str, Any] = {
        "api_key": api_key,
        "max_retries": 1,
        "timeout": _TIMEOUT,
        "http_client": openai.DefaultAsyncHttpxClient(verify=_tls()),
    }
    if settings.openai_base_url is not None:
        kwargs["base_url"] = settings.openai_base_url
    return openai.AsyncOpenAI(**kwargs)


@functools.cache
def _tls() -> ssl.SSLContext:
    """The CA certificates, loaded once per process: a client of its own loads them again,
    25 ms a run. SSL_CERT_FILE when set, as the SDK's client reads it, else certifi's."""
    return ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or certifi.where())


def _reasoning(delta: Any) -> str | None:
    """OpenRouter streams `reasoning`, vLLM and DeepSeek `reasoning_content`."""
    extra = delta.model_extra or {}
    text = extra.get("reasoning") or extra.get("reasoning_content")
    return text if isinstance(text, str) else None


def _add_fragment(calls: dict[int, ToolCall], fragment: Any) -> None:
    """Merge one streamed tool-call fragment: id and name come once, arguments in pieces."""
    index = fragment.index if fragment.index is not None else len(calls)
    call = calls.setdefault(index, ToolCall())
    call.id = call.id or fragment.id or ""
    if fragment.function is not None:
        call.name = call.name or fragment.function.name or ""
        call.arguments += fragment.function.arguments or ""


def _explain(exc: openai.OpenAIError, where: str, model: str) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return (
            f"The chat completions endpoint at {where} timed out; check TURNSTREAM_OPENAI_BASE_URL"
        )
    if isinstance(exc, openai.APIConnectionError):
        reason = exc.__cause__ or exc  # the SDK says only "Connection error."; its cause says why
        return (
            f"The connection to the chat completions endpoint at {where} failed ({reason}); "
            "check TURNSTREAM_OPENAI_BASE_URL and that the server is running"
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = _detail(exc)
        if status in (401, 403):
            hint = "check TURNSTREAM_OPENAI_API_KEY"
        elif status == 429:
            hint = "the provider is rate limiting this key or it is out of quota; try again later"
        elif status == 404:
            hint = (
                f"check TURNSTREAM_OPENAI_MODEL ({model!r}) and TURNSTREAM_OPENAI_BASE_URL "
                "(it usually ends in /v1)"
            )
        else:
            hint = _CHECK
        return (
            f"The endpoint at {where} answered HTTP {status} for model {model!r}: {detail}; {hint}"
        )
    return f"The chat completions call to {where} for model {model!r} failed: {exc}; {_CHECK}"


def _history(history: list[dict[str, Any]]) -> _HistoryArgs:
    """The request's `messages`, sent as they are: `store.history.to_openai` built them.

    Through `extra_body`, which the SDK sends untouched: as `messages=` it walks every
    message of every call with its type hints (10 ms a call at 300 turns, a quarter of
    the test's time, and growing with the history).
    """
    return {"messages": [], "extra_body": {"messages": history}}


class _HistoryArgs(TypedDict):
    messages: list[ChatCompletionMessageParam]
    extra_body: dict[str, Any]


def _detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    message = body.get("message") if isinstance(body, dict) else None
    if isinstance(message, str):
        return message
    if isinstance(body, str) and body:
        return body
    return exc.message
