"""How runs reach a worker: taskiq, in-process in embedded mode, over Redis Streams otherwise.

In-process (`serve` with its worker): taskiq's InMemoryBroker runs the task
as an asyncio task of the API process. Across processes (`serve --no-worker`
plus `turnstream worker`): taskiq-redis's RedisStreamBroker, a consumer group
with acknowledgements, so a message a crashed worker took is delivered again.
Either way the task only names the run; the run's claim makes a second
delivery harmless.
"""

from __future__ import annotations

import os
import socket

from taskiq import AsyncBroker, Context, InMemoryBroker, TaskiqDepends
from taskiq_redis import RedisStreamBroker

from turnstream.config import Settings
from turnstream.runs.executor import execute
from turnstream.runtime import Runtime

TASK_NAME = "turnstream.run"


async def run_task(cid: str, sid: str, context: Context = TaskiqDepends()) -> None:
    runtime: Runtime = context.state.runtime
    await execute(runtime, cid, sid, worker=context.state.worker_name)


def make_broker(settings: Settings, *, in_process: bool) -> AsyncBroker:
    broker: AsyncBroker
    if in_process:
        broker = InMemoryBroker(max_async_tasks=settings.worker_concurrency)
    else:
        assert settings.redis_url, "a Redis Streams broker needs TURNSTREAM_REDIS_URL"
        broker = RedisStreamBroker(
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
