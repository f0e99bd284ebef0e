"""Conversations and their messages: SQL is the truth, Redis a cache in front.

Two rules keep concurrent writers from losing anything:

- A message's sequence comes from the conversation row, bumped by the same
  transaction that inserts the message. PostgreSQL's row lock and SQLite's
  write lock serialise appends across processes; no in-process lock is needed.
- Every write bumps the conversation's `version`. The cached JSON carries the
  version it was built from, and a Lua script only lets the cache move forward:
  a write patches the cached copy when it holds exactly the previous version,
  and otherwise leaves a tombstone that no older snapshot can overwrite.

Redis failures never fail a read or a write here: the cache is skipped and the
database answers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, WatchError
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from turnstream import keys
from turnstream.ids import is_uuid, uuid7
from turnstream.store import history
from turnstream.store.models import Conversation, Message, Run, utcnow
from turnstream.store.views import CachedConversation, ConversationView, MessageView, NewMessage

logger = logging.getLogger("turnstream.store")

# Write `ARGV[1]` unless the cache already holds a newer version (or the same
# version, live). A tombstone (`ARGV[3] == "1"`) yields to any equal version.
_SET_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, cached = pcall(cjson.decode, current)
  if ok and type(cached) == 'table' and tonumber(cached['version']) then
    local have, want = tonumber(cached['version']), tonumber(ARGV[2])
    if have > want or (have == want and (ARGV[3] == '1' or not cached['stale'])) then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
return 1
"""


# A tombstone version no conversation reaches (and exact in Lua's doubles).
_DELETED_VERSION = 2**53


class ChatStore:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], redis: Redis, *, cache_ttl: int
    ) -> None:
        self.sessions = sessions
        self.redis = redis
        self.cache_ttl = cache_ttl
        self._set_if_newer = redis.register_script(_SET_IF_NEWER)

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
        with contextlib.suppress(RedisError):
            await self.redis.set(keys.owner(row.id), user_id, ex=keys.OWNER_TTL_SECONDS)
        return ConversationView.model_validate(row)

    async def is_owner(self, *, cid: str, user_id: str) -> bool:
        """Whether `user_id` owns the conversation: one Redis GET on the hot path.

        Owners never change, so `chat:owner:{cid}` is filled once (NX, so it can
        never overwrite the "" a delete leaves) and read from then on.
        """
        if not is_uuid(cid):
            return False
        key = keys.owner(cid)
        try:
            owner = await self.redis.get(key)
        except RedisError as exc:
            logger.warning("owner cache unavailable, reading the database: %s", exc)
            owner = None
        if owner is None:
            async with self.sessions() as db:
                row = await db.get(Conversation, cid)
            if row is None:
                return False
            owner = row.user_id
            with contextlib.suppress(RedisError):
                await self.redis.set(key, owner, ex=keys.OWNER_TTL_SECONDS, nx=True)
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

    async def list(
        self, *, user_id: str, limit: int, offset: int
    ) -> tuple[list[ConversationView], int]:
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
            version = await _bump(db, cid, now, title=title)
            row = await db.get(Conversation, cid)
            assert row is not None
            view = ConversationView.model_validate(row)

        def retitle(cached: CachedConversation) -> None:
            cached.title = title

        await self._patch_cache(cid, version, now, retitle)
        return view

    async def delete(self, *, cid: str) -> None:
        async with self.sessions() as db, db.begin():
            await db.execute(delete(Message).where(Message.conversation_id == cid))
            await db.execute(delete(Run).where(Run.conversation_id == cid))
            await db.execute(delete(Conversation).where(Conversation.id == cid))
        # Outranks any version, so a read racing the delete cannot bring it back.
        await self._write_tombstone(cid, _DELETED_VERSION)
        try:
            await self.redis.set(keys.owner(cid), "", ex=keys.OWNER_TTL_SECONDS)
        except RedisError as exc:
            logger.warning("could not mark %s deleted in the owner cache: %s", cid, exc)

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
            version = await _bump(
                db,
                cid,
                now,
                prompt_tokens=Conversation.prompt_tokens + prompt_delta,
                completion_tokens=Conversation.completion_tokens + completion_delta,
            )

        def add_usage(cached: CachedConversation) -> None:
            cached.prompt_tokens += prompt_delta
            cached.completion_tokens += completion_delta

        await self._patch_cache(cid, version, now, add_usage)

    # -- messages --------------------------------------------------------------

    async def append(self, *, cid: str, message: NewMessage) -> MessageView:
        """Append a message; the database assigns its sequence inside the same write."""
        now = utcnow()
        async with self.sessions() as db, db.begin():
            view, version = await _insert(db, cid, message, now)
        await self._patch_cache(cid, version, now, _add_message(view))
        return view

    async def save(
        self, *, cid: str, message: NewMessage, keep_existing: bool = False
    ) -> MessageView:
        """Insert the message, or replace its content if its id exists (a run's reply).

        With `keep_existing`, a message already stored under the id is left as it is.
        """
        assert message.id is not None, "save() needs the message id"
        now = utcnow()
        for _attempt in range(3):
            try:
                async with self.sessions() as db, db.begin():
                    row = await db.get(Message, message.id)
                    if row is None:
                        view, version = await _insert(db, cid, message, now)
                    elif keep_existing:
                        return MessageView.model_validate(row)
                    else:
                        for field in ("content", "status", "tool_calls", "refusal"):
                            setattr(row, field, getattr(message, field))
                        version = await _bump(db, cid, now)
                        view = MessageView.model_validate(row)
            except IntegrityError:
                continue  # a concurrent save inserted the same id first: update it instead
            await self._patch_cache(cid, version, now, _add_message(view))
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

    async def delete_replies_after_last_user(self, *, cid: str) -> MessageView | None:
        """For regenerate: drop the replies that follow the last user message, return it."""
        now = utcnow()
        async with self.sessions() as db, db.begin():
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
            version = await _bump(db, cid, now)
            view = MessageView.model_validate(last_user)
        await self._write_tombstone(cid, version)
        return view

    async def add_tool_call(self, *, cid: str, session_id: str, call: dict[str, Any]) -> None:
        """Add a tool call to the current turn's assistant message, creating it if needed."""
        now = utcnow()
        async with self.sessions() as db, db.begin():
            row = await db.scalar(
                select(Message)
                .where(
                    Message.conversation_id == cid,
                    Message.role == "assistant",
                    Message.session_id == session_id,
                )
                .order_by(Message.sequence.desc())
                .limit(1)
            )
            if row is None:
                new = NewMessage(role="assistant", tool_calls=[call], session_id=session_id)
                view, version = await _insert(db, cid, new, now)
            else:
                row.tool_calls = [*(row.tool_calls or []), call]
                version = await _bump(db, cid, now)
                view = MessageView.model_validate(row)
        await self._patch_cache(cid, version, now, _add_message(view))

    # -- reads through the cache ---------------------------------------------

    async def load(self, *, cid: str) -> CachedConversation | None:
        """The conversation with all its messages: from the cache, else the database."""
        try:
            raw = await self.redis.get(keys.session_cache(cid))
        except RedisError as exc:
            logger.warning("session cache unavailable, reading the database: %s", exc)
            raw = None
        if raw is not None:
            cached = _parse_cached(raw)
            if cached is not None:
                return cached
        cached = await self._load_from_db(cid)
        if cached is not None:
            await self._write_cache(cached, tombstone=False)
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

    # -- cache maintenance ----------------------------------------------------

    async def _patch_cache(
        self,
        cid: str,
        version: int,
        now: datetime,
        mutate: Callable[[CachedConversation], None],
    ) -> None:
        """Apply a write to the cached copy if it is exactly one version behind."""
        key = keys.session_cache(cid)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                await pipe.watch(key)
                raw = await pipe.get(key)
                cached = _parse_cached(raw) if raw is not None else None
                # Patch only a copy exactly one version behind. Anything else (nothing
                # cached, a tombstone, a gap) gets a tombstone at this version, so a read
                # that loaded the database before this write cannot cache its snapshot.
                if cached is not None and cached.version == version - 1:
                    mutate(cached)
                    cached.version, cached.updated_at = version, now
                    pipe.multi()
                    pipe.set(key, cached.model_dump_json(), keepttl=True)
                    await pipe.execute()
                    return
        except WatchError:
            pass  # another writer got there first: fall through to the tombstone
        except RedisError as exc:
            logger.warning("could not update the session cache of %s: %s", cid, exc)
            return
        await self._write_tombstone(cid, version)

    async def _write_cache(self, cached: CachedConversation, *, tombstone: bool) -> None:
        try:
            await self._set_if_newer(
                keys=[keys.session_cache(cached.id)],
                args=[cached.model_dump_json(), cached.version, "0", self.cache_ttl],
            )
        except RedisError as exc:
            logger.warning("could not fill the session cache of %s: %s", cached.id, exc)

    async def _write_tombstone(self, cid: str, version: int) -> None:
        try:
            await self._set_if_newer(
                keys=[keys.session_cache(cid)],
                args=[f'{{"version":{version},"stale":true}}', version, "1", self.cache_ttl],
            )
        except RedisError as exc:
            logger.warning("could not invalidate the session cache of %s: %s", cid, exc)


