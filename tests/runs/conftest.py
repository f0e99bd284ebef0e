"""The run state's tests talk to Redis through `RunState` alone, with a plain client."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from turnstream.live.state import RunState


@pytest.fixture
async def redis(redis_url):
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def runs(redis) -> RunState:
    return RunState(redis, maxlen=100, ttl_seconds=60)
