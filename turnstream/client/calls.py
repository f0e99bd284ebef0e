"""The plain (non-streaming) requests, without I/O: what to send and how to read the answer.

Each function returns a `Call`; `Client` sends it with httpx.Client and
`AsyncClient` with httpx.AsyncClient, and both hand the response to
`call.parse`. So the two clients share every path, parameter and answer
rule, and differ only in how they wait. Paths and fields are those of
docs/protocol.md, "Endpoints".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from turnstream.client.errors import api_error
from turnstream.client.models import (
    ActiveSession,
    Conversation,
    ConversationPage,
    Message,
    StopResult,
    TaskStatus,
)

T = TypeVar("T")

CONVERSATIONS = "/api/v1/conversations"

# Streams send `: ping` every 15 s while idle (TURNSTREAM_PING_SECONDS): a read
# waits longer than that, and `stop` waits up to 10 s for the run to end.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"}


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, str | int] | None = None
    json: Any = None


@dataclass(frozen=True)
class Opening:
    """The request that starts a run and streams it: POST …/message/ or …/regenerate."""

    path: str
    params: dict[str, str]
    json: Any
    idempotency_key: str


def conversation_path(cid: str, *rest: str) -> str:
    """`/api/v1/conversations/{cid}/…`, each part percent-encoded (session ids contain `:`)."""
    return "/".join([CONVERSATIONS, *(quote(part, safe="") for part in (cid, *rest))])


def checked(response: httpx.Response) -> httpx.Response:
    """The response if it is a success (2xx), else its `ApiError`."""
    if not response.is_success:
        raise api_error(response)
    return response


def _json(build: Callable[[Any], T]) -> Callable[[httpx.Response], T]:
    return lambda response: build(checked(response).json())


def _json_or_none(build: Callable[[Any], T]) -> Callable[[httpx.Response], T | None]:
    """404 means "nothing here" (no run kept for active-session and task-status)."""

    def parse(response: httpx.Response) -> T | None:
        if response.status_code == 404:
            return None
        return build(checked(response).json())

    return parse


def _nothing(response: httpx.Response) -> None:
    checked(response)


def create_conversation(title: str | None, metadata: dict[str, Any] | None) -> Call[Conversation]:
    body: dict[str, Any] = {}
    if title is not None:
        body["title"] = title
    if metadata is not None:
        body["metadata"] = metadata
    return Call("POST", CONVERSATIONS, _json(Conversation.from_json), json=body)


def list_conversations(limit: int, offset: int) -> Call[ConversationPage]:
    params: dict[str, str | int] = {"limit": limit, "offset": offset}
    return Call("GET", CONVERSATIONS, _json(ConversationPage.from_json), params=params)


def get_conversation(cid: str) -> Call[Conversation]:
    return Call("GET", conversation_path(cid), _json(Conversation.from_json))


def rename_conversation(cid: str, title: str) -> Call[Conversation]:
    parse = _json(Conversation.from_json)
    return Call("PATCH", conversation_path(cid), parse, json={"title": title})


def delete_conversation(cid: str) -> Call[None]:
    return Call("DELETE", conversation_path(cid), _nothing)


def messages(cid: str, limit: int, before: int | None) -> Call[list[Message]]:
    params: dict[str, str | int] = {"limit": limit}
    if before is not None:
        params["before"] = before
    parse = _json(lambda body: [Message.from_json(item) for item in body["items"]])
    return Call("GET", conversation_path(cid, "messages"), parse, params=params)


def active_session(cid: str) -> Call[ActiveSession | None]:
    path = conversation_path(cid, "active-session")
    return Call("GET", path, _json_or_none(ActiveSession.from_json))


def task_status(cid: str) -> Call[TaskStatus | None]:
    return Call("GET", conversation_path(cid, "task-status"), _json_or_none(TaskStatus.from_json))


def stop(cid: str, session_id: str | None) -> Call[StopResult]:
    params: dict[str, str | int] | None = None
    if session_id is not None:
        params = {"session_id": session_id}
    return Call("POST", conversation_path(cid, "stop"), _json(StopResult.from_json), params=params)


def message_opening(cid: str, content: str, multitask: str, key: str) -> Opening:
    params = {"stream": "true", "multitask": multitask}
    return Opening(conversation_path(cid, "message") + "/", params, {"content": content}, key)


def regenerate_opening(cid: str, multitask: str, key: str) -> Opening:
    params = {"stream": "true", "multitask": multitask}
    return Opening(conversation_path(cid, "regenerate"), params, None, key)
