"""The dependencies routes declare: the runtime, the caller, the caller's conversation.

Also `refusal`, the same checks for the error handlers (`turnstream.api.errors`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Query, Request, Security
from taskiq import AsyncBroker

from turnstream import logs
from turnstream.api.auth import TokenCache, authenticate, bearer
from turnstream.errors import AccessDenied, Refused, Unauthorized
from turnstream.ids import is_uuid
from turnstream.live import tokens
from turnstream.live.record import RunRecord
from turnstream.runtime import Runtime
from turnstream.store.models import User


# `async` although they never wait: FastAPI runs a plain `def` dependency in its thread
# pool, a round trip through a worker thread on every request (~10 % of one, profiled).
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_broker(request: Request) -> AsyncBroker:
    broker: AsyncBroker = request.app.state.broker
    return broker


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
BrokerDep = Annotated[AsyncBroker, Depends(get_broker)]
# The raw `Authorization` header, declared as the OpenAPI security scheme `bearerAuth`.
Authorization = Annotated[str | None, Security(bearer)]


async def get_current_user(request: Request, rt: RuntimeDep, authorization: Authorization) -> User:
    user = await authenticate(rt, request.app.state.token_cache, authorization=authorization)
    logs.bind(user_id=user.id)  # on the request's log lines
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


@dataclass(frozen=True)
class OwnedConversation:
    id: str
    user_id: str


async def get_conversation(
    rt: RuntimeDep, user: CurrentUser, cid: Annotated[str, Path()]
) -> OwnedConversation:
    """The conversation in the path, if the caller owns it; 403 for anything else."""
    if not await rt.store.is_owner(cid=cid, user_id=user.id):
        raise AccessDenied()
    logs.bind(conversation_id=cid)
    return OwnedConversation(cid, user.id)


ConversationDep = Annotated[OwnedConversation, Depends(get_conversation)]


@dataclass(frozen=True)
class NewestRun:
    """The caller's conversation and its newest run kept in Redis (None if none is)."""

    cid: str
    user_id: str
    record: RunRecord | None


async def get_newest_run(
    request: Request, cid: Annotated[str, Path()], authorization: Authorization
) -> NewestRun:
    """As ConversationDep, with the conversation's newest run read in the same round trip
    as its owner: the session endpoints' hot path, polled by every open page."""
    rt: Runtime = request.app.state.runtime
    user = await authenticate(rt, request.app.state.token_cache, authorization=authorization)
    owner, record = await rt.runs.owner_and_newest(cid) if is_uuid(cid) else (None, None)
    if not await rt.store.is_owner(cid=cid, user_id=user.id, cached=owner):
        raise AccessDenied()
    logs.bind(user_id=user.id, conversation_id=cid)
    return NewestRun(cid, user.id, record)


NewestRunDep = Annotated[NewestRun, Depends(get_newest_run)]


@dataclass(frozen=True)
class Follower:
    """Who may follow a conversation's runs: the owner by bearer token, or by stream token."""

    cid: str
    user_id: str


async def get_follower(
    request: Request,
    rt: RuntimeDep,
    cid: Annotated[str, Path()],
    authorization: Authorization,
    token: Annotated[
        str | None,
        Query(
            max_length=1024,
            description="A stream token from `POST …/stream-token`, for clients that cannot "
            "send `Authorization` (browsers' EventSource); used only when no header is sent.",
        ),
    ] = None,
) -> Follower:
    follower = await authorize_follower(
        rt, request.app.state.token_cache, cid=cid, authorization=authorization, token=token
    )
    logs.bind(conversation_id=cid, user_id=follower.user_id)
    return follower


FollowerDep = Annotated[Follower, Depends(get_follower)]


async def authorize_follower(
    rt: Runtime,
    cache: TokenCache,
    *,
    cid: str,
    authorization: str | None,
    token: str | None,
    path: str | None = None,
) -> Follower:
    """The caller, if they may follow the runs of conversation `cid` (or read its file `path`).

    The owner may, by bearer token; so may the holder of a stream token of `cid`
    (a file link's token of `cid` and `path`, for a file), which counts only when
    no `Authorization` header is sent. Raises Unauthorized for a credential that
    is not valid, AccessDenied for another's conversation.
    """
    if authorization is None and token is not None:
        key = await tokens.signing_key(rt.redis, rt.settings.secret_key)
        user_id = tokens.verify(key, token, cid=cid, path=path)
        if user_id is None:
            what = "stream token: ask for a new one" if path is None else "file link"
            raise Unauthorized(f"Invalid or expired {what}.")
        return Follower(cid, user_id)
    user = await authenticate(rt, cache, authorization=authorization)
    if not await rt.store.is_owner(cid=cid, user_id=user.id):
        raise AccessDenied()
    return Follower(cid, user.id)


async def refusal(request: Request) -> Refused | None:
    """The 401 or 403 the route's own dependencies would give this request, if any.

    For the error handlers: FastAPI reads and validates a request's body and
    parameters before any dependency runs, and `turnstream.api.errors` asks this
    before it answers about them. Other errors (an outage) propagate.
    """
    rt: Runtime = request.app.state.runtime
    cache: TokenCache = request.app.state.token_cache
    authorization = request.headers.get("authorization")
    cid = request.path_params.get("cid")
    try:
        if cid is None:
            await authenticate(rt, cache, authorization=authorization)
        else:
            # A bearer token of the owner, or (as on resume) a stream token of this
            # conversation: either already proves the caller may see it.
            token = request.query_params.get("token")
            path = request.path_params.get("path")
            await authorize_follower(
                rt, cache, cid=cid, authorization=authorization, token=token, path=path
            )
    except (Unauthorized, AccessDenied) as refused:
        return refused
    return None
