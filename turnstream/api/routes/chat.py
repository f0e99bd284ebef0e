"""The AI SDK's chat transport (SPEC §6): `POST /chat` and its reconnect, `GET /chat/{cid}/stream`.

A frontend needs only `new DefaultChatTransport({api: "<base>/api/v1/chat", headers})`
and `useChat({id: conversationId, transport, resume: true})`. Runs start and
are followed exactly as on the native routes (runs/service.py, the stream hub);
what differs is the body read (api/chat_request.py) and the stream's format,
the UI message stream (api/ui_stream.py).

Approvals go the AI SDK's way: a response ends once its run waits on calls
the client was asked about (`finish` "tool-calls"); the client's answers
(useChat's `addToolApprovalResponse`) come in the next POST, which decides
them (runs/approving.py) and streams the same run on from where the client
is, continuing the same assistant message.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Request
from fastapi.responses import Response
from redis.exceptions import RedisError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import ClientDisconnect
from taskiq import AsyncBroker

from turnstream.api.chat_request import OPENAPI_BODY, ApprovalAnswer, Trigger, read_chat_request
from turnstream.api.deps import BrokerDep, ConversationDep, CurrentUser, RuntimeDep
from turnstream.api.errors import documented
from turnstream.api.sse import SESSION_HEADER
from turnstream.api.ui_stream import DONE, HEADER, VERSION, UIMessageStream, frame
from turnstream.errors import (
    AccessDenied,
    ActiveRunLimit,
    ApprovalDecided,
    ApprovalNotFound,
    CursorExpired,
    InvalidMessage,
    MessageTooLong,
    NotANewMessage,
    NothingToRegenerate,
    RateLimited,
    RunConflict,
)
from turnstream.keys import RunKeys
from turnstream.live.stream import expired
from turnstream.runs import approving
from turnstream.runs.service import Multitask, start_run
from turnstream.runtime import Runtime
from turnstream.store.context import last_user_message

logger = logging.getLogger("turnstream.api")

router = APIRouter(prefix="/chat", tags=["chat"])

_UI_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "description": "One chunk of the AI SDK's UI message stream: `start`, "
                    "`start-step`, `text-delta`, `tool-input-available`, …, `finish`, then "
                    "`[DONE]`; docs/protocol.md, 'From events to chunks'.",
                    "required": ["data"],
                    "properties": {"data": {"type": "string"}},
                },
                "example": 'data: {"type":"text-delta","id":"text-0","delta":"and"}\n\n',
            }
        },
        "description": "The run as the AI SDK UI message stream, from `start` to `finish` and "
        "`data: [DONE]`",
        "headers": {
            **SESSION_HEADER,
            HEADER: {"description": VERSION, "schema": {"type": "string"}, "required": True},
        },
    },
}


@router.post(
    "",
    responses=documented(
        AccessDenied,
        InvalidMessage,
        NothingToRegenerate,
        NotANewMessage,
        MessageTooLong,
        RunConflict,
        CursorExpired,
        RateLimited,
        ActiveRunLimit,
        ApprovalNotFound,
        ClientDisconnect,
        ok=_UI_STREAM,
    ),
    openapi_extra={"requestBody": OPENAPI_BODY},
)
async def chat(
    request: Request,
    rt: RuntimeDep,
    broker: BrokerDep,
    user: CurrentUser,
    multitask: Multitask = Multitask.REJECT,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Response:
    """Start a run for the transport's request and stream it in the AI SDK's format.

    `id` is the conversation. Of `messages`, only the newest (the user's new
    message) is read: the stored history is what the agent sees. Answers to
    approval requests are decided instead, and the run they belong to streamed on.
    """

    async def owns(cid: str) -> bool:
        return await rt.store.is_owner(cid=cid, user_id=user.id)

    body = await read_chat_request(request, max_chars=rt.settings.max_message_chars, owns=owns)
    if body.answers:
        k, message_id = await _decide(rt, broker, body.conversation_id, body.answers)
        answered = frozenset(answer.approval_id for answer in body.answers)
        return await _ui_stream(rt, k, message_id, after_approvals=answered)
    regenerate = body.trigger is Trigger.REGENERATE
    started = await start_run(
        rt,
        broker,
        cid=body.conversation_id,
        user_id=user.id,
        content=await last_user_text(rt, body.conversation_id) if regenerate else body.text,
        multitask=multitask,
        idempotency_key=idempotency_key,
        regenerate=regenerate,
    )
    k = RunKeys(body.conversation_id, started.session_id)
    return await _ui_stream(rt, k, started.message_id)


@router.get(
    "/{cid}/stream",
    responses=documented(
        AccessDenied,
        CursorExpired,
        ok={**_UI_STREAM, 204: {"description": "No run is active: nothing to resume"}},
    ),
)
async def reconnect(rt: RuntimeDep, conversation: ConversationDep) -> Response:
    """The active run, replayed from its start and then live to its end; 204 if none is."""
    record = await rt.runs.newest(conversation.id)
    if record is None or not record.status.active:
        return Response(status_code=204)
    return await _ui_stream(rt, RunKeys(conversation.id, record.session_id), record.message_id)


async def _decide(
    rt: Runtime, broker: AsyncBroker, cid: str, answers: Sequence[ApprovalAnswer]
) -> tuple[RunKeys, str]:
    """Decide each answer: the run they belong to, and its reply's message id.

    An approval decided before (another tab, even the other way) or a run stopped
    meanwhile is no error here: the stream that follows shows what stands.
    """
    sid = ""
    for answer in answers:
        try:
            sid, _ = await approving.decide(
                rt,
                broker,
                cid=cid,
                approval_id=answer.approval_id,
                approved=answer.approved,
                reason=answer.reason,
            )
        except ApprovalDecided as exc:
            sid = exc.session_id
    k = RunKeys(cid, sid)
    record = await rt.runs.get(k)
    if record is None:
        raise ApprovalNotFound(approval_id=answers[0].approval_id, conversation_id=cid)
    return k, record.message_id


async def last_user_text(rt: Runtime, cid: str) -> str:
    """What a regenerate answers again: the newest user message; NothingToRegenerate if none."""
    last_user = await last_user_message(rt.sessions, cid=cid)
    if last_user is None:
        raise NothingToRegenerate(cid)
    return last_user.content or ""


async def _ui_stream(
    rt: Runtime, k: RunKeys, message_id: str, *, after_approvals: frozenset[str] = frozenset()
) -> EventSourceResponse:
    """The run from its first event (or, for answers, after the approval requests they
    answer); 409 if its first events are no longer kept."""
    resync = await expired(rt.redis, k, "0-0")
    if resync is not None:
        raise CursorExpired(session_id=k.sid, resync_cursor=resync)
    drain = anyio.Event()  # set when the server shuts down (api/sse.py)
    return EventSourceResponse(
        _chunks(rt, k, UIMessageStream(message_id, after_approvals=after_approvals), drain),
        ping=rt.settings.ping_seconds,
        ping_message_factory=lambda: ServerSentEvent(comment="ping"),
        headers={"X-Session-Id": k.sid, "X-Accel-Buffering": "no", HEADER: VERSION},
        shutdown_event=drain,
        shutdown_grace_period=rt.settings.drain_seconds,
    )


async def _chunks(
    rt: Runtime, k: RunKeys, ui: UIMessageStream, drain: anyio.Event
) -> AsyncIterator[bytes]:
    yield b"".join(frame(chunk) for chunk in ui.start())
    try:
        async with contextlib.aclosing(rt.hub.follow(k, "0-0", stop=drain)) as batches:
            async for batch in batches:
                chunks = [chunk for entry in batch for chunk in ui.feed(entry.type, entry.data)]
                if await _waits_on_answers(rt, k, ui):
                    chunks += ui.pause()
                if chunks:  # all that is ready goes out in one write
                    yield b"".join(frame(chunk) for chunk in chunks)
                if ui.ended:
                    break
    except RedisError as exc:
        # Mid-stream there is no status left to change: say so; the client reconnects.
        logger.warning("UI stream of %s interrupted: %s", k.sid, exc)
        yield b"".join(frame(chunk) for chunk in ui.cut("Redis unavailable; resume later."))
        return
    if not ui.ended and drain.is_set():
        yield b"".join(frame(chunk) for chunk in ui.cut("Server shutting down; reconnect."))
        return
    if not ui.ended:  # the run's events expired before its end was read
        yield b"".join(frame(chunk) for chunk in ui.cut("The run's events are no longer kept."))
        return
    yield DONE


async def _waits_on_answers(rt: Runtime, k: RunKeys, ui: UIMessageStream) -> bool:
    """Whether the run waits on calls, and this response has asked the client about each:
    the AI SDK sends the answers in a new request, so this one ends here."""
    if not ui.awaiting or ui.ended:
        return False
    asked = await rt.approvals.waits_on(k)
    return bool(asked) and asked <= ui.requested
