"""Fixtures for the store tests: a ChatStore on real Redis and a migrated database.

`database_url` (tests/conftest.py) runs every test that uses these fixtures on
SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from turnstream.store.chats import ChatStore
from turnstream.store.db import create_engine, session_factory
from turnstream.store.users import ensure_user
from turnstream.store.views import ConversationView

CACHE_TTL = 3600


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def store(sessions: async_sessionmaker[AsyncSession], redis: Redis) -> ChatStore:
    return ChatStore(sessions, redis, cache_ttl=CACHE_TTL)


@pytest.fixture
def other_store(sessions: async_sessionmaker[AsyncSession], redis: Redis) -> ChatStore:
    """A second store on the same database and Redis, as another process has."""
    return ChatStore(sessions, redis, cache_ttl=CACHE_TTL)


@pytest.fixture
async def user_id(sessions: async_sessionmaker[AsyncSession]) -> str:
    async with sessions() as db, db.begin():
        await ensure_user(db, user_id="alice", email="alice@example.com")
    return "alice"


@pytest.fixture
async def bob(sessions: async_sessionmaker[AsyncSession]) -> str:
    """A second user, for what alice must not see."""
    async with sessions() as db, db.begin():
        await ensure_user(db, user_id="bob")
    return "bob"


@pytest.fixture
async def conversation(store: ChatStore, user_id: str) -> ConversationView:
    return await store.create(user_id=user_id, title="First chat")


@pytest.fixture
def cid(conversation: ConversationView) -> str:
    """The id of `conversation`."""
    return conversation.id
