"""A Python client for a turnstream server, sync (`Client`) and asyncio (`AsyncClient`), on httpx.

    from turnstream.client import Client

    with Client("http://localhost:8000", token="ts_…") as client:
        cid = client.create_conversation(title="Trip").id
        for event in client.send(cid, "hello"):      # queued, start, delta…, end
            if event.type == "delta":
                print(event.text, end="", flush=True)

It speaks the HTTP protocol of docs/protocol.md and imports nothing from the
server side of turnstream (an import-linter contract in pyproject.toml keeps
it so): it can be used against any turnstream server.

    models.py        the typed answers: Event, Conversation, Message, FileEntry, …
    errors.py        the exceptions (their tree is drawn there)
    sse.py           Server-Sent Events, line by line
    calls.py         the plain requests, without I/O: paths, parameters, answers
    follow.py        following a run across dropped connections, without I/O
    sync_client.py   Client: calls.py and follow.py over httpx.Client
    async_client.py  AsyncClient: the same over httpx.AsyncClient
"""

from turnstream.client.async_client import AsyncClient
from turnstream.client.errors import (
    ApiError,
    ApprovalDecided,
    ApprovalNotFound,
    ClientError,
    ConnectionFailed,
    CursorExpired,
    FileNotFound,
    InvalidPath,
    StreamBroken,
    WorkspaceFull,
)
from turnstream.client.follow import Retry
from turnstream.client.models import (
    ActiveSession,
    Approval,
    ApprovalRequest,
    ApprovalResult,
    Conversation,
    ConversationPage,
    Event,
    FileChange,
    FileEntry,
    FileList,
    Message,
    StopResult,
    TaskStatus,
)
from turnstream.client.sync_client import Client

__all__ = [
    "ActiveSession",
    "ApiError",
    "Approval",
    "ApprovalDecided",
    "ApprovalNotFound",
    "ApprovalRequest",
    "ApprovalResult",
    "AsyncClient",
    "Client",
    "ClientError",
    "ConnectionFailed",
    "Conversation",
    "ConversationPage",
    "CursorExpired",
    "Event",
    "FileChange",
    "FileEntry",
    "FileList",
    "FileNotFound",
    "InvalidPath",
    "Message",
    "Retry",
    "StopResult",
    "StreamBroken",
    "TaskStatus",
    "WorkspaceFull",
]
