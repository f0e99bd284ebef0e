"""How runs reach a worker: taskiq, in-process in embedded mode, over Redis Streams otherwise.

In-process (`serve` with its worker): taskiq's InMemoryBroker runs the task
as an asyncio task of the API process. Across processes (`serve --no-worker`
plus `turnstream worker`): taskiq-redis's RedisStreamBroker, a consumer group
with acknowledgements, so a message a crashed worker took is delivered again.
On a Redis Cluster, taskiq-redis's cluster broker (runs/cluster_broker.py).
Either way the task only names the run; the run's claim makes a second
delivery harmless.

A SIGTERMed worker (see `turnstream worker`) stops reading, lets its runs in
flight finish within the grace, then ends the claimed ones (`worker_stopped`)
and hands back the ones still waiting for their turn: no message stays pending
(see `run_task`). A stopping in-process `serve` leaves those queued instead:
its memory goes with it, and the next start (or another process, see
runs/requeue.py) hands them out again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncGenerator, Awaitable, Callable

from redis.exceptions import RedisError
from taskiq import AckableMessage, AsyncBroker, Context, InMemoryBroker, TaskiqDepends
from taskiq.exceptions import SendTaskError
from taskiq_redis import RedisStreamBroker

from turnstream import logs
from turnstream.config import Settings
from turnstream.errors import Misconfigured
from turnstream.ids import session_user
from turnstream.keys import RunKeys
from turnstream.live.status import RunStatus
from turnstream.runs.cluster_broker import cluster_stream_broker
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
    logs.bind(conversation_id=cid, session_id=sid, user_id=session_user(sid))  # its log lines
    task = asyncio.current_task()
    assert task is not None
    context.state.run_tasks.add(task)
    try:
        await execute(runtime, cid, sid, worker=context.state.worker_name)
    except asyncio.CancelledError:
        if not context.state.stopping:
            raise
        # Cancelled by the worker's shutdown hook: the run has been seen to; taskiq
        # may ack its message (a re-raise would only add a traceback to the log).
        await _left_behind(runtime, context.broker, RunKeys(cid, sid))
    finally:
        context.state.run_tasks.discard(task)


async def _left_behind(runtime: Runtime, broker: AsyncBroker, k: RunKeys) -> None:
    """A run the stopping worker did not finish: hand it back if it never started.

    A run still queued (it waited for the run before it) gets a new message on
    the queue, so another worker takes it at once; left pending instead, this
    message would reach one only through XAUTOCLAIM, after taskiq-redis's idle
    timeout of 10 minutes. In-process, it stays queued (in `chat:queued`) for
    the next start. A run that started has been ended by the executor
    (`worker_stopped`, the partial reply stored).
    """
    status = await runtime.redis.get(k.status)
    if status != RunStatus.QUEUED:
        logger.warning("run %s ended (%s): this worker stopped before it finished", k.sid, status)
    elif isinstance(broker, InMemoryBroker):
        logger.info("run %s stays queued: this process is stopping", k.sid)
    else:
        await kick(broker, k.cid, k.sid)
        logger.info("run %s handed back to the queue: this worker is stopping", k.sid)


async def drop_waiting(broker: AsyncBroker, runtime: Runtime) -> None:
    """A stopping process's run tasks not claimed yet (waiting for the run before them).

    They are cancelled before the runs they wait for end, which would let them
    start in a process that is going away, and handed back (see `_left_behind`).
    """
    broker.state.stopping = True
    waiting = [task for task in broker.state.run_tasks if task not in runtime.running]
    for task in waiting:  # no await in between, so none of them moves into `running`
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


def stream_broker(
    redis_url: str, queue_name: str, *, group: str = "turnstream-workers"
) -> StreamBroker:
    """The Redis Streams broker with turnstream's settings (bench/start_latency.py uses it too)."""
    return StreamBroker(
        redis_url,
        queue_name=queue_name,
        consumer_group_name=group,
        consumer_id="0",  # a group created late still sees messages sent before it
        # One message per read: a worker never holds messages it has not handed to
        # taskiq, which a SIGTERM would leave pending (see `_left_behind`).
        xread_count=1,
    )


def make_broker(settings: Settings, *, in_process: bool) -> AsyncBroker:
    broker: AsyncBroker
    if in_process:
        broker = InMemoryBroker(max_async_tasks=settings.worker_concurrency)
    else:
        if settings.redis_url is None:
            raise Misconfigured("A Redis Streams broker needs TURNSTREAM_REDIS_URL.")
        if settings.redis_cluster:
            broker = cluster_stream_broker(settings.redis_url, settings.queue_name)
        else:
            broker = stream_broker(settings.redis_url, settings.queue_name)
    broker.register_task(run_task, task_name=TASK_NAME)
    broker.state.worker_name = f"{socket.gethostname()}:{os.getpid()}"
    # Every run task of this process, claimed or still waiting (Runtime.running: claimed),
    # and whether the worker's shutdown hook has begun (it cancels those still here).
    broker.state.run_tasks = set()
    broker.state.stopping = False
    return broker


async def kick(broker: AsyncBroker, cid: str, sid: str) -> None:
    task = broker.find_task(TASK_NAME)
    assert task is not None
    try:
        await task.kiq(cid, sid)
    except SendTaskError as exc:
        # taskiq wraps whatever the queue's Redis raised: an outage stays the RedisError
        # it is (a 503 to a request; the queued-run look hands the run out later).
        if isinstance(exc.__cause__, RedisError):
            raise exc.__cause__ from exc
        raise


# Hands a run to a worker on this process's broker (`kick`).
Kick = Callable[[RunKeys], Awaitable[None]]


def kicker(broker: AsyncBroker) -> Kick:
    """`kick` onto `broker`, for the look at late queued runs (runs/requeue.py)."""

    async def kick_run(k: RunKeys) -> None:
        await kick(broker, k.cid, k.sid)

    return kick_run
