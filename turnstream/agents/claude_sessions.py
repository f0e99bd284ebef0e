"""Claude Code's own sessions, kept by turnstream: each turn resumes the conversation's one.

The Claude Agent SDK mirrors the transcript Claude Code writes to a session store
(`ClaudeAgentOptions.session_store`: the CLI's `transcript_mirror` frames become
`append` calls, flushed before each result), and for `resume=<session id>` it
`load`s that transcript into a temporary config directory before it starts the
program, which resumes from it. `SqlSessionStore` is that store on turnstream's
database (store/claude_sessions.py), bound to one conversation. So a turn runs on
whichever worker takes it and still resumes the conversation's Claude session, with
its tool calls and results as Claude Code's own blocks, and only the new user
message is sent.

How the adapter reaches the database: the executor puts the conversation's
`ClaudeSessions` on the run's context (`RunContext.claude_sessions`), as it puts
its workspace there: made from the process's one session factory, bound to the
run's conversation, so an agent can reach no other conversation's session, and no
agent needs a setting or an engine of its own.

Before a turn (`prepare`), the session is resumed when all of this holds, else the
history goes in the prompt (agents/claude.py `prompt_of`), one log line says why,
the conversation's entries are dropped and a new session is mirrored from then on:

- the conversation has a session (its first turn has none), not past
  TURNSTREAM_CLAUDE_SESSION_BYTES (`full`);
- the session ends where the conversation does: the message before the new user
  message is the reply of the run the session last answered (a regenerate, an
  edit, a run that failed or another agent's turn break this);
- its transcript loads (entries there, each a JSON object with a `type`): loaded
  once, here, and handed to the SDK's `load` from memory.

After the turn (`Mirror.seen`), a result that is no error makes its session the
one the next turn resumes, unless a mirror write failed (the SDK's
`MirrorErrorMessage`) or went past the limit.

Nothing is kept when the options bring a session of their own (`resume`,
`continue_conversation`, `session_store`, `fork_session`) or file checkpoints
(which the SDK does not allow with a store), nor with a custom transport: the SDK
applies `resume` and materializes a transcript only for the program it starts.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from claude_agent_sdk import (
    ClaudeAgentOptions,
    Message,
    MirrorErrorMessage,
    ResultMessage,
    SessionStore,
    project_key_for_directory,
)
from claude_agent_sdk.types import SessionKey, SessionListSubkeysKey, SessionStoreEntry

from turnstream.agents.base import RunContext
from turnstream.store.claude_sessions import ClaudeSessions, Key

logger = logging.getLogger("turnstream.agents.claude")

__all__ = ["Mirror", "SqlSessionStore", "prepare"]


class SqlSessionStore(SessionStore):
    """The SDK's session store on one conversation's `ClaudeSessions`.

    Listing sessions is left out (the Protocol's own methods, which the SDK takes
    for "not implemented"): the adapter always resumes by session id.
    """

    list_sessions = SessionStore.list_sessions
    list_session_summaries = SessionStore.list_session_summaries

    def __init__(self, kept: ClaudeSessions) -> None:
        self.kept = kept
        self.full = False  # an append went past the limit: this session is not whole
        self._loaded: dict[Key, list[SessionStoreEntry]] = {}  # read before the turn

    async def append(self, key: SessionKey, entries: list[SessionStoreEntry]) -> None:
        stored = await self.kept.append(_key(key), [dict(e) for e in entries])
        if not stored and not self.full:
            self.full = True
            logger.warning(
                "conversation %s: its Claude session is past TURNSTREAM_CLAUDE_SESSION_BYTES"
                " (%d): not stored further; the next turn starts a new one",
                self.kept.cid,
                self.kept.limit,
            )

    async def load(self, key: SessionKey) -> list[SessionStoreEntry] | None:
        loaded = self._loaded.pop(_key(key), None)
        if loaded is not None:
            return loaded
        return await self.kept.load(_key(key))  # type: ignore[return-value]

    async def list_subkeys(self, key: SessionListSubkeysKey) -> list[str]:
        return await self.kept.subpaths(key["project_key"], key["session_id"])

    async def delete(self, key: SessionKey) -> None:
        await self.kept.delete(_key(key))

    async def preload(self, key: Key) -> str | None:
        """Load the main transcript for the SDK's `load`; why it cannot be resumed, if not."""
        try:
            entries = await self.kept.load(key)
        except ValueError as exc:
            return f"its stored Claude session {key.session_id} is invalid ({exc})"
        if entries is None:
            return f"its Claude session {key.session_id} is missing from the store"
        self._loaded[key] = entries  # type: ignore[assignment]
        return None


