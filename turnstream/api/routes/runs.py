"""Runs over HTTP (SPEC §6): post a message, regenerate, resume, stop, inspect."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from turnstream import keys
from turnstream.api.body import read_content
from turnstream.api.deps import BrokerDep, ConversationDep, CurrentUser, FollowerDep, RuntimeDep
from turnstream.api.resume import MAX_SESSION_ID as _MAX_SESSION_ID
from turnstream.api.resume import resume_stream
from turnstream.api.schemas import CursorExpired as CursorExpiredBody
from turnstream.api.schemas import ErrorBody, MessageBody, RunView, StopResult, StreamToken
from turnstream.api.sse import event_stream
from turnstream.errors import (
    NoActiveRun,
    NothingToRegenerate,
    ReplyReplaced,
    RunEndedFirst,
    SessionNotFound,
)
from turnstream.keys import RunKeys
from turnstream.live import tokens as stream_tokens
from turnstream.live.client import maybe_text
from turnstream.live.record import RunRecord
from turnstream.live.status import RunStatus
from turnstream.runs.service import Multitask, Started, start_run, stop_run
from turnstream.runtime import Runtime
from turnstream.store import runlog

router = APIRouter(prefix="/conversations/{cid}", tags=["runs"])

_SSE = {"text/event-stream": {"schema": {"type": "string"}}}
_MESSAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": _SSE, "description": "The run's events (stream=true) or the reply (false)"},
    409: {"description": "Another run is active (multitask=reject)"},
    413: {"description": "The message is too long"},
}
# post_message reads its body itself (api/body.py), in any of these three forms.
_MESSAGE_FORM = {
    "type": "object",
    "properties": {"content": {"type": "string", "description": "The message text"}},
    "required": ["content"],
}
_MESSAGE_BODY = {
    "required": True,
    "description": 'The message: form field `content`, or JSON `{"content": ...}`.',
    # The example fills Swagger UI's "Try it out" (and schemathesis' examples phase).
    "content": {
        media_type: {"schema": schema, "example": {"content": "Hello!"}}
        for media_type, schema in (
            ("application/json", MessageBody.model_json_schema()),
            ("multipart/form-data", _MESSAGE_FORM),
            ("application/x-www-form-urlencoded", _MESSAGE_FORM),
        )
    },
}


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
    responses=_MESSAGE_RESPONSES,
    openapi_extra={"requestBody": _MESSAGE_BODY},
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


@router.post("/regenerate", responses=_MESSAGE_RESPONSES)
async def regenerate(
    rt: RuntimeDep,
    broker: BrokerDep,
    user: CurrentUser,
    conversation: ConversationDep,
    options: RunOptionsDep,
) -> Response:
    """Answer the last user message again, replacing the reply that followed it."""
    loaded = await rt.store.load(cid=conversation.id)
    last_user = (
        next((m for m in reversed(loaded.messages) if m.role == "user"), None) if loaded else None
    )
    if last_user is None:
        raise NothingToRegenerate(conversation.id)
    content = last_user.content or ""
    started = await _start(rt, broker, conversation.id, user.id, content, options, regenerate=True)
    return await _answer(rt, conversation.id, started, stream=options.stream)


@router.get(
    "/resume/{session_id}",
    responses={
        200: {"content": _SSE, "description": "The run's events after the cursor"},
        400: {"description": "Malformed cursor"},
        404: {"model": ErrorBody, "description": "Session not found or expired"},
        409: {"model": CursorExpiredBody, "description": "A running run's cursor, trimmed away"},
    },
)
@router.post("/resume/{session_id}", include_in_schema=False)
async def resume(
    rt: RuntimeDep,
    follower: FollowerDep,
    session_id: str,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> Response:
    """The run's events after `cursor` (or `Last-Event-ID`), live until its end.

    An ended run's events come from its archive once Redis has let them go
    (api/resume.py). Browsers' `EventSource` cannot send a bearer token: they pass
    `?token=` from `POST …/stream-token` instead.
    """
    k = RunKeys(follower.cid, session_id)
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
    responses={
        202: {"description": "Asked to stop, still ending after the stop wait: `stopping`"},
        404: {"model": ErrorBody, "description": "Nothing is running"},
        409: {"description": "The run ended otherwise (e.g. completed) before it saw the stop"},
    },
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
    responses={404: {"model": ErrorBody, "description": "Session not found or expired"}},
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
    messages = await rt.store.load(cid=cid)
    reply = (
        next((m for m in messages.messages if m.id == started.message_id), None)
        if messages
        else None
    )
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
