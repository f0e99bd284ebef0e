"""`turnstream worker`: taskiq worker processes that execute runs from the Redis Streams queue.

taskiq imports `broker` from here in each worker process; the startup hook
opens the process's Runtime and starts its reaper (and beside it the look at
late queued runs, runs/requeue.py), the shutdown hook (after the SIGTERM
grace) ends or hands back the runs still here.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from taskiq import TaskiqEvents, TaskiqState

from turnstream.background import PASS_SECONDS, stop_task
from turnstream.config import Settings
from turnstream.errors import Misconfigured
from turnstream.live.client import connect_redis
from turnstream.runs.broker import drop_waiting, kicker, make_broker
from turnstream.runs.reaper import reap_forever
from turnstream.runs.requeue import requeue_forever
from turnstream.runtime import Runtime, freeze_heap

logger = logging.getLogger("turnstream.worker")

settings = Settings()
broker = make_broker(settings, in_process=settings.redis_url is None)


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def _startup(state: TaskiqState) -> None:
    if settings.redis_url is None:
        raise Misconfigured(
            "turnstream worker needs TURNSTREAM_REDIS_URL: it takes runs from Redis."
        )
    redis = connect_redis(settings.redis_url, cluster=settings.redis_cluster)
    state.runtime = Runtime.open(settings, redis)
    state.reaper_stopping = asyncio.Event()
    state.reaper = asyncio.create_task(reap_forever(state.runtime, state.reaper_stopping))
    # Queued runs no worker claimed in time go on the stream again (runs/requeue.py).
    requeuer = requeue_forever(state.runtime, state.reaper_stopping, kicker(broker))
    state.requeuer = asyncio.create_task(requeuer)
    freeze_heap()
    logger.info("worker %s ready", state.worker_name)


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def _shutdown(state: TaskiqState) -> None:
    """After the grace (`worker_grace_seconds`): end or hand back every run still here.

    Runs not claimed yet (waiting for the run before them) go back on the queue
    first, before the runs they wait for end and would let them start; then
    Runtime.close() cancels the claimed ones, which end with `worker_stopped`.
    (A claim already on its way to Redis when the cancel lands leaves its run
    `running` with no one renewing its lease: the reaper ends it.)
    """
    await stop_task(state.reaper, state.reaper_stopping, finish=PASS_SECONDS)
    await stop_task(state.requeuer, state.reaper_stopping, finish=PASS_SECONDS)
    await drop_waiting(broker, state.runtime)
    await state.runtime.close()
    # The MCP servers this process started (turnstream/mcp/). Only a process that loaded
    # MCP tools started any: the others do not import the SDK (about 1 s of CPU) for it.
    catalog = sys.modules.get("turnstream.mcp.catalog")
    if catalog is not None:
        await catalog.close_servers()
