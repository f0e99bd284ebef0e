"""How runs reach a worker: taskiq, in-process in embedded mode, over Redis Streams otherwise.

In-process (`serve` with its worker): taskiq's InMemoryBroker runs the task
as an asyncio task of the API process. Across processes (`serve --no-worker`
plus `turnstream worker`): taskiq-redis's RedisStreamBroker, a consumer group
with acknowledgements, so a message a crashed worker took is delivered again.
Either way the task only names the run; the run's claim makes a second
delivery harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncGenerator

from redis.exceptions import RedisError
from taskiq import AckableMessage, AsyncBroker, Context, InMemoryBroker, TaskiqDepends
from taskiq_redis import RedisStreamBroker

from turnstream.config import Settings
from turnstream.runs.executor import execute
from turnstream.runtime import Runtime

TASK_NAME = "turnstream.run"
_RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)

logger = logging.getLogger("turnstream.worker")


class StreamBroker(RedisStreamBroker):
    """taskiq-redis's stream broker, but a Redis outage pauses the worker instead of ending it.

    Its `listen` raises on a lost connection, which ends the worker process with
    every run in it. Here the worker waits for Redis and reads on; the runs in
    flight ride out the outage (see the executor).
    """

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        failures = 0
        while True:
            try:
                async with contextlib.aclosing(super().listen()) as messages:
                    async for message in messages:
                        failures = 0
                        yield message
            except RedisError as exc:
                delay = _RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)]
                failures += 1
                logger.warning("run queue unreachable (%s); trying again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                # A Redis that came back empty has lost the consumer group too.
                with contextlib.suppress(RedisError):
                    await self._declare_consumer_group()


async def run_task(cid: str, sid: str, context: Context = TaskiqDepends()) -> None:
    runtime: Runtime = context.state.runtime
    await execute(runtime, cid, sid, worker=context.state.worker_name)


def make_broker(settings: Settings, *, in_process: bool) -> AsyncBroker:
    broker: AsyncBroker
    if in_process:
        broker = InMemoryBroker(max_async_tasks=settings.worker_concurrency)
    else:
        assert settings.redis_url, "a Redis Streams broker needs TURNSTREAM_REDIS_URL"
        broker = StreamBroker(
            settings.redis_url,
            queue_name=settings.queue_name,
            consumer_group_name="turnstream-workers",
            consumer_id="0",  # a group created late still sees messages sent before it
        )
    broker.register_task(run_task, task_name=TASK_NAME)
    broker.state.worker_name = f"{socket.gethostname()}:{os.getpid()}"
    return broker


async def kick(broker: AsyncBroker, cid: str, sid: str) -> None:
    task = broker.find_task(TASK_NAME)
    assert task is not None
    await task.kiq(cid, sid)
