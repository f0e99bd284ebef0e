"""The versioned Redis cache of conversations: `chat:session:{cid}`.

The cached value is a `CachedConversation` (the conversation with all its
messages) stamped with the `version` of the conversation row it was built
from. Every write in SQL bumps that version. Two rules keep the cache from
ever serving something older than the database:

- Versions only move forward. Every fill and tombstone goes through one Lua
  script (`lua/set_if_newer.lua`) that refuses to replace a newer version, so
  a reader that loaded the database before a write cannot cache its snapshot
  over the write's.
- Tombstones. A write patches the cached copy in place only when it holds
  exactly the previous version (`lua/patch.lua` checks it as it writes).
  Otherwise (nothing cached, a gap, another writer in between) it leaves a
  tombstone, `{"version": v, "stale": true}`, which refuses every snapshot
  older than `v` and yields to the first live copy at `v` or later. A deleted
  conversation gets a tombstone at `_DELETED_VERSION`, which no conversation
  reaches.

Both rules need the write to reach Redis. One that cannot (Redis down,
restarting, or cut off from this process alone) leaves the older copy cached
and live, and AOF keeps it through a restart: it would be served until the
next write or the TTL. So a read trusts no copy by itself: `ChatStore.load`
first reads the row's version (one primary-key lookup of one integer) and
takes the copy only at that version or later; else it reads SQL and fills,
which replaces the older copy, so the first read after an outage repairs it.
The check is on every read because nothing less holds across processes: an
in-process list of conversations whose patch failed helps only the writer
(the readers are other API processes and workers) and dies with it; marking
entries suspect, or shortening their TTL, needs the very Redis that could
not be reached, and a writer cut off from Redis while the others still reach
it cannot tell them anything. SQL is the one place every write reached.
Measured here, a cache hit went from 0.2 to 1.3-1.4 ms (SQLite and
PostgreSQL alike; reading 40 messages from SQL: 2.1-2.2 ms); a load comes
once per run or page, never per event.

The cached copy holds the conversation's newest `CACHED_MESSAGES` messages
only (`truncated` when there are older ones): a write patches it, reading and
writing the whole value, so a copy of every message would make each write of
a long conversation slower than the one before (at 600 turns of 2,000
characters, 2.4 MB three times a turn). A conversation up to that size is
served whole from the cache; a longer one's `GET /conversations/{cid}` reads
SQL, and an agent's history never comes from here (store/context.py reads
what its budget needs).

Beside it, `chat:owner:{cid}` holds the conversation's owner for the
ownership check on every request. Owners never change, so it needs no
version: it is filled once (NX, so never over the "" a delete leaves) and read
from then on.

Redis errors never escape from here: they are logged or ignored, and the
caller goes on with the database.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from turnstream import keys, lua
from turnstream.store.views import CachedConversation, MessageView

logger = logging.getLogger("turnstream.store")

_SET_IF_NEWER = lua.load("set_if_newer")
_PATCH = lua.load("patch")

# A tombstone version no conversation reaches (and exact in Lua's doubles).
_DELETED_VERSION = 2**53

# A change to apply to a cached copy, the same one a write made in SQL.
Patch = Callable[[CachedConversation], None]

CACHED_MESSAGES = 32  # the newest messages a cached copy keeps


class ConversationCache:
    """The cached copies and owners of conversations, for the store to call after SQL."""

    def __init__(self, redis: Redis, *, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl
        self._set_if_newer = redis.register_script(_SET_IF_NEWER)
        self._patch = redis.register_script(_PATCH)

    async def get(self, *, cid: str) -> CachedConversation | None:
        """The cached conversation; None if absent, a tombstone, unreadable or Redis is down."""
        try:
            raw = await self.redis.get(keys.session_cache(cid))
        except RedisError as exc:
            logger.warning("session cache unavailable, reading the database: %s", exc)
            return None
        return None if raw is None else _parse(raw)

    async def fill(self, *, conversation: CachedConversation) -> None:
        """Cache a snapshot read from the database, unless a newer version is cached."""
        try:
            await self._set_if_newer(
                keys=[keys.session_cache(conversation.id)],
                args=[
                    _trimmed(conversation).model_dump_json(),
                    conversation.version,
                    "0",
                    self.ttl,
                ],
            )
        except RedisError as exc:
            logger.warning("could not fill the session cache of %s: %s", conversation.id, exc)

    async def patch(self, *, cid: str, version: int, now: datetime, change: Patch | None) -> None:
        """Apply a write to the cached copy if it is exactly one version behind.

        `change` None: the write changed nothing but the version.

        Anything else (nothing cached, a tombstone, a gap, a racing writer) gets
        a tombstone at `version`, so a read that loaded the database before this
        write cannot cache its snapshot.
        """
        key = keys.session_cache(cid)
        try:
            raw = await self.redis.get(key)
            cached = _parse(raw) if raw is not None else None
            if cached is not None and cached.version == version - 1:
                if change is not None:
                    change(cached)
                cached.version, cached.updated_at = version, now
                patched = _trimmed(cached).model_dump_json()
                # Written only if no other writer came in between (else the tombstone below).
                if await self._patch(keys=[key], args=[patched, version - 1]):
                    return
        except RedisError as exc:
            logger.warning("could not update the session cache of %s: %s", cid, exc)
            return
        await self.tombstone(cid=cid, version=version)

    async def tombstone(self, *, cid: str, version: int) -> None:
        """Refuse every cached snapshot older than `version`."""
        try:
            await self._set_if_newer(
                keys=[keys.session_cache(cid)],
                args=[f'{{"version":{version},"stale":true}}', version, "1", self.ttl],
            )
        except RedisError as exc:
            logger.warning("could not invalidate the session cache of %s: %s", cid, exc)

    async def owner(self, *, cid: str) -> bytes | str | None:
        """The cached owner ("" once deleted); None if not cached or Redis is down."""
        try:
            return await self.redis.get(keys.owner(cid))
        except RedisError as exc:
            logger.warning("owner cache unavailable, reading the database: %s", exc)
            return None

    async def set_owner(self, *, cid: str, user_id: str, only_if_absent: bool) -> None:
        """Remember the owner; `only_if_absent` (NX) when filling it from the database."""
        with contextlib.suppress(RedisError):
            await self.redis.set(
                keys.owner(cid), user_id, ex=keys.OWNER_TTL_SECONDS, nx=only_if_absent
            )

    async def forget(self, *, cid: str) -> None:
        """For a deleted conversation: a tombstone no snapshot can ever replace, no owner."""
        await self.tombstone(cid=cid, version=_DELETED_VERSION)
        try:
            await self.redis.set(keys.owner(cid), "", ex=keys.OWNER_TTL_SECONDS)
        except RedisError as exc:
            logger.warning("could not mark %s deleted in the owner cache: %s", cid, exc)


def retitle(title: str) -> Patch:
    def apply(cached: CachedConversation) -> None:
        cached.title = title

    return apply


def add_usage(prompt_tokens: int, completion_tokens: int) -> Patch:
    def apply(cached: CachedConversation) -> None:
        cached.prompt_tokens += prompt_tokens
        cached.completion_tokens += completion_tokens

    return apply


def add_message(message: MessageView) -> Patch:
    """The patch for a message inserted or replaced (by id) in SQL."""

    def apply(cached: CachedConversation) -> None:
        others = [m for m in cached.messages if m.id != message.id]
        cached.messages = sorted([*others, message], key=lambda m: m.sequence)

    return apply


def replace_run(session_id: str, messages: list[MessageView]) -> Patch:
    """The patch for a run's messages stored in SQL, replacing any it had stored before."""

    def apply(cached: CachedConversation) -> None:
        others = [m for m in cached.messages if m.session_id != session_id]
        cached.messages = sorted([*others, *messages], key=lambda m: m.sequence)

    return apply


def _trimmed(conversation: CachedConversation) -> CachedConversation:
    """The copy to cache: the newest CACHED_MESSAGES messages, `truncated` if there were more."""
    if len(conversation.messages) <= CACHED_MESSAGES:
        return conversation
    newest = conversation.messages[-CACHED_MESSAGES:]
    return conversation.model_copy(update={"messages": newest, "truncated": True})


def _parse(raw: bytes | str) -> CachedConversation | None:
    """The cached conversation, or None for a tombstone or an unreadable value."""
    try:
        return CachedConversation.model_validate_json(raw)
    except ValueError:
        return None
