"""Request and response bodies of the HTTP API (SPEC §6, §7), error bodies included.

The error bodies are what api/errors.py writes, as the OpenAPI document declares
them: `error` is fixed text a client can match on (and a generated client narrow
a union by), `detail` is for people.

Length: every body the API answers, in one module, so that the wire shapes are
read (and changed) in one place.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from turnstream.store.views import ConversationView, MessageView

_MAX_METADATA_KEYS = 64

# The characters str.strip() takes for blank, spelled out for patterns: `\s` means other
# ones in the ECMAScript patterns OpenAPI tools read (not U+0085 nor U+001C-U+001F).
WHITESPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"

# A workspace path: store/paths.py's rules as a pattern, but for bytes (a pattern counts
# characters: a segment of 255 may still be over 255 bytes in UTF-8). A character but /,
# backslash, a control character, U+2028/9 ...
_CHAR = r"[^/\\\x00-\x1f\x7f-\x9f\u2028\u2029]"
_NOT_DOT = _CHAR.replace("[^/", "[^/.")
# ... in segments of 1 to 255 that are not `.` or `..`; the first not starting with `~`.
_SEGMENT = rf"(?:{_NOT_DOT}{_CHAR}{{0,254}}|\.{_NOT_DOT}{_CHAR}{{0,253}}|\.\.{_CHAR}{{1,253}})"
_FIRST = _SEGMENT.replace("(?:[^/.", "(?:[^/.~", 1)
PATH_PATTERN = rf"{_FIRST}(?:/{_SEGMENT})*"
_BYTES = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
_ETAG = {"ETag": {"description": "The quoted sha256", "schema": {"type": "string"}}}
# A download's answers (routes/files.py).
DOWNLOAD: dict[int | str, dict[str, Any]] = {
    200: {
        "content": _BYTES,
        "description": "The file's bytes, as an attachment, of the file's media type",
        "headers": {
            **_ETAG,
            "Content-Disposition": {"description": "attachment", "schema": {"type": "string"}},
        },
    },
    206: {
        "content": _BYTES,
        "description": "The requested range of the file's bytes",
        "headers": {**_ETAG, "Content-Range": {"schema": {"type": "string"}}},
    },
    304: {"description": "The file has not changed (If-None-Match)", "headers": _ETAG},
    416: {
        "description": "The range is not within the file",
        "headers": {"Content-Range": {"description": "bytes */size", "schema": {"type": "string"}}},
    },
}


def has_lone_surrogate(value: Any) -> bool:
    """JSON can smuggle in `\\ud800`; such text cannot be stored or sent back as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_lone_surrogate(v) for v in value)
    return False


class TextBody(BaseModel):
    """A request body whose every string is valid Unicode."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        if has_lone_surrogate(data):
            raise ValueError("text must be valid Unicode (no lone surrogates)")
        return data


class ConversationCreate(TextBody):
    title: str | None = Field(None, min_length=1, max_length=200)
    metadata: dict[str, Any] = Field(default_factory=dict, max_length=_MAX_METADATA_KEYS)


class ConversationUpdate(TextBody):
    title: str = Field(min_length=1, max_length=200)


class ConversationPage(BaseModel):
    items: list[ConversationView]
    total: int


class MessagePage(BaseModel):
    items: list[MessageView]


class MessageBody(BaseModel):
    """The JSON form of a new message (a form field `content` works too)."""

    content: str = Field(
        pattern=rf"^[^\x00]*[^\x00{WHITESPACE}][^\x00]*$",
        description="The message: not blank, no NUL; at most TURNSTREAM_MAX_MESSAGE_CHARS "
        "(64,000 by default) characters, else 413",
    )


class ActiveSession(BaseModel):
    sessionId: str
    status: Literal["active", "completed", "idle"]
    cursor: str
    conversationId: str
    startedAt: int
    lastActivity: int


class TaskStatus(BaseModel):
    isActive: bool
    sessionId: str
    estimatedCompletion: int
    conversationId: str


class StopResult(BaseModel):
    status: Literal["cancelled"]
    sessionId: str


class Stopping(BaseModel):
    """The stop is asked and the run will see it, but it had not ended within the wait."""

    status: Literal["stopping"]
    sessionId: str


class RunView(BaseModel):
    sessionId: str
    conversationId: str
    userId: str
    messageId: str
    status: str
    createdAt: int
    startedAt: int | None
    endedAt: int | None
    lastActivity: int | None
    cursor: str
    worker: str | None
    error: str | None
    promptTokens: int = 0
    completionTokens: int = 0


class StreamToken(BaseModel):
    token: str
    expiresAt: int


class FileEntry(BaseModel):
    """A workspace file, with a signed link that opens it without the bearer token."""

    path: str
    size: int
    mediaType: str
    sha256: str
    modifiedAt: str
    version: int
    url: str


class FileList(BaseModel):
    items: list[FileEntry]
    total: int
    bytes: int


# --- error bodies (docs/protocol.md, "Errors and status codes") --------------------------


class Detail(BaseModel):
    """A refusal by authentication, access or routing: `detail` says why."""

    detail: str


class ErrorBody(BaseModel):
    """A refusal about a conversation's runs: none to regenerate, resume, report or stop."""

    error: Literal[
        "Nothing to regenerate",
        "Session not found or expired",
        "No active session found",
        "No background task found",
        "No active run",
    ]
    conversationId: str


