"""The shared resources of one process: Redis, the database, the stores, the agent.

The API's lifespan and a worker's startup each open one `Runtime` over a
client from `turnstream.live.client.connect_redis`; the run task finds it in
taskiq's state.
"""

from __future__ import annotations

import asyncio
import gc
from dataclasses import dataclass, field

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from turnstream import keys
from turnstream.agents import Agent, load_agent
from turnstream.config import Settings
from turnstream.live.approvals import Approvals
from turnstream.live.state import RunState
from turnstream.live.stream import StreamHub
from turnstream.store.chats import ChatStore
from turnstream.store.db import create_engine, session_factory
from turnstream.store.workspace import FileStore
from turnstream.store.workspace_sql import SqlFileStore


@dataclass
class Runtime:
    settings: Settings
    redis: Redis
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    store: ChatStore
    files: FileStore  # the conversations' workspaces
    runs: RunState
    approvals: Approvals  # runs waiting for the user's decisions on tool calls
    agent: Agent
    hub: StreamHub
    # Runs executing in this process, so that shutdown can end them cleanly.
    running: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def open(cls, settings: Settings, redis: Redis) -> Runtime:
        # Before any key is named: hash tags on a cluster, SPEC's names on one node.
        keys.use_cluster_layout(settings.redis_cluster)
        engine = create_engine(settings.database_url, outages=True)
        sessions = session_factory(engine)
        runs = RunState(
            redis,
            maxlen=settings.stream_maxlen,
            ttl_seconds=settings.stream_ttl,
            claim_seconds=settings.claim_seconds,
            archive=settings.archive_retention > 0,
        )
        return cls(
            settings=settings,
            redis=redis,
            engine=engine,
            sessions=sessions,
            store=ChatStore(sessions, redis, cache_ttl=settings.session_ttl),
            files=SqlFileStore(sessions),
            runs=runs,
            approvals=Approvals(runs, ttl_seconds=settings.approval_ttl_seconds),
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


def freeze_heap() -> None:
    """Keep what a process made at start out of the garbage collector's full passes.

    All of it lives as long as the process, and a full pass walks every object held: under
    load one came every 2.7 s and held the event loop for about 65 ms, which was the p99 of
    the session lookups (docs/performance.md, "Session lookups"). Frozen, it takes 4 ms.
    For `serve` and a worker process, once they are set up.
    """
    gc.collect()
    gc.freeze()
