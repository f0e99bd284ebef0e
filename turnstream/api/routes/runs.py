"""Runs over HTTP (SPEC §6): post a message, regenerate, resume, stop, inspect."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from turnstream import keys
from turnstream.api.body import MESSAGE_BODY, read_content
from turnstream.api.deps import BrokerDep, ConversationDep, CurrentUser, FollowerDep, RuntimeDep
from turnstream.api.errors import Responses, documented
from turnstream.api.resume import MAX_SESSION_ID as _MAX_SESSION_ID
from turnstream.api.resume import checked_cursor, resume_stream
from turnstream.api.schemas import RunView, Stopping, StopResult, StreamToken
from turnstream.api.sse import EVENT_STREAM, SESSION_HEADER, event_stream
from turnstream.errors import (
    AccessDenied,
    ActiveRunLimit,
    CursorAhead,
    CursorExpired,
    InvalidCursor,
    InvalidMessage,
    MessageTooLong,
    NoActiveRun,
    NothingToRegenerate,
    RateLimited,
    ReplyReplaced,
    RunConflict,
    RunEndedFirst,
    SessionNotFound,
    UnknownPath,
)
from turnstream.events import CURSOR_PATTERN
from turnstream.keys import RunKeys
from turnstream.live import tokens as stream_tokens
from turnstream.live.client import maybe_text
from turnstream.live.record import RunRecord
from turnstream.live.status import RunStatus
from turnstream.runs.service import Multitask, Started, start_run, stop_run
from turnstream.runtime import Runtime
from turnstream.store import context, runlog

router = APIRouter(prefix="/conversations/{cid}", tags=["runs"], responses=documented(AccessDenied))

# What starting a run may answer besides: the run's events, or (stream=false) its reply.
_STARTED: Responses = {
    200: {
        "description": "The run's events (stream=true), or its reply (stream=false)",
        "content": {
            "text/event-stream": EVENT_STREAM,
            "application/json": {"schema": {"$ref": "#/components/schemas/MessageView"}},
        },
        "headers": SESSION_HEADER,
    }
}
_START_REFUSALS = (
    RunConflict,
    ReplyReplaced,
    SessionNotFound,
    RateLimited,
    ActiveRunLimit,
)


@dataclass(frozen=True)
class RunOptions:
    stream: bool
    multitask: Multitask
    idempotency_key: str | None


def run_options(
    stream: bool = True,
    multitask: Multitask = Multitask.REJECT,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> RunOptions:
    """How to start a run: stream or wait, what to do beside an active run, retry safety."""
    return RunOptions(stream, multitask, idempotency_key)


RunOptionsDep = Annotated[RunOptions, Depends(run_options)]


@router.post(
    "/message/",
    responses=documented(
        InvalidMessage, MessageTooLong, ClientDisconnect, *_START_REFUSALS, ok=_STARTED
    ),
    openapi_extra={"requestBody": MESSAGE_BODY},
)
@router.post("/message", include_in_schema=False)
async def post_message(
    request: Request,
    rt: RuntimeDep,
    broker: BrokerDep,
    user: CurrentUser,
    conversation: ConversationDep,
    options: RunOptionsDep,
) -> Response:
    """Store the user message, start a run, and stream its events (or wait for the reply)."""
    content = await read_content(request, max_chars=rt.settings.max_message_chars)
    started = await _start(rt, broker, conversation.id, user.id, content, options)
    return await _answer(rt, conversation.id, started, stream=options.stream)


@router.post(
    "/regenerate", responses=documented(NothingToRegenerate, *_START_REFUSALS, ok=_STARTED)
)
async def regenerate(
    rt: RuntimeDep,
    broker: BrokerDep,
    user: CurrentUser,
    conversation: ConversationDep,
    options: RunOptionsDep,
) -> Response:
    """Answer the last user message again, replacing the reply that followed it."""
    last_user = await context.last_user_message(rt.sessions, cid=conversation.id)
    if last_user is None:
        raise NothingToRegenerate(conversation.id)
    content = last_user.content or ""
    started = await _start(rt, broker, conversation.id, user.id, content, options, regenerate=True)
    return await _answer(rt, conversation.id, started, stream=options.stream)


_CURSOR: dict[str, Any] = {"pattern": CURSOR_PATTERN}
_RESUME_REFUSALS = (InvalidCursor, SessionNotFound, UnknownPath, CursorExpired, CursorAhead)
_RESUMED: Responses = {
    200: {
        "description": "The run's events after the cursor, live until its `end`",
        "content": {"text/event-stream": EVENT_STREAM},
        "headers": SESSION_HEADER,
    }
}


@router.get(
    "/resume/{session_id}",
    response_class=Response,
    responses=documented(*_RESUME_REFUSALS, ok=_RESUMED),
)
@router.post(
    "/resume/{session_id}",
    name="resume_post",
    response_class=Response,
    responses=documented(*_RESUME_REFUSALS, ok=_RESUMED),
)
async def resume(
    rt: RuntimeDep,
    follower: FollowerDep,
    session_id: str,
    cursor: Annotated[str | None, Query(max_length=64, json_schema_extra=_CURSOR)] = None,
    last_event_id: Annotated[str | None, Header(max_length=64, json_schema_extra=_CURSOR)] = None,
) -> Response:
    """The run's events after `cursor` (or `Last-Event-ID`), live until its end.

    An ended run's events come from its archive once Redis has let them go
    (api/resume.py). Browsers' `EventSource` cannot send a bearer token: they pass
    `?token=` from `POST …/stream-token` instead.
    """
    k = RunKeys(follower.cid, session_id)
    # The query wins, but a malformed header is refused all the same, as the document says.
    checked_cursor(last_event_id)
    position = cursor if cursor is not None else last_event_id
    return await resume_stream(rt, k, user_id=follower.user_id, cursor=position)


@router.post("/stream-token", response_model=StreamToken)
async def stream_token(
    rt: RuntimeDep, user: CurrentUser, conversation: ConversationDep
) -> StreamToken:
    """A token for `?token=` on this conversation's resume route, valid for minutes."""
    key = await stream_tokens.signing_key(rt.redis, rt.settings.secret_key)
    token, expires = stream_tokens.issue(key, user_id=user.id, cid=conversation.id)
    return StreamToken(token=token, expiresAt=expires)


