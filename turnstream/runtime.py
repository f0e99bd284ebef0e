"""The shared resources of one process: Redis, the database, the stores, the agent.

The API's lifespan and a worker's startup each open one `Runtime`; the run
task finds it in taskiq's state.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from turnstream.agents import Agent, load_agent
from turnstream.config import Settings
from turnstream.runs.state import RunState
from turnstream.runs.stream import StreamHub
from turnstream.store.chats import ChatStore
from turnstream.store.db import create_engine, session_factory

SOCKET_TIMEOUT = 5.0
MAX_CONNECTIONS = 256


def connect_redis(url: str) -> Redis:
    """The one way this process talks to Redis: strings in and out, outages noticed quickly.

    A blocking pool: a burst of requests waits briefly for a connection instead of
    failing with "Too many connections" (redis-py's default pool refuses at once).
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=SOCKET_TIMEOUT,
        decode_responses=True,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=2.0,
    )
    return Redis(connection_pool=pool)


@dataclass
class Runtime:
    settings: Settings
    redis: Redis
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: ChatStore
    runs: RunState
    agent: Agent
    hub: StreamHub
    # Runs executing in this process, so that shutdown can end them cleanly.
    running: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def open(cls, settings: Settings, redis: Redis) -> Runtime:
        engine = create_engine(settings.database_url)
        sessions = session_factory(engine)
        return cls(
            settings=settings,
            redis=redis,
            engine=engine,
            sessions=sessions,
            store=ChatStore(sessions, redis, cache_ttl=settings.session_ttl),
            runs=RunState(redis, maxlen=settings.stream_maxlen, ttl_seconds=settings.stream_ttl),
            agent=load_agent(settings.agent),
            hub=StreamHub(redis),
        )

    async def close(self) -> None:
        await self.hub.close()
        for task in self.running:
            task.cancel()
        await asyncio.gather(*self.running, return_exceptions=True)
        await self.engine.dispose()
        await self.redis.aclose()
