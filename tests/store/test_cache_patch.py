"""A write patches the cached copy only if it still holds the version before it.

The check and the write are one script (lua/patch.lua), not a WATCH transaction,
so that it works the same on a Redis Cluster through a failover.
"""

from __future__ import annotations

from datetime import UTC, datetime

import redis as sync_redis
from redis.asyncio import Redis

from turnstream import keys
from turnstream.store.cache import ConversationCache
from turnstream.store.views import CachedConversation

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def _copy(cid: str, version: int, title: str) -> CachedConversation:
    return CachedConversation.model_validate(
        {
            "id": cid,
            "user_id": "alice",
            "title": title,
            "created_at": NOW,
            "updated_at": NOW,
            "version": version,
            "messages": [],
        }
    )


async def _cached(redis: Redis, cid: str) -> dict:
    raw = await redis.get(keys.session_cache(cid))
    assert raw is not None
    return CachedConversation.model_validate_json(raw).model_dump()


async def test_a_patch_of_the_next_version_changes_the_copy_and_keeps_its_ttl(
    redis: Redis, cid: str
) -> None:
    cache = ConversationCache(redis, ttl=600)
    await cache.fill(conversation=_copy(cid, 4, "old"))

    def rename(copy: CachedConversation) -> None:
        copy.title = "new"

    await cache.patch(cid=cid, version=5, now=NOW, change=rename)
    copy = await _cached(redis, cid)
    assert (copy["version"], copy["title"]) == (5, "new")
    assert 590 <= await redis.ttl(keys.session_cache(cid)) <= 600


async def test_a_writer_in_between_wins_and_the_late_patch_writes_nothing(
    redis: Redis, redis_url: str, cid: str
) -> None:
    cache = ConversationCache(redis, ttl=600)
    await cache.fill(conversation=_copy(cid, 4, "old"))
    other = _copy(cid, 6, "the other writer's")

    def rename_while_another_writes(copy: CachedConversation) -> None:
        # Between this patch's read and its write, a writer of a later version patches.
        with sync_redis.Redis.from_url(redis_url) as client:
            client.set(keys.session_cache(cid), other.model_dump_json(), keepttl=True)
        copy.title = "late"

    await cache.patch(cid=cid, version=5, now=NOW, change=rename_while_another_writes)
    assert await _cached(redis, cid) == other.model_dump()


async def test_a_patch_over_a_gap_or_a_tombstone_leaves_a_tombstone(redis: Redis, cid: str) -> None:
    cache = ConversationCache(redis, ttl=600)
    await cache.fill(conversation=_copy(cid, 3, "old"))
    await cache.patch(cid=cid, version=5, now=NOW, change=None)  # 4 was never seen here
    assert await cache.get(cid=cid) is None
    await cache.patch(cid=cid, version=6, now=NOW, change=None)
    assert await cache.get(cid=cid) is None
    await cache.fill(conversation=_copy(cid, 5, "a reader's older snapshot"))
    assert await cache.get(cid=cid) is None  # refused: the tombstone is at 6
    await cache.fill(conversation=_copy(cid, 6, "fresh"))
    assert (await _cached(redis, cid))["title"] == "fresh"
