"""A write that cannot reach Redis: no reader, in any process, sees an older conversation.

The writer's cache patch fails while Redis is down, so the copy cached before
the write stays in Redis, live, and the AOF brings it back with the restart.
The reader is another store (its own engine and Redis client, as another
process has); it must see what SQL holds, and its read repairs the cache.

Every test runs on SQLite and on PostgreSQL, against a `redis-server` of its own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from servers import RedisServer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from turnstream import keys
from turnstream.live.client import connect_redis
from turnstream.store.cache import Patch
from turnstream.store.chats import ChatStore
from turnstream.store.db import create_engine, session_factory
from turnstream.store.views import NewMessage

TTL = 3600


@pytest.fixture
async def stores(
    own_redis: RedisServer, sessions: async_sessionmaker[AsyncSession], database_url: str
) -> AsyncIterator[tuple[ChatStore, ChatStore]]:
    """(writer, reader): the reader with an engine and a Redis client of its own."""
    other_engine = create_engine(database_url)
    writer_redis, reader_redis = connect_redis(own_redis.url), connect_redis(own_redis.url)
    try:
        yield (
            ChatStore(sessions, writer_redis, cache_ttl=TTL),
            ChatStore(session_factory(other_engine), reader_redis, cache_ttl=TTL),
        )
    finally:
        for client in (writer_redis, reader_redis):
            await client.aclose()
        await other_engine.dispose()


def _message(content: str) -> NewMessage:
    return NewMessage(role="user", content=content)


def _cached(own_redis: RedisServer, cid: str) -> dict[str, Any] | None:
    """The cached value, read on a connection of its own (the old ones died with Redis)."""
    with redis.Redis.from_url(own_redis.url) as client:
        value = client.get(keys.session_cache(cid))
    return None if value is None else json.loads(value)


def _redis_dies_during_the_patch(store: ChatStore, own_redis: RedisServer, monkeypatch) -> None:
    """Stop Redis between the write's SQL commit and its cache patch (once)."""
    original = store.cache.patch

    async def patch(*, cid: str, version: int, now: Any, change: Patch | None) -> None:
        own_redis.stop()
        monkeypatch.setattr(store.cache, "patch", original)
        await original(cid=cid, version=version, now=now, change=change)

    monkeypatch.setattr(store.cache, "patch", patch)


async def test_a_write_redis_missed_is_seen_by_every_reader_after_the_restart(
    stores: tuple[ChatStore, ChatStore],
    own_redis: RedisServer,
    user_id: str,
    monkeypatch,
    caplog,
) -> None:
    writer, reader = stores
    cid = (await writer.create(user_id=user_id, title="before")).id
    await writer.append(cid=cid, message=_message("one"))
    before = await reader.load(cid=cid)
    assert before is not None and [m.content for m in before.messages] == ["one"]
    assert (_cached(own_redis, cid) or {}).get("version") == 1

    _redis_dies_during_the_patch(writer, own_redis, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="turnstream.store"):
        await writer.append(cid=cid, message=_message("two"))  # SQL: version 2; Redis: down
        await writer.rename(cid=cid, title="after")  # version 3, Redis still down
        during = await reader.load(cid=cid)  # the database answers
    assert any("could not update the session cache" in r.getMessage() for r in caplog.records)
    own_redis.start()

    # The outage is real: the copy of version 1 is back from the AOF, live, not a tombstone.
    stale = _cached(own_redis, cid)
    assert stale is not None and stale["version"] == 1 and "stale" not in stale
    for store in (reader, writer, reader):
        loaded = await store.load(cid=cid)
        assert loaded is not None and during is not None
        assert (loaded.version, loaded.title) == (during.version, during.title) == (3, "after")
        assert [m.content for m in loaded.messages] == ["one", "two"]
    repaired = _cached(own_redis, cid)  # the first read after the outage refilled it
    assert repaired is not None and repaired["version"] == 3 and len(repaired["messages"]) == 2

    await writer.append(cid=cid, message=_message("three"))  # patches the repaired copy
    assert (_cached(own_redis, cid) or {}).get("version") == 4
    loaded = await reader.load(cid=cid)
    assert loaded is not None and [m.content for m in loaded.messages] == ["one", "two", "three"]


async def test_a_conversation_deleted_while_redis_was_down_stays_deleted(
    stores: tuple[ChatStore, ChatStore], own_redis: RedisServer, user_id: str
) -> None:
    writer, reader = stores
    cid = (await writer.create(user_id=user_id)).id
    await writer.append(cid=cid, message=_message("secret"))
    assert await reader.load(cid=cid) is not None  # cached, live

    own_redis.stop()
    await writer.delete(cid=cid)  # SQL: gone; the cache's tombstone cannot be written
    own_redis.start()

    assert (_cached(own_redis, cid) or {}).get("version") == 1  # still cached, live
    assert await reader.load(cid=cid) is None
    assert await reader.history(cid=cid) == []
