"""The dependencies routes declare: the runtime, the caller, the caller's conversation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from taskiq import AsyncBroker

from turnstream.api.auth import authenticate
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
