"""The dependencies routes declare: the runtime, the caller, the caller's conversation."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Path, Request
from taskiq import AsyncBroker

from turnstream.api.auth import authenticate
from turnstream.api.errors import access_denied
from turnstream.runtime import Runtime
from turnstream.store.models import User
from turnstream.store.views import ConversationView


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_broker(request: Request) -> AsyncBroker:
    broker: AsyncBroker = request.app.state.broker
    return broker


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
BrokerDep = Annotated[AsyncBroker, Depends(get_broker)]


async def get_current_user(
    rt: RuntimeDep, authorization: Annotated[str | None, Header()] = None
) -> User:
    return await authenticate(rt, authorization)


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_conversation(
    rt: RuntimeDep, user: CurrentUser, cid: Annotated[str, Path()]
) -> ConversationView:
    """The conversation in the path, if the caller owns it; 403 for anything else."""
    conversation = await rt.store.owned(cid=cid, user_id=user.id)
    if conversation is None:
        raise access_denied()
    return conversation


ConversationDep = Annotated[ConversationView, Depends(get_conversation)]
