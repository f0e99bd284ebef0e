"""`chat:session:{cid}` keeps a long conversation's newest messages only; reads stay whole."""

from __future__ import annotations

from redis.asyncio import Redis

from turnstream import keys
from turnstream.store.cache import CACHED_MESSAGES
from turnstream.store.chats import ChatStore
from turnstream.store.views import CachedConversation, NewMessage


async def cached(redis: Redis, cid: str) -> CachedConversation:
    raw = await redis.get(keys.session_cache(cid))
    assert raw is not None
    return CachedConversation.model_validate_json(raw)


async def test_a_short_conversation_is_cached_whole(
    store: ChatStore, redis: Redis, cid: str
) -> None:
    for n in range(4):
        await store.append(cid=cid, message=NewMessage(role="user", content=f"m{n}"))
    await store.load(cid=cid)

    copy = await cached(redis, cid)
    assert [m.content for m in copy.messages] == ["m0", "m1", "m2", "m3"]
    assert not copy.truncated


async def test_a_long_conversation_caches_its_newest_messages_and_loads_whole(
    store: ChatStore, redis: Redis, cid: str
) -> None:
    total = CACHED_MESSAGES + 8
    await store.load(cid=cid)  # cached empty: every append below patches the copy
    for n in range(total):
        await store.append(cid=cid, message=NewMessage(role="user", content=f"m{n}"))

    copy = await cached(redis, cid)
    assert copy.truncated
    assert [m.content for m in copy.messages] == [f"m{n}" for n in range(8, total)]
    loaded = await store.load(cid=cid)
    assert loaded is not None
    assert [m.content for m in loaded.messages] == [f"m{n}" for n in range(total)]
    page = await store.messages(cid=cid, limit=5, before=3)
    assert [m.content for m in page] == ["m0", "m1", "m2"]
