"""SQL tables. Times are timezone-aware UTC; ids are UUIDv7 strings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database; SQLite alone would hand back naive ones."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[dict[str, Any]]: JSON}


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiToken(Base):
    """A bearer token, kept only as its SHA-256 digest (and its first few characters)."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The token's start (`ts_` and 4 of its 43 random characters), so that `token list`
    # can show which token is which. None for tokens made before migration 0002.
    prefix: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_user_updated", "user_id", "updated_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200), default="New conversation")
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    # The next message sequence. Bumped inside every append, so the row lock
    # (PostgreSQL) or the write lock (SQLite) serialises concurrent writers.
    next_sequence: Mapped[int] = mapped_column(Integer, default=0)
    # Bumped by every write; the Redis cache only ever moves forward in it.
    version: Mapped[int] = mapped_column(Integer, default=0)
    # The workspace's totals, moved in every write of its files: the limits are checked
    # against them, and the update that moves them serialises the workspace's writers.
    workspace_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    workspace_files: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Message(Base):
    __tablename__ = "messages"
    # The session index finds a run's messages (save_run) without reading the conversation's.
    __table_args__ = (
        UniqueConstraint("conversation_id", "sequence"),
        Index("ix_messages_session", "conversation_id", "session_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    sequence: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str | None] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(String(128))
    tool_call_id: Mapped[str | None] = mapped_column(String(128))
    refusal: Mapped[str | None] = mapped_column(Text)
    tool_calls: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    function_call: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="complete")
    session_id: Mapped[str | None] = mapped_column(String(160))
    # Workspace files: on a user message, those uploaded since the one before; on a run's
    # last assistant message, those the run wrote or deleted (no links: they expire).
    files: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Run(Base):
    """The durable record of a run; Redis holds its live state and events."""

    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_conversation", "conversation_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(160), primary_key=True)  # the session id
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    # The history the run's agent got: its estimated tokens, and the prompt tokens the
    # model counted in its first call (context/budget.py calibrates the estimate by them).
    context_estimate: Mapped[int | None] = mapped_column(Integer)
    context_tokens: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RunEvents(Base):
    """A run's events, archived: consecutive entries of its stream, compressed (store/archive.py).

    A run has a few rows: the entries a trim would have dropped while it ran, the rest
    before its end, then `error`/`end`. Deleting the run (with its conversation) deletes them.
    """

    __tablename__ = "run_events"
    __table_args__ = (Index("ix_run_events_created", "created_at"),)

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    first_seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(Integer)
    last_id: Mapped[str] = mapped_column(String(41))  # the newest entry's id: a cursor
    last_ts: Mapped[int] = mapped_column(BigInteger)  # and its time, ms
    events: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WorkspaceFile(Base):
    """One file of a conversation's workspace (store/workspace.py): its bytes and what they are.

    `version` counts the writes of the path (1 for the first); `uploaded` marks a file
    the user uploaded that no user message has announced to the agent yet.
    """

    __tablename__ = "workspace_files"

    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    media_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    uploaded: Mapped[bool] = mapped_column(Boolean, default=False)
    data: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    modified_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ContextSummary(Base):
    """The summary of a conversation's oldest messages, through `through_sequence`
    (context/compaction.py). Each later turn starts from the newest one; the messages
    themselves are never changed. `model` None: no model wrote it, it says what is left out.
    """

    __tablename__ = "context_summaries"
    __table_args__ = (
        Index("ix_context_summaries_conversation", "conversation_id", "through_sequence"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    through_sequence: Mapped[int] = mapped_column(Integer)
    through_message_id: Mapped[str] = mapped_column(String(36))
    content: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


# Entries are numbered in append order on every database: SQLite autoincrements only an
# INTEGER primary key.
_Position = BigInteger().with_variant(Integer(), "sqlite")


class ClaudeSession(Base):
    """The Claude Code session a conversation resumes (store/claude_sessions.py).

    `session_id` is set once a run's reply has been mirrored whole, with the run it
    answered (`through_run`); `bytes` counts its stored entries against
    TURNSTREAM_CLAUDE_SESSION_BYTES, and `full` says the last run went past it, so the
    entries are not whole and the next turn starts a new session.
    """

    __tablename__ = "claude_sessions"

    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    session_id: Mapped[str | None] = mapped_column(String(64))
    through_run: Mapped[str | None] = mapped_column(String(160))
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    full: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ClaudeSessionEntry(Base):
    """One line of a Claude Code session transcript, as the SDK mirrored it: opaque JSON.

    Keyed like the SDK's `SessionKey` (`subpath` "" for the main transcript), within
    the conversation; an entry's `uuid` is stored once per key.
    """

    __tablename__ = "claude_session_entries"
    __table_args__ = (
        UniqueConstraint(
            "conversation_id",
            "project_key",
            "session_id",
            "subpath",
            "uuid",
            name="uq_claude_session_entries_key_uuid",
        ),
    )

    position: Mapped[int] = mapped_column(_Position, primary_key=True, autoincrement=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    project_key: Mapped[str] = mapped_column(String(255))
    session_id: Mapped[str] = mapped_column(String(255))
    subpath: Mapped[str] = mapped_column(String(255))
    uuid: Mapped[str | None] = mapped_column(String(64))
    entry: Mapped[str] = mapped_column(Text)  # the JSON text
    size: Mapped[int] = mapped_column(Integer)  # its UTF-8 bytes