def _parse_cached(raw: bytes | str) -> CachedConversation | None:
    """The cached conversation, or None for a tombstone or an unreadable value."""
    try:
        return CachedConversation.model_validate_json(raw)
    except ValueError:
        return None


def _add_message(message: MessageView) -> Callable[[CachedConversation], None]:
    def apply(cached: CachedConversation) -> None:
        others = [m for m in cached.messages if m.id != message.id]
        cached.messages = sorted([*others, message], key=lambda m: m.sequence)

    return apply


async def _bump(db: AsyncSession, cid: str, now: datetime, **values: Any) -> int:
    """Bump the conversation's version (plus any other columns); return the new version."""
    result = await db.execute(
        update(Conversation)
        .where(Conversation.id == cid)
        .values(version=Conversation.version + 1, updated_at=now, **values)
        .returning(Conversation.version)
    )
    return result.scalar_one()


async def _insert(
    db: AsyncSession, cid: str, message: NewMessage, now: datetime
) -> tuple[MessageView, int]:
    """Insert with the next sequence; return the message and the conversation's new version."""
    result = await db.execute(
        update(Conversation)
        .where(Conversation.id == cid)
        .values(
            next_sequence=Conversation.next_sequence + 1,
            version=Conversation.version + 1,
            updated_at=now,
        )
        .returning(Conversation.next_sequence, Conversation.version)
    )
    next_sequence, version = result.one()
    row = Message(
        **message.model_dump(exclude={"id"}),
        id=message.id or uuid7(),
        conversation_id=cid,
        sequence=next_sequence - 1,
        created_at=now,
    )
    db.add(row)
    await db.flush()
    return MessageView.model_validate(row), version
