"""The plain (non-streaming) requests, without I/O: what to send and how to read the answer.

Each function returns a `Call`; `Client` sends it with httpx.Client and
`AsyncClient` with httpx.AsyncClient, and both hand the response to
`call.parse`. So the two clients share every path, parameter and answer
rule, and differ only in how they wait. Paths and fields are those of
docs/protocol.md, "Endpoints".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from turnstream.client.errors import api_error
from turnstream.client.models import (
    ActiveSession,
    ApprovalResult,
    Conversation,
    ConversationPage,
    FileEntry,
    FileList,
    Message,
    StopResult,
    TaskStatus,
)

T = TypeVar("T")

# A file to upload: a file on disk (its name is the part's filename), or
# (name, bytes or a binary file object[, media type]).
Upload = str | os.PathLike[str] | tuple[str, bytes | IO[bytes]] | tuple[str, bytes | IO[bytes], str]

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
    # A multipart form: its file parts and its text fields.
    files: list[tuple[str, Any]] | None = None
    data: dict[str, str] | None = None


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


def file_path(cid: str, path: str) -> str:
    """`…/{cid}/files/{path}`: the path's `/` kept, as in the server's links; each segment
    percent-encoded, `.` and `..` too, so that no URL normalisation resolves them (the
    server refuses them as invalid paths)."""
    segments = [quote(part, safe="") for part in path.split("/")]
    return "/".join([conversation_path(cid, "files"), *map(_no_dots, segments)])


def _no_dots(segment: str) -> str:
    return "%2E" * len(segment) if segment in (".", "..") else segment


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


def decide(cid: str, approval_id: str, approved: bool, reason: str) -> Call[ApprovalResult]:
    body: dict[str, Any] = {"approved": approved}
    if reason:
        body["reason"] = reason
    path = conversation_path(cid, "approvals", approval_id)
    return Call("POST", path, _json(ApprovalResult.from_json), json=body)


def message_opening(cid: str, content: str, multitask: str, key: str) -> Opening:
    params = {"stream": "true", "multitask": multitask}
    return Opening(conversation_path(cid, "message") + "/", params, {"content": content}, key)


def regenerate_opening(cid: str, multitask: str, key: str) -> Opening:
    params = {"stream": "true", "multitask": multitask}
    return Opening(conversation_path(cid, "regenerate"), params, None, key)


# -- the workspace --------------------------------------------------------------------


def upload(
    base_url: str, cid: str, files: Sequence[Upload], path: str | None
) -> Call[list[FileEntry]]:
    """POST …/files, one `file` part each. A file on disk is read now, whole (the server
    takes at most TURNSTREAM_WORKSPACE_FILE_BYTES a file); a file object is read by httpx."""
    if not files:
        raise ValueError("upload() needs at least one file")
    parts = [("file", _part(file)) for file in files]
    data = {"path": path} if path is not None else None
    parse = _json(lambda body: [FileEntry.from_json(item, base_url) for item in body])
    return Call("POST", conversation_path(cid, "files"), parse, files=parts, data=data)


def _part(file: Upload) -> tuple[str, Any] | tuple[str, Any, str]:
    if isinstance(file, tuple):
        return file
    on_disk = Path(file)
    return on_disk.name, on_disk.read_bytes()


def files(base_url: str, cid: str, prefix: str) -> Call[FileList]:
    params: dict[str, str | int] | None = {"prefix": prefix} if prefix else None
    parse = _json(lambda body: FileList.from_json(body, base_url))
    return Call("GET", conversation_path(cid, "files"), parse, params=params)


def download(cid: str, path: str) -> Call[bytes]:
    return Call("GET", file_path(cid, path), lambda response: checked(response).content)


def delete_file(cid: str, path: str) -> Call[None]:
    return Call("DELETE", file_path(cid, path), _nothing)