@dataclass
class Turn:
    """How one turn runs: the prompt, the options, and what watches its messages."""

    prompt: str
    options: ClaudeAgentOptions
    mirror: Mirror | None


class Mirror:
    """Watches a turn's messages; once it ended well, its session is the one to resume."""

    def __init__(self, ctx: RunContext, store: SqlSessionStore) -> None:
        self.ctx = ctx
        self.store = store
        self.failed = False

    async def seen(self, message: Message) -> None:
        if isinstance(message, MirrorErrorMessage):
            self.failed = True
            logger.warning(
                "conversation %s: a write of its Claude session failed (%s): the next turn"
                " starts a new one",
                self.ctx.conversation_id,
                message.error,
            )
        elif isinstance(message, ResultMessage) and not message.is_error:
            if not (self.failed or self.store.full):
                await self.store.kept.remember(
                    session_id=message.session_id, through_run=self.ctx.session_id
                )


async def prepare(
    ctx: RunContext,
    options: ClaudeAgentOptions,
    *,
    custom_transport: bool,
    new_message: Callable[[RunContext], str],
    transcript: Callable[[RunContext], str],
) -> Turn:
    """The turn: resuming the conversation's Claude session, or the history in the prompt."""
    kept = ctx.claude_sessions
    if kept is None or custom_transport or _own_session(options):
        return Turn(transcript(ctx), options, None)
    store = SqlSessionStore(kept)
    session_id, why = await _resumable(kept, store, project_key_for_directory(options.cwd))
    if session_id is not None:
        resumed = dataclasses.replace(options, resume=session_id, session_store=store)
        return Turn(new_message(ctx), resumed, Mirror(ctx, store))
    level = logging.INFO if why.startswith("no Claude session") else logging.WARNING
    logger.log(
        level,
        "conversation %s: %s; the history goes in the prompt, and a new session starts",
        ctx.conversation_id,
        why,
    )
    await kept.start()
    return Turn(
        transcript(ctx), dataclasses.replace(options, session_store=store), Mirror(ctx, store)
    )


async def _resumable(
    kept: ClaudeSessions, store: SqlSessionStore, project_key: str
) -> tuple[str | None, str]:
    """The session to resume, or None and why not."""
    state = await kept.kept()
    if state.full:
        return None, f"its Claude session went past TURNSTREAM_CLAUDE_SESSION_BYTES ({kept.limit})"
    if state.session_id is None:
        return None, "no Claude session kept for it yet"
    if state.answered_last is None or state.answered_last != state.through_run:
        return None, (
            f"its Claude session {state.session_id} does not end where the conversation does"
            f" (it answered run {state.through_run}; the message before this one is of"
            f" run {state.answered_last})"
        )
    if not _is_uuid(state.session_id):  # the SDK materializes only a UUID's transcript
        return None, f"its stored Claude session id {state.session_id!r} is invalid"
    why = await store.preload(Key(project_key, state.session_id))
    return (None, why) if why else (state.session_id, "")


def _own_session(options: ClaudeAgentOptions) -> bool:
    return bool(
        options.resume
        or options.continue_conversation
        or options.session_store is not None
        or options.fork_session
        or options.enable_file_checkpointing
    )


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _key(key: SessionKey | Any) -> Key:
    return Key(key["project_key"], key["session_id"], key.get("subpath") or "")
