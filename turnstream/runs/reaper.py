"""The reaper: ends runs whose worker stopped renewing its lease.

A worker that dies (SIGKILL, lost machine) leaves its runs `running`. Every
process runs this loop; it reads the lapsed leases from the `chat:leases`
index (every shard of it, each entry checked against its run: live/indexes.py),
rebuilds each run's messages from its own stream (with the builder the
executor uses, runs/reply.py, so they are the ones its worker would have
stored), stores them, and ends the run with `error`. The finish script
re-checks the lease, so a reaper racing a live worker or another reaper
changes nothing twice. Its end archives the run's events as a worker's does
(`end_run`, runs/archiver.py); the loop also deletes archives past their retention.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from turnstream import metrics
from turnstream.clock import now_ms
from turnstream.errors import DatabaseUnavailable
from turnstream.live.status import RunStatus
from turnstream.runs import archiver
from turnstream.runs.ending import end_run
from turnstream.runtime import Runtime

logger = logging.getLogger("turnstream.reaper")

WORKER_LOST = ("The worker running this reply stopped responding.", "worker_lost")


async def reap_once(rt: Runtime) -> int:
    """End every run whose lease has lapsed; return how many this call ended."""
    ended = 0
    for k in await rt.runs.lapsed_leases():
        record = await rt.runs.get(k)
        if record is None or not record.status.active:
            continue  # it ended meanwhile; its end took it out of the index
        reply = await archiver.reply_so_far(rt, k)
        if await end_run(
            rt,
            k,
            record,
            RunStatus.ERROR,
            reply,
            error=WORKER_LOST,
            require=RunStatus.RUNNING,
            lapsed_before=now_ms(),
        ):
            logger.warning("ended run %s: its worker %s stopped responding", k.sid, record.worker)
            metrics.reaper_action("worker_lost")
            ended += 1
    return ended


async def reap_forever(rt: Runtime, stopping: asyncio.Event) -> None:
    """Reap until `stopping` is set; every `archiver.PRUNE_SECONDS`, prune old archives too.

    The event, not only cancellation, ends the loop: redis-py can swallow a
    cancel that lands mid-command, and a shutdown must never hang on that.
    """
    loop = asyncio.get_running_loop()
    judge_after = prune_after = 0.0
    while not stopping.is_set():
        try:
            if loop.time() >= judge_after:
                await reap_once(rt)
            if loop.time() >= prune_after:
                prune_after = loop.time() + archiver.PRUNE_SECONDS
                await archiver.prune(rt)
        except (RedisError, SQLAlchemyError, DatabaseUnavailable) as exc:
            logger.warning("reaper pass failed, retrying: %s", exc)
            metrics.backend_error(exc)
            if isinstance(exc, RedisError):
                # No worker could renew a lease while Redis was away: give them one
                # lease period after it is back before calling their runs lost.
                judge_after = loop.time() + rt.settings.lease_seconds
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), rt.settings.reaper_interval)
