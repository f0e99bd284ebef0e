"""Request and response bodies of the HTTP API (SPEC §6, §7)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from turnstream.store.views import ConversationView, MessageView

_MAX_METADATA_KEYS = 64


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


class _Text(BaseModel):
    """A request body whose every string is valid Unicode."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        if has_lone_surrogate(data):
            raise ValueError("text must be valid Unicode (no lone surrogates)")
        return data


class ConversationCreate(_Text):
    title: str | None = Field(None, min_length=1, max_length=200)
    metadata: dict[str, Any] = Field(default_factory=dict, max_length=_MAX_METADATA_KEYS)


class ConversationUpdate(_Text):
    title: str = Field(min_length=1, max_length=200)


class ConversationPage(BaseModel):
    items: list[ConversationView]
    total: int


class MessagePage(BaseModel):
    items: list[MessageView]


class MessageBody(BaseModel):
    """The JSON form of a new message (a form field `content` works too)."""

    content: str


class ErrorBody(BaseModel):
    error: str
    conversationId: str


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


class CursorExpired(BaseModel):
    error: Literal["Cursor expired"]
    sessionId: str
    resync: dict[str, Any]


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
