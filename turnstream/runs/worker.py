"""`turnstream worker`: taskiq worker processes that execute runs from the Redis Streams queue.

taskiq imports `broker` from here in each worker process; the startup hook
opens the process's Runtime and starts its reaper.
"""

from __future__ import annotations

import asyncio
import logging

from taskiq import TaskiqEvents, TaskiqState

from turnstream.background import stop_task
from turnstream.config import Settings
from turnstream.runs.broker import make_broker
from turnstream.runs.reaper import reap_forever
from turnstream.runtime import Runtime, connect_redis

logger = logging.getLogger("turnstream.worker")

settings = Settings()
broker = make_broker(settings, in_process=settings.redis_url is None)


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def _startup(state: TaskiqState) -> None:
    assert settings.redis_url, "turnstream worker needs TURNSTREAM_REDIS_URL"
    state.runtime = Runtime.open(settings, connect_redis(settings.redis_url))
    state.reaper_stopping = asyncio.Event()
    state.reaper = asyncio.create_task(reap_forever(state.runtime, state.reaper_stopping))
    logger.info("worker %s ready", state.worker_name)


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def _shutdown(state: TaskiqState) -> None:
    await stop_task(state.reaper, state.reaper_stopping)
    await state.runtime.close()
