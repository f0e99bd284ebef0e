"""potpie-ui's routes (docs/potpie.md), under /potpie/api/v1 when TURNSTREAM_POTPIE_COMPAT is on.

Each is a thin translation over what /api/v1's routes call: the same dependencies
(a bearer token; the caller's own conversation, 403 for any other), the same store,
the same runs (runs/service.py: rate limits, one run at a time) and the same
streams. Only the bodies differ: shapes.py, history.py and stream.py. `task-status`
and `stop` answer exactly as on /api/v1, which potpie-ui reads as it is, so they
are /api/v1's own handlers.

`active-session` has /api/v1's body, except that while a run is active its
`cursor` is `0-0`, the start of the running reply: potpie-ui resumes from that
cursor and appends what comes to the history it loaded, which does not hold the
running reply (history.py), so that it shows the whole reply, once. /api/v1's
cursor (the newest event) would lose the reply's start.

potpie-ui has asked for most paths both with and without a trailing slash over its
versions; both are served, since a redirect behind a TLS proxy may name the wrong
scheme. None of these routes is in the OpenAPI document, which describes /api/v1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from turnstream.api.body import read_content
from turnstream.api.deps import (
    BrokerDep,
    ConversationDep,
    CurrentUser,
    FollowerDep,
    NewestRunDep,
    OwnedConversation,
    RuntimeDep,
)
from turnstream.api.potpie import history, shapes
from turnstream.api.potpie.stream import reply_stream
from turnstream.api.resume import resume_source
from turnstream.api.routes import conversations, runs, sessions
from turnstream.api.routes.chat import last_user_text
from turnstream.errors import AccessDenied
from turnstream.keys import RunKeys
from turnstream.runs.service import Multitask, start_run
from turnstream.runtime import Runtime
from turnstream.store.views import CachedConversation

router = APIRouter(prefix="/conversations", include_in_schema=False)

# The most conversations or messages one page holds; a larger `limit` is clamped to it
# (potpie-ui asks for 1,000).
MAX_PAGE = 1000
# A cursor before a run's first event: resuming from it replays the whole reply.
START = "0-0"
# `start`, as /api/v1 bounds `offset`: past it, 422.
Start = Annotated[int, Query(ge=0, le=1_000_000)]

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def _route(path: str, *methods: str) -> Callable[[Endpoint], Endpoint]:
    """Serve the endpoint at `path` and at `path/`, for `methods`."""

    def register(endpoint: Endpoint) -> Endpoint:
        for each in (path, path + "/"):
            router.add_api_route(each, endpoint, methods=list(methods), response_model=None)
        return endpoint

    return register


_route("/{cid}/task-status", "GET")(sessions.task_status)
_route("/{cid}/stop", "POST")(runs.stop)


@_route("", "POST")
async def create_conversation(
    rt: RuntimeDep, user: CurrentUser, body: shapes.CreateBody | None = None
) -> dict[str, Any]:
    body = body or shapes.CreateBody()
    created = await rt.store.create(user_id=user.id, title=body.title, metadata=body.metadata())
    return {"message": "Conversation created successfully.", "conversation_id": created.id}


@_route("", "GET")
async def list_conversations(
    rt: RuntimeDep, user: CurrentUser, start: Start = 0, limit: int = MAX_PAGE
) -> list[dict[str, Any]]:
    """The caller's conversations, most recently updated first, as a bare list."""
    items, _total = await rt.store.list_for_user(user_id=user.id, limit=_page(limit), offset=start)
    return [shapes.list_item(conversation) for conversation in items]


@_route("/{cid}/info", "GET")
async def conversation_info(rt: RuntimeDep, conversation: ConversationDep) -> dict[str, Any]:
    loaded, messages = await _history(rt, conversation)
    return shapes.info(loaded, total_messages=len(messages))


@_route("/{cid}/messages", "GET")
async def list_messages(
    rt: RuntimeDep, conversation: ConversationDep, start: Start = 0, limit: int = MAX_PAGE
) -> list[dict[str, Any]]:
    """The flat history (history.py), `limit` messages from the `start`th, oldest first."""
    _loaded, messages = await _history(rt, conversation)
    return messages[start : start + _page(limit)]


@_route("/{cid}/message", "POST")
async def post_message(
    request: Request,
    rt: RuntimeDep,
    broker: BrokerDep,
    user: CurrentUser,
    conversation: ConversationDep,
) -> Response:
    """Store the user message, start a run and stream its reply (form field `content`)."""
    content = await read_content(request, max_chars=rt.settings.max_message_chars)
    cid = conversation.id
    started = await start_run(
        rt, broker, cid=cid, user_id=user.id, content=content, multitask=Multitask.REJECT
    )
    return reply_stream(rt, RunKeys(conversation.id, started.session_id), START)


@_route("/{cid}/regenerate", "POST")
async def regenerate(
    rt: RuntimeDep, broker: BrokerDep, user: CurrentUser, conversation: ConversationDep
) -> Response:
    """Answer the last user message again, replacing the reply after it; stream it."""
    content = await last_user_text(rt, conversation.id)
    started = await start_run(
        rt,
        broker,
        cid=conversation.id,
        user_id=user.id,
        content=content,
        multitask=Multitask.REJECT,
        regenerate=True,
    )
    return reply_stream(rt, RunKeys(conversation.id, started.session_id), START)


@_route("/{cid}/active-session", "GET")
async def active_session(rt: RuntimeDep, newest: NewestRunDep) -> Response:
    body = await sessions.session_body(rt, newest.cid, newest.record)
    if body.status == "active":
        body = body.model_copy(update={"cursor": START})
    return JSONResponse(body.model_dump())


@_route("/{cid}/resume/{session_id}", "GET", "POST")
async def resume(
    rt: RuntimeDep,
    follower: FollowerDep,
    session_id: str,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """The run's reply after `cursor` (default: from its start), live until its end."""
    k = RunKeys(follower.cid, session_id)
    source = await resume_source(rt, k, user_id=follower.user_id, cursor=cursor)
    return reply_stream(rt, k, source.position, archived=source.archived)


@_route("/{cid}/rename", "PATCH")
async def rename_conversation(
    rt: RuntimeDep, conversation: ConversationDep, body: shapes.RenameBody
) -> dict[str, Any]:
    await rt.store.rename(cid=conversation.id, title=body.title)
    return {"status": "success", "message": f"Conversation renamed to '{body.title}'"}


@_route("/{cid}", "DELETE")
async def delete_conversation(rt: RuntimeDep, conversation: ConversationDep) -> dict[str, Any]:
    """As /api/v1's delete (the active run stopped first), with a JSON answer."""
    await conversations.delete_conversation(rt, conversation)
    return {"status": "success", "message": "Conversation deleted."}


def _page(limit: int) -> int:
    return min(max(limit, 0), MAX_PAGE)


async def _history(
    rt: Runtime, conversation: OwnedConversation
) -> tuple[CachedConversation, list[dict[str, Any]]]:
    """The conversation and its flat history, without the reply of a run still active."""
    # The run first: a run stores its reply while still active, and one found active
    # here is left out even if its messages are in the load below.
    newest = await rt.runs.newest(conversation.id)
    running = newest.session_id if newest is not None and newest.status.active else None
    loaded = await rt.store.load(cid=conversation.id)
    if loaded is None:  # deleted since the ownership check
        raise AccessDenied()
    return loaded, history.flat(loaded.messages, running=running)