@router.post(
    "/stop",
    response_model=StopResult,
    responses=documented(
        NoActiveRun,
        RunEndedFirst,
        ok={202: {"model": Stopping, "description": "Asked to stop, still ending after the wait"}},
    ),
)
async def stop(
    rt: RuntimeDep,
    user: CurrentUser,
    conversation: ConversationDep,
    session_id: Annotated[str | None, Query(max_length=_MAX_SESSION_ID)] = None,
) -> StopResult | JSONResponse:
    """Cancel the active run (or the one named); its partial reply is kept, marked cancelled.

    Answers what became of the run: 200 `cancelled`; 202 `stopping` if it has not
    ended within the stop wait; RunEndedFirst (409) if it ended otherwise (it completed
    first); NoActiveRun (404) if nothing of the caller's was running.
    """
    sid = session_id or maybe_text(await rt.redis.get(keys.active(conversation.id)))
    record = None
    if sid is not None:
        k = RunKeys(conversation.id, sid)
        found = await rt.runs.get(k)
        if found is not None and found.user_id == user.id:
            record = await stop_run(rt, k)
    if record is None:
        raise NoActiveRun(conversation.id)
    if record.status.active:  # the stop is asked and will be seen; it only took longer
        return JSONResponse({"status": "stopping", "sessionId": record.session_id}, status_code=202)
    if record.status is not RunStatus.CANCELLED:
        raise RunEndedFirst(
            status=record.status.value,
            session_id=record.session_id,
            conversation_id=conversation.id,
        )
    return StopResult(status="cancelled", sessionId=record.session_id)


@router.get(
    "/runs/{session_id}",
    response_model=RunView,
    responses=documented(SessionNotFound, UnknownPath),
)
async def get_run(
    rt: RuntimeDep, user: CurrentUser, conversation: ConversationDep, session_id: str
) -> RunView:
    """The run record: live from Redis while it is kept there, else from SQL."""
    row = await runlog.get_run(rt.sessions, session_id=session_id[:_MAX_SESSION_ID])
    if row is None or row.conversation_id != conversation.id or row.user_id != user.id:
        raise SessionNotFound(conversation.id)
    record = await rt.runs.get(RunKeys(conversation.id, session_id))
    if record is None:  # its Redis keys have expired
        record = RunRecord.from_log(
            session_id=row.id,
            conversation_id=row.conversation_id,
            user_id=row.user_id,
            message_id=row.message_id,
            status=row.status,
            created_at=runlog.to_ms(row.created_at) or 0,
            ended_at=runlog.to_ms(row.ended_at),
            error=row.error,
        )
    body = record.api_body(prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens)
    return RunView(**body)


async def _start(
    rt: Runtime,
    broker: BrokerDep,
    cid: str,
    user_id: str,
    content: str,
    options: RunOptions,
    *,
    regenerate: bool = False,
) -> Started:
    return await start_run(
        rt,
        broker,
        cid=cid,
        user_id=user_id,
        content=content,
        multitask=options.multitask,
        idempotency_key=options.idempotency_key,
        regenerate=regenerate,
    )


async def _answer(rt: Runtime, cid: str, started: Started, *, stream: bool) -> Response:
    k = RunKeys(cid, started.session_id)
    if stream:
        return event_stream(rt, k, "0-0")
    async for _batch in rt.hub.follow(k, "0-0"):
        pass  # wait for the end: the reply is stored before it
    reply = await context.message(rt.sessions, cid=cid, message_id=started.message_id)
    if reply is None:
        # The reply was stored before the end, so a later regenerate has replaced it
        # since: point the client at the run whose reply now counts, as other 409s do.
        newer = maybe_text(await rt.redis.get(keys.active(cid)))
        if newer is None or newer == started.session_id:
            raise SessionNotFound(cid)
        raise ReplyReplaced(
            session_id=newer, replaced_session_id=started.session_id, conversation_id=cid
        )
    return JSONResponse(reply.model_dump(mode="json"), headers={"X-Session-Id": started.session_id})
