"""Conversations and their messages: SQL is the truth, Redis a cache in front.

Two rules keep concurrent writers from losing anything:

- A message's sequence comes from the conversation row, bumped by the same
  transaction that inserts the message. PostgreSQL's row lock and SQLite's
  write lock serialise appends across processes; no in-process lock is needed.
- Every write bumps the conversation's `version` in the same transaction, then
  hands the cache (`store/cache.py`) that version and the change it made. The
  cache only moves forward: it patches its copy or leaves a tombstone; a read
  takes the copy only at the row's version or later.

Redis failures never fail a read or a write here: the cache is skipped and the
database answers.

A run is stored as the messages it produced (`save_run`): its assistant and
tool messages, written in one transaction with consecutive sequences. How a
run's events become those messages is `runs/reply.py`; how stored messages
become a transcript a provider accepts is `store/history.py`.

ChatStore is every read and write of conversations and messages, each write
following the two rules above; `store/writes.py` holds those rules' SQL.

Length: a little over 300 lines, one class: every write beside the others, so that the
two rules are checked in one place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from turnstream.ids import is_uuid, uuid7
from turnstream.store import history, writes
from turnstream.store.cache import (
    ConversationCache,
    add_message,
    add_usage,
    replace_run,
    retitle,
)
from turnstream.store.models import Conversation, Message, Run, utcnow
from turnstream.store.views import CachedConversation, ConversationView, MessageView, NewMessage
from turnstream.store.writes import Also


class ChatStore:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], redis: Redis, *, cache_ttl: int
    ) -> None:
        self.sessions = sessions
        self.cache = ConversationCache(redis, ttl=cache_ttl)

    # -- conversations --------------------------------------------------------

    async def create(
        self, *, user_id: str, title: str | None = None, metadata: dict[str, Any] | None = None
    ) -> ConversationView:
        now = utcnow()
        row = Conversation(
            id=uuid7(),
            user_id=user_id,
            title=title or "New conversation",
            meta=metadata or {},
            created_at=now,
            updated_at=now,
        )
        async with self.sessions() as db, db.begin():
            db.add(row)
        await self.cache.set_owner(cid=row.id, user_id=user_id, only_if_absent=False)
        return ConversationView.model_validate(row)

    async def is_owner(self, *, cid: str, user_id: str, cached: str | None = None) -> bool:
        """Whether `user_id` owns the conversation: one Redis GET on the hot path.

        Owners never change, so `chat:owner:{cid}` is filled once (NX, so it can
        never overwrite the "" a delete leaves) and read from then on. `cached` is
        that key's value if the caller read it already, with reads of its own.
        """
        if not is_uuid(cid):
            return False
        owner = cached if cached is not None else await self.cache.owner(cid=cid)
        if owner is None:
            async with self.sessions() as db:
                row = await db.get(Conversation, cid)
            if row is None:
                return False
            owner = row.user_id
            await self.cache.set_owner(cid=cid, user_id=owner, only_if_absent=True)
        return owner == user_id

    async def owned(self, *, cid: str, user_id: str) -> ConversationView | None:
        """The conversation if `user_id` owns it; None for unknown, foreign or malformed ids."""
        if not is_uuid(cid):
            return None
        async with self.sessions() as db:
            row = await db.get(Conversation, cid)
        if row is None or row.user_id != user_id:
            return None
        return ConversationView.model_validate(row)

    async def list_for_user(
        self, *, user_id: str, limit: int, offset: int
    ) -> tuple[list[ConversationView], int]:
        """One page of the user's conversations, most recently updated first, and their count."""
        async with self.sessions() as db:
            total = (
                await db.execute(
                    select(func.count())
                    .select_from(Conversation)
                    .where(Conversation.user_id == user_id)
                )
            ).scalar_one()
            rows = await db.scalars(
                select(Conversation)
                .where(Conversation.user_id == user_id)
                .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
                .limit(limit)
                .offset(offset)
            )
            return [ConversationView.model_validate(r) for r in rows], total

    async def rename(self, *, cid: str, title: str) -> ConversationView:
        now = utcnow()
        async with self.sessions() as db, db.begin():
            version = await writes.bump(db, cid, now, title=title)
            row = await db.get(Conversation, cid)
            assert row is not None
            view = ConversationView.model_validate(row)
        await self.cache.patch(cid=cid, version=version, now=now, change=retitle(title))
        return view

    async def delete(self, *, cid: str) -> None:
        async with self.sessions() as db, db.begin():
            await db.execute(delete(Message).where(Message.conversation_id == cid))
            await db.execute(delete(Run).where(Run.conversation_id == cid))
            await db.execute(delete(Conversation).where(Conversation.id == cid))
        # Outranks any version, so a read racing the delete cannot bring it back.
        await self.cache.forget(cid=cid)

    async def record_usage(
        self, *, cid: str, session_id: str, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Set a run's token usage and move the conversation's totals by the difference.

        Idempotent: the worker and a reaper racing to end one run count it once.
        """
        now = utcnow()
        async with self.sessions() as db, db.begin():
            # Write the run row before reading it: that takes PostgreSQL's row lock and
            # SQLite's write lock, so a racing call reads the usage this one set.
            await db.execute(update(Run).where(Run.id == session_id).values(id=Run.id))
            run = await db.get(Run, session_id)
            prompt_delta = prompt_tokens - (run.prompt_tokens if run else 0)
            completion_delta = completion_tokens - (run.completion_tokens if run else 0)
            if run is not None:
                run.prompt_tokens, run.completion_tokens = prompt_tokens, completion_tokens
            version = await writes.bump(
                db,
                cid,
                now,
                prompt_tokens=Conversation.prompt_tokens + prompt_delta,
                completion_tokens=Conversation.completion_tokens + completion_delta,
            )
        change = add_usage(prompt_delta, completion_delta)
        await self.cache.patch(cid=cid, version=version, now=now, change=change)

    # -- messages --------------------------------------------------------------

    async def append(
        self, *, cid: str, message: NewMessage, also: Also | None = None
    ) -> MessageView:
        """Append a message; the database assigns its sequence inside the same write."""
        now = utcnow()
        async with self.sessions() as db, db.begin():
            if also is not None:
                await also(db)
            view, version = await writes.insert(db, cid, message, now)
        await self.cache.patch(cid=cid, version=version, now=now, change=add_message(view))
        return view

    async def save_run(
        self,
        *,
        cid: str,
        session_id: str,
        messages: Sequence[NewMessage],
        keep_existing: bool = False,
        only_if: Callable[[], Awaitable[bool]] | None = None,
        also: Also | None = None,
    ) -> list[MessageView]:
        """Store a run's messages (all with `session_id`) in order, in one transaction.

        Messages the run stored already are replaced, keeping their place; with
        `keep_existing`, or once anything follows them, they are kept and returned;
        `only_if` (asked while the conversation's row is held) can veto the write,
        but not `also`'s."""
        now = utcnow()
        async with self.sessions() as db, db.begin():
            if also is not None:
                await also(db)
            views, version, changed = await writes.save_run(
                db, cid, session_id, messages, now, keep_existing=keep_existing, only_if=only_if
            )
        change = replace_run(session_id, views) if changed else None
        await self.cache.patch(cid=cid, version=version, now=now, change=change)
        return views

    async def save(
        self,
        *,
        cid: str,
        message: NewMessage,
        keep_existing: bool = False,
        also: Also | None = None,
    ) -> MessageView:
        """Insert the message, or replace its content if its id exists.

        With `keep_existing`, a message already stored under the id is left as it is.
        """
        assert message.id is not None, "save() needs the message id"
        now = utcnow()
        for _attempt in range(3):
            try:
                async with self.sessions() as db, db.begin():
                    if also is not None:
                        await also(db)
                    row = await db.get(Message, message.id)
                    if row is None:
                        view, version = await writes.insert(db, cid, message, now)
                    elif keep_existing:
                        return MessageView.model_validate(row)
                    else:
                        for field in ("content", "status", "tool_calls", "refusal"):
                            setattr(row, field, getattr(message, field))
                        version = await writes.bump(db, cid, now)
                        view = MessageView.model_validate(row)
            except IntegrityError:
                continue  # a concurrent save inserted the same id first: update it instead
            await self.cache.patch(cid=cid, version=version, now=now, change=add_message(view))
            return view
        raise RuntimeError(f"could not save message {message.id}")

    async def messages(
        self, *, cid: str, limit: int, before: int | None = None
    ) -> list[MessageView]:
        """Up to `limit` messages in order, the newest ones before sequence `before`."""
        query = select(Message).where(Message.conversation_id == cid)
        if before is not None:
            query = query.where(Message.sequence < before)
        async with self.sessions() as db:
            rows = list(await db.scalars(query.order_by(Message.sequence.desc()).limit(limit)))
        return [MessageView.model_validate(r) for r in reversed(rows)]

    async def delete_replies_after_last_user(
        self, *, cid: str, also: Also | None = None
    ) -> MessageView | None:
        """For regenerate: drop the replies that follow the last user message, return it."""
        now = utcnow()
        async with self.sessions() as db, db.begin():
            if also is not None:
                await also(db)
            last_user = await db.scalar(
                select(Message)
                .where(Message.conversation_id == cid, Message.role == "user")
                .order_by(Message.sequence.desc())
                .limit(1)
            )
            if last_user is None:
                return None
            await db.execute(
                delete(Message).where(
                    Message.conversation_id == cid, Message.sequence > last_user.sequence
                )
            )
            version = await writes.bump(db, cid, now)
            view = MessageView.model_validate(last_user)
        await self.cache.tombstone(cid=cid, version=version)
        return view

    # -- reads through the cache ---------------------------------------------

    async def load(self, *, cid: str) -> CachedConversation | None:
        """The conversation with all its messages: the cached copy if current and whole,
        else SQL. Current: at least the row's version, read first by primary key."""
        async with self.sessions() as db:
            version = await db.scalar(select(Conversation.version).where(Conversation.id == cid))
        if version is None:
            return None
        cached = await self.cache.get(cid=cid)
        if cached is not None and cached.version >= version and not cached.truncated:
            return cached
        cached = await self._load_from_db(cid)
        if cached is not None:
            await self.cache.fill(conversation=cached)
        return cached

    async def history(self, *, cid: str) -> list[dict[str, Any]]:
        """The conversation as OpenAI chat messages, for an agent."""
        cached = await self.load(cid=cid)
        if cached is None:
            return []
        return history.to_openai(m.model_dump() for m in cached.messages)

    async def _load_from_db(self, cid: str) -> CachedConversation | None:
        async with self.sessions() as db:
            row = await db.get(Conversation, cid)
            if row is None:
                return None
            messages = await db.scalars(
                select(Message).where(Message.conversation_id == cid).order_by(Message.sequence)
            )
            return CachedConversation(
                **ConversationView.model_validate(row).model_dump(),
                version=row.version,
                messages=[MessageView.model_validate(m) for m in messages],
            )
