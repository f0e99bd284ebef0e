"""What the store returns: plain pydantic views of rows, also the API's response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["user", "assistant", "system", "developer", "tool", "function"]
MessageStatus = Literal["complete", "partial", "cancelled", "error"]


class _MessageFields(BaseModel):
    """What a message says (SPEC §8), whether new or stored."""

    role: Role
    content: str | None = None
    name: str | None = None
    tool_call_id: str | None = None
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    function_call: dict[str, Any] | None = None
    status: MessageStatus = "complete"
    session_id: str | None = None
    # Workspace files (`FileInfo.entry`): on a user message those uploaded with it, on a
    # run's last assistant message those the run wrote or deleted.
    files: list[dict[str, Any]] | None = None


class MessageView(_MessageFields):
    model_config = ConfigDict(from_attributes=True)

    id: str
    sequence: int
    created_at: datetime


class ConversationView(BaseModel):
    model_config = ConfigDict(from_attributes=True, populate_by_name=True)

    id: str
    user_id: str
    title: str
    metadata: dict[str, Any] = Field(default_factory=dict, validation_alias="meta")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    created_at: datetime
    updated_at: datetime


class CachedConversation(ConversationView):
    """The `chat:session:{cid}` value: the conversation, its messages, and its version.

    Loaded from SQL it has them all; cached, only the newest `CACHED_MESSAGES`, with
    `truncated` when older ones exist (store/cache.py says why).
    """

    version: int
    messages: list[MessageView]
    truncated: bool = False


class NewMessage(_MessageFields):
    """A message to append; the store gives it its sequence (and an id if it has none)."""

    id: str | None = None
