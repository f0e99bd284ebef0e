"""Conversations and their messages (SPEC §6): plain CRUD over the chat store."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from starlette.requests import ClientDisconnect

from turnstream import keys
from turnstream.api.deps import ConversationDep, CurrentUser, RuntimeDep
from turnstream.api.errors import documented
from turnstream.api.schemas import (
    ConversationCreate,
    ConversationPage,
    ConversationUpdate,
    MessagePage,
)
from turnstream.errors import AccessDenied
from turnstream.keys import RunKeys
from turnstream.live.client import maybe_text
from turnstream.runs.service import stop_run
from turnstream.store import runlog
from turnstream.store.views import ConversationView, MessageView

router = APIRouter(prefix="/conversations", tags=["conversations"])

# A JSON body that FastAPI reads: its 400 for one that is not UTF-8, and a client gone.
_JSON_BODY = (UnicodeDecodeError, ClientDisconnect)


class ConversationDetail(ConversationView):
    messages: list[MessageView]


@router.post(
    "", status_code=201, response_model=ConversationView, responses=documented(*_JSON_BODY)
)
async def create_conversation(
    rt: RuntimeDep, user: CurrentUser, body: ConversationCreate | None = None
) -> ConversationView:
    body = body or ConversationCreate()
    return await rt.store.create(user_id=user.id, title=body.title, metadata=body.metadata)


@router.get("", response_model=ConversationPage)
async def list_conversations(
    rt: RuntimeDep,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> ConversationPage:
    items, total = await rt.store.list_for_user(user_id=user.id, limit=limit, offset=offset)
    return ConversationPage(items=items, total=total)


@router.get("/{cid}", response_model=ConversationDetail, responses=documented(AccessDenied))
async def get_conversation(rt: RuntimeDep, conversation: ConversationDep) -> ConversationDetail:
    loaded = await rt.store.load(cid=conversation.id)
    if loaded is None:  # deleted since the ownership check
        raise AccessDenied()
    return ConversationDetail.model_validate(loaded.model_dump())


@router.patch(
    "/{cid}", response_model=ConversationView, responses=documented(AccessDenied, *_JSON_BODY)
)
async def rename_conversation(
    rt: RuntimeDep, conversation: ConversationDep, body: ConversationUpdate
) -> ConversationView:
    return await rt.store.rename(cid=conversation.id, title=body.title)


@router.delete("/{cid}", status_code=204, responses=documented(AccessDenied))
async def delete_conversation(rt: RuntimeDep, conversation: ConversationDep) -> Response:
    """Delete the conversation, its messages and its Redis keys; stop its active run."""
    cid = conversation.id
    active = maybe_text(await rt.redis.get(keys.active(cid)))
    if active is not None:
        await stop_run(rt, RunKeys(cid, active))
    run_keys = [RunKeys(cid, sid) for sid in await runlog.session_ids(rt.sessions, cid=cid)]
    doomed = [name for k in run_keys for name in (k.stream, k.status, k.cancel, k.run)]
    await rt.redis.delete(keys.active(cid), keys.session_cache(cid), *doomed)
    await rt.store.delete(cid=cid)
    return Response(status_code=204)


@router.get("/{cid}/messages", response_model=MessagePage, responses=documented(AccessDenied))
async def list_messages(
    rt: RuntimeDep,
    conversation: ConversationDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
) -> MessagePage:
    """Messages in order; `before` pages back from a sequence."""
    items = await rt.store.messages(cid=conversation.id, limit=limit, before=before)
    return MessagePage(items=items)
