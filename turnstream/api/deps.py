"""The dependencies routes declare: the runtime, the caller, the caller's conversation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Path, Query, Request
from taskiq import AsyncBroker

from turnstream.api import stream_tokens
from turnstream.api.auth import authenticate, unauthorized
from turnstream.api.errors import access_denied
from turnstream.runtime import Runtime
from turnstream.store.models import User


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_broker(request: Request) -> AsyncBroker:
    broker: AsyncBroker = request.app.state.broker
    return broker


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
BrokerDep = Annotated[AsyncBroker, Depends(get_broker)]


async def get_current_user(
    request: Request, rt: RuntimeDep, authorization: Annotated[str | None, Header()] = None
) -> User:
    return await authenticate(rt, request.app.state.token_cache, authorization)


CurrentUser = Annotated[User, Depends(get_current_user)]


@dataclass(frozen=True)
class OwnedConversation:
    id: str


async def get_conversation(
    rt: RuntimeDep, user: CurrentUser, cid: Annotated[str, Path()]
) -> OwnedConversation:
    """The conversation in the path, if the caller owns it; 403 for anything else."""
    if not await rt.store.is_owner(cid=cid, user_id=user.id):
        raise access_denied()
    return OwnedConversation(cid)


ConversationDep = Annotated[OwnedConversation, Depends(get_conversation)]


@dataclass(frozen=True)
class Follower:
    """Who may follow a conversation's runs: the owner by bearer token, or by stream token."""

    cid: str
    user_id: str


async def get_follower(
    request: Request,
    rt: RuntimeDep,
    cid: Annotated[str, Path()],
    token: Annotated[str | None, Query(max_length=1024)] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Follower:
    if authorization is None and token is not None:
        key = await stream_tokens.signing_key(rt.redis, rt.settings.secret_key)
        user_id = stream_tokens.verify(key, token, cid=cid)
        if user_id is None:
            raise unauthorized("Invalid or expired stream token: ask for a new one.")
        return Follower(cid, user_id)
    user = await authenticate(rt, request.app.state.token_cache, authorization)
    if not await rt.store.is_owner(cid=cid, user_id=user.id):
        raise access_denied()
    return Follower(cid, user.id)


FollowerDep = Annotated[Follower, Depends(get_follower)]
