"""What the server answers, as typed objects (docs/protocol.md, "Endpoints" and "Events").

Each class is built from the server's JSON by `from_json`. Conversations and
messages are snake_case on the wire and carry ISO 8601 times, turned into
`datetime`s here; run and session bodies are camelCase on the wire and carry
milliseconds since the epoch, kept as `int`s. Fields the server adds later
are ignored.

Length: one class per kind of answer, each a few lines, and a reader looks
up any answer here; split, they would only be harder to find.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

# The fields every run event has; the others are the event's own (`Event.data`).
_EVENT_FIELDS = ("seq", "type", "ts")
FILE = "file"  # the event of a workspace file a run wrote or deleted
APPROVAL_REQUEST = "approval_request"  # a tool call waits for the user's decision
APPROVAL = "approval"  # … and was decided


@dataclass(frozen=True)
class Event:
    """One event of a run, as one SSE frame carried it.

    `type` is one of queued, start, delta, reasoning, tool_call, tool_result,
    approval_request, approval, usage, file, error and end (docs/protocol.md,
    "Event types"); `data` holds
    the event's own fields, e.g. `{"text": …}` for a delta or `{"status": …,
    "messageId": …}` for the end. `id` is the cursor: resuming from it yields
    the events after this one. A `file` event's `url` is made a full URL under
    the client's base URL (`Event.file` reads the event as a `FileChange`).
    `Event.approval_request` and `Event.approval` read those two as typed objects.
    """

    id: str
    seq: int
    type: str
    ts: int
    data: dict[str, Any]

    @property
    def text(self) -> str:
        """The text of a `delta` or `reasoning` event; "" for the others."""
        text = self.data.get("text")
        return text if isinstance(text, str) else ""

    @property
    def file(self) -> FileChange | None:
        """The workspace file a `file` event names; None for the other events."""
        return FileChange.from_json(self.data) if self.type == FILE else None

    @property
    def approval_request(self) -> ApprovalRequest | None:
        """The call an `approval_request` event asks about; None for the other events."""
        return ApprovalRequest.from_json(self.data) if self.type == APPROVAL_REQUEST else None

    @property
    def approval(self) -> Approval | None:
        """The decision an `approval` event tells of; None for the other events."""
        return Approval.from_json(self.data) if self.type == APPROVAL else None

    @classmethod
    def from_json(cls, id: str, body: dict[str, Any], base_url: str = "") -> Event:
        """`base_url`: what a `file` event's relative `url` is joined to (see `join_link`)."""
        own = {key: value for key, value in body.items() if key not in _EVENT_FIELDS}
        seq, type, ts = int(body["seq"]), str(body["type"]), int(body["ts"])
        if type == FILE and isinstance(own.get("url"), str):
            own["url"] = join_link(base_url, own["url"])
        return cls(id=id, seq=seq, type=type, ts=ts, data=own)


@dataclass(frozen=True)
class FileChange:
    """A workspace file a run wrote (`url` its signed download link, a full URL that opens
    it without the bearer token for an hour), or deleted (`deleted`, `url` None)."""

    path: str
    size: int
    media_type: str
    sha256: str
    version: int
    url: str | None
    deleted: bool = False

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> FileChange:
        return cls(
            path=body["path"],
            size=int(body["size"]),
            media_type=body["mediaType"],
            sha256=body["sha256"],
            version=int(body["version"]),
            url=body.get("url"),
            deleted=bool(body.get("deleted", False)),
        )


@dataclass(frozen=True)
class ApprovalRequest:
    """A tool call that waits for the user's decision until `expires_at` (ms): decide it
    with `approve(cid, approval_id)` or `deny(cid, approval_id, reason)`."""

    approval_id: str
    tool_call_id: str
    name: str
    arguments: str  # JSON text, as the model wrote it
    expires_at: int

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ApprovalRequest:
        return cls(
            approval_id=body["approvalId"],
            tool_call_id=body["toolCallId"],
            name=body["name"],
            arguments=body["arguments"],
            expires_at=int(body["expiresAt"]),
        )


@dataclass(frozen=True)
class Approval:
    """A call decided: by a user (any tab, any client), or denied when it expired
    (`reason` "no answer in time")."""

    approval_id: str
    tool_call_id: str
    approved: bool
    reason: str

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Approval:
        return cls(
            approval_id=body["approvalId"],
            tool_call_id=body["toolCallId"],
            approved=bool(body["approved"]),
            reason=body.get("reason") or "",
        )


@dataclass(frozen=True)
class ApprovalResult:
    """The answer to `approve` or `deny`: the decision that stands, and the run that goes on
    (once every call of its step is decided) in the same session: resume it to follow."""

    approval_id: str
    approved: bool
    session_id: str

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ApprovalResult:
        return cls(
            approval_id=body["approvalId"],
            approved=bool(body["approved"]),
            session_id=body["sessionId"],
        )


@dataclass(frozen=True)
class Message:
    """A stored message. An assistant reply's `id` is its run's `end` event's `messageId`."""

    id: str
    role: str
    content: str | None
    sequence: int
    status: str
    session_id: str | None
    created_at: datetime
    tool_calls: list[dict[str, Any]] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    # Workspace files, as the server stores them (path, size, mediaType, sha256,
    # modifiedAt, version; `deleted` for a deletion; no links): on a user message those
    # uploaded with it, on a run's last assistant message those the run wrote or deleted.
    files: list[dict[str, Any]] | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Message:
        return cls(
            id=body["id"],
            role=body["role"],
            content=body.get("content"),
            sequence=int(body["sequence"]),
            status=body["status"],
            session_id=body.get("session_id"),
            created_at=_time(body["created_at"]),
            tool_calls=body.get("tool_calls"),
            name=body.get("name"),
            tool_call_id=body.get("tool_call_id"),
            files=body.get("files"),
        )


@dataclass(frozen=True)
class Conversation:
    """A conversation. `messages` is filled only by `get_conversation`."""

    id: str
    user_id: str
    title: str
    metadata: dict[str, Any]
    prompt_tokens: int
    completion_tokens: int
    created_at: datetime
    updated_at: datetime
    messages: list[Message] = field(default_factory=list)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Conversation:
        return cls(
            id=body["id"],
            user_id=body["user_id"],
            title=body["title"],
            metadata=body.get("metadata") or {},
            prompt_tokens=int(body.get("prompt_tokens", 0)),
            completion_tokens=int(body.get("completion_tokens", 0)),
            created_at=_time(body["created_at"]),
            updated_at=_time(body["updated_at"]),
            messages=[Message.from_json(item) for item in body.get("messages", [])],
        )


@dataclass(frozen=True)
class ConversationPage:
    """One page of `list_conversations`, and how many conversations there are in all."""

    items: list[Conversation]
    total: int

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ConversationPage:
        items = [Conversation.from_json(item) for item in body["items"]]
        return cls(items=items, total=int(body["total"]))


@dataclass(frozen=True)
class ActiveSession:
    """What the conversation's newest run is doing: `status` is active, completed or idle.

    `cursor` is the newest event that run wrote. It is not a place to resume
    from: after a reload, resume `session_id` from "0-0".
    """

    session_id: str
    status: str
    cursor: str
    conversation_id: str
    started_at: int | None
    last_activity: int | None

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> ActiveSession:
        return cls(
            session_id=body["sessionId"],
            status=body["status"],
            cursor=body["cursor"],
            conversation_id=body["conversationId"],
            started_at=body.get("startedAt"),
            last_activity=body.get("lastActivity"),
        )


@dataclass(frozen=True)
class TaskStatus:
    """Whether the newest run is busy; `estimated_completion` in ms (a fact once it ended)."""

    is_active: bool
    session_id: str
    estimated_completion: int
    conversation_id: str

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> TaskStatus:
        return cls(
            is_active=bool(body["isActive"]),
            session_id=body["sessionId"],
            estimated_completion=int(body["estimatedCompletion"]),
            conversation_id=body["conversationId"],
        )


@dataclass(frozen=True)
class StopResult:
    """`status` is "cancelled" (the run has ended, its partial reply is stored) or
    "stopping" (asked, but not ended within the server's wait: watch for `end`)."""

    status: str
    session_id: str

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> StopResult:
        return cls(status=body["status"], session_id=body["sessionId"])


@dataclass(frozen=True)
class FileEntry:
    """A file of a conversation's workspace. `url` is its signed download link, a full URL
    that opens it without the bearer token (for an hour: list the files again for a new one);
    `version` counts its writes, from 1."""

    path: str
    size: int
    media_type: str
    sha256: str
    modified_at: datetime
    version: int
    url: str

    @classmethod
    def from_json(cls, body: dict[str, Any], base_url: str = "") -> FileEntry:
        return cls(
            path=body["path"],
            size=int(body["size"]),
            media_type=body["mediaType"],
            sha256=body["sha256"],
            modified_at=_time(body["modifiedAt"]),
            version=int(body["version"]),
            url=join_link(base_url, body["url"]),
        )


@dataclass(frozen=True)
class FileList:
    """A workspace's files, sorted by path; `total` files and `bytes` in all."""

    items: list[FileEntry]
    total: int
    bytes: int

    @classmethod
    def from_json(cls, body: dict[str, Any], base_url: str = "") -> FileList:
        items = [FileEntry.from_json(item, base_url) for item in body["items"]]
        return cls(items=items, total=int(body["total"]), bytes=int(body["bytes"]))


def join_link(base_url: str, link: str) -> str:
    """A link of the server's (a path from its root, `/api/v1/…?token=…`) as a full URL,
    under `base_url` as the client's own paths are (a base URL with a path keeps it).
    A full URL, or no `base_url`, leaves the link as it is."""
    if not base_url or urlsplit(link).scheme:
        return link
    return base_url.rstrip("/") + "/" + link.lstrip("/")


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)
