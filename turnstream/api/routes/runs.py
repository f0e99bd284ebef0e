"""Runs over HTTP (SPEC §6): post a message, regenerate, resume, stop, inspect."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from turnstream import keys
from turnstream.api import stream_tokens
from turnstream.api.body import read_content
from turnstream.api.deps import BrokerDep, ConversationDep, CurrentUser, FollowerDep, RuntimeDep
from turnstream.api.errors import ApiError
from turnstream.api.schemas import (
    CursorExpired,
    ErrorBody,
    MessageBody,
    RunView,
    StopResult,
    StreamToken,
)
from turnstream.api.sse import event_stream
from turnstream.events import cursor_key, parse_cursor
from turnstream.keys import RunKeys
from turnstream.runs.service import (
    Multitask,
    RateLimited,
    RunConflict,
    Started,
    start_run,
    stop_run,
)
from turnstream.runs.state import ActiveRunLimit, RunRecord, RunStatus
from turnstream.runs.stream import expired
from turnstream.runtime import Runtime
from turnstream.store import runlog

router = APIRouter(prefix="/conversations/{cid}", tags=["runs"])

_SSE = {"text/event-stream": {"schema": {"type": "string"}}}
_MESSAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": _SSE, "description": "The run's events (stream=true) or the reply (false)"},
    409: {"description": "Another run is active (multitask=reject)"},
    413: {"description": "The message is too long"},
}
_MAX_SESSION_ID = 160


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
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": MessageBody.model_json_schema()},
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {"content": {"type": "string"}},
                        "required": ["content"],
                    }
                },
            },
        }
    },
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
        raise ApiError(400, {"error": "Nothing to regenerate", "conversationId": conversation.id})
    content = last_user.content or ""
    started = await _start(rt, broker, conversation.id, user.id, content, options, regenerate=True)
    return await _answer(rt, conversation.id, started, stream=options.stream)


@router.get(
    "/resume/{session_id}",
    responses={
        200: {"content": _SSE, "description": "The run's events after the cursor"},
        400: {"description": "Malformed cursor"},
        404: {"model": ErrorBody, "description": "Session not found or expired"},
        409: {"model": CursorExpired, "description": "The cursor is older than Redis holds"},
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

    Browsers' `EventSource` cannot send a bearer token: they pass `?token=` from
    `POST …/stream-token` instead.
    """
    k = RunKeys(follower.cid, session_id)
    record = await _run_of(rt, k, follower.user_id)
    position = parse_cursor(cursor if cursor is not None else last_event_id)
    if position is None:
        raise _invalid_cursor("A cursor is a stream entry id such as 1704123456789-0.")
    if cursor_key(position) > cursor_key(record.last_id):
        # No entry of this run can be newer than its newest: the cursor is not one this
        # run sent (another run's, or made up). Waiting after it would silently skip
        # every event still to come, `end` included.
        raise _invalid_cursor(
            f"The cursor is past this run's newest event ({record.last_id}), so this run "
            "did not send it. Resume from an id this run sent, or without a cursor."
        )
    resync = await expired(rt.redis, k, position)
    if resync is not None:
        raise ApiError(
            409,
            {
                "error": "Cursor expired",
                "sessionId": session_id,
                "resync": {
                    "cursor": resync,
                    "detail": "Events up to this cursor were trimmed. Resume from it for "
                    "the rest; the whole reply is in the conversation's messages once the "
                    "run has ended.",
                },
            },
        )
    return event_stream(rt, k, position)


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
    ended within the stop wait; 409 if it ended otherwise (it completed first).
    """
    sid = session_id or await rt.redis.get(keys.active(conversation.id))
    record = None
    if sid is not None:
        k = RunKeys(conversation.id, sid)
        found = await rt.runs.get(k)
        if found is not None and found.user_id == user.id:
            record = await stop_run(rt, k)
    if record is None:
        raise ApiError(404, {"error": "No active run", "conversationId": conversation.id})
    if record.status.active:  # the stop is asked and will be seen; it only took longer
        return JSONResponse({"status": "stopping", "sessionId": record.session_id}, status_code=202)
    if record.status is not RunStatus.CANCELLED:
        raise ApiError(
            409,
            {
                "error": "The run ended before it could be stopped",
                "status": record.status.value,
                "sessionId": record.session_id,
                "conversationId": conversation.id,
            },
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
        raise _session_not_found(conversation.id)
    usage = {"promptTokens": row.prompt_tokens, "completionTokens": row.completion_tokens}
    record = await rt.runs.get(RunKeys(conversation.id, session_id))
    if record is not None:
        return RunView(**record.as_json(), **usage)
    return RunView(
        sessionId=row.id,
        conversationId=row.conversation_id,
        userId=row.user_id,
        messageId=row.message_id,
        status=row.status,
        createdAt=runlog.to_ms(row.created_at) or 0,
        startedAt=None,
        endedAt=runlog.to_ms(row.ended_at),
        lastActivity=None,
        cursor="0-0",
        worker=None,
        error=row.error,
        **usage,
    )


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
    try:
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
    except RateLimited as limited:
        raise ApiError(
            429,
            {
                "error": "Too many runs started",
                "detail": f"At most {rt.settings.runs_per_minute} runs a minute; "
                f"retry in {limited.retry_after} s.",
            },
            headers={"Retry-After": str(limited.retry_after)},
        ) from limited
    except ActiveRunLimit as limit:
        raise ApiError(
            429,
            {
                "error": "Too many active runs",
                "detail": f"At most {limit.limit} runs at once; stop one or wait for it to end.",
            },
            headers={"Retry-After": "5"},
        ) from limit
    except RunConflict as conflict:
        raise ApiError(
            409,
            {
                "error": "A run is already active in this conversation",
                "sessionId": conflict.active_session_id,
                "conversationId": cid,
                "detail": "Resume it, stop it, or post with multitask=interrupt or enqueue.",
            },
        ) from conflict


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
        newer = await rt.redis.get(keys.active(cid))
        if newer is None or newer == started.session_id:
            raise _session_not_found(cid)
        raise ApiError(
            409,
            {
                "error": "The reply was replaced by a newer run",
                "sessionId": newer,
                "conversationId": cid,
                "detail": f"Run {started.session_id} ended, then a regenerate replaced its "
                "reply. Resume the newer run, or load the conversation's messages.",
            },
            headers={"X-Session-Id": started.session_id},
        )
    return JSONResponse(reply.model_dump(mode="json"), headers={"X-Session-Id": started.session_id})


async def _run_of(rt: Runtime, k: RunKeys, user_id: str) -> RunRecord:
    if len(k.sid) > _MAX_SESSION_ID:
        raise _session_not_found(k.cid)
    record = await rt.runs.get(k)
    if record is None or record.user_id != user_id:
        raise _session_not_found(k.cid)
    return record


def _invalid_cursor(detail: str) -> ApiError:
    return ApiError(400, {"error": "Invalid cursor", "detail": detail})


def _session_not_found(cid: str) -> ApiError:
    return ApiError(404, {"error": "Session not found or expired", "conversationId": cid})