class BadInput(BaseModel):
    error: Literal["Invalid message", "Invalid cursor", "Invalid path", "Invalid upload"]
    detail: str


class MessageTooLong(BaseModel):
    error: Literal["Message too long"]
    detail: str
    maxChars: int


class WorkspaceFull(BaseModel):
    error: Literal["Workspace limit reached"]
    detail: str
    limit: int
    setting: str


class FileNotFound(BaseModel):
    error: Literal["File not found"]
    path: str


class RunActive(BaseModel):
    """Another run of the conversation is going: resume it (`sessionId`) or stop it."""

    error: Literal["A run is already active in this conversation"]
    sessionId: str
    conversationId: str
    detail: str


class ReplyReplaced(BaseModel):
    """A regenerate replaced the awaited reply; `sessionId` is the newer run."""

    error: Literal["The reply was replaced by a newer run"]
    sessionId: str
    conversationId: str
    detail: str


class Resync(BaseModel):
    cursor: str
    detail: str


class CursorExpired(BaseModel):
    """The events after the cursor were trimmed: resume from `resync.cursor`."""

    error: Literal["Cursor expired"]
    sessionId: str
    resync: Resync


class CursorAhead(BaseModel):
    """The cursor is past the run's `newest` event: rebuild the reply from `0-0`."""

    error: Literal["Cursor ahead of the run"]
    sessionId: str
    newest: str
    detail: str


class NotANewMessage(BaseModel):
    """An AI SDK request whose newest message is not the user's, or that edits a sent one."""

    error: Literal["Not a new message"]
    conversationId: str
    detail: str


class RunEndedFirst(BaseModel):
    error: Literal["The run ended before it could be stopped"]
    status: str
    sessionId: str
    conversationId: str


class PathConflict(BaseModel):
    error: Literal["Path conflict"]
    path: str
    detail: str


class RateLimit(BaseModel):
    error: Literal["Too many runs started", "Too many active runs"]
    detail: str


class HeadersTooLarge(BaseModel):
    error: Literal["Request headers too large"]
    detail: str


class ServiceUnavailable(BaseModel):
    error: Literal["Redis unavailable", "Database unavailable", "Identity provider unavailable"]
    detail: str


class ApprovalDecision(BaseModel):
    """The user's answer to an `approval_request`."""

    model_config = ConfigDict(extra="forbid")

    approved: bool
    reason: str = Field("", max_length=2000, description="What the model reads when denied")


class ApprovalView(BaseModel):
    approvalId: str
    approved: bool  # the decision that stands
    sessionId: str  # the run that goes on (resume it to follow)


class ApprovalNotFound(BaseModel):
    error: Literal["Approval not found or expired"]
    approvalId: str
    conversationId: str


class ApprovalDecided(BaseModel):
    error: Literal["Approval already decided", "The run no longer waits"]
    approvalId: str
    sessionId: str
    approved: bool | None
    detail: str
