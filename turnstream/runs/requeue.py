"""Queued runs that no worker claimed in time: handed out again, and in the end ended.

A run waits in `queued` for a worker to claim it: a moment normally, longer
when it waits for the run before it (`multitask=enqueue`). The message that
names it can be lost: an in-process `serve` keeps it in memory (taskiq's
InMemoryBroker) and dies; a producer dies between the create and the kick; a
SIGKILLed `turnstream worker` held it pending (taskiq-redis reclaims such a
message only after 10 minutes idle). Queued runs have no lease, so the
reaper's lease index never sees them.

So each queued run is also indexed in `chat:queued` (its shards), just before
its create, with the deadline by which a worker must have claimed it
(`claim_seconds` from now; `claim_by` in its hash), and claim and finish take it
out (live/indexes.py: the run's hash is the truth, the entry a hint). Every process looks
at the index beside its reaper, and at a due run's status in one script
(`requeue.lua`):

- a run that waits for a live run is not late: its deadline moves on;
- a process that can run runs (an in-process `serve`, a `turnstream worker`)
  hands a late run out again on its own broker, at most once a claim window
  for all processes together; a second delivery is harmless (the claim is a
  compare-and-set), unless the request that started it never wrote its SQL
  side (it is slow, or died: see `_startable`);
- an API process with `--no-worker` cannot: it leaves the run to a worker;
- a run still unclaimed `not_started_seconds` past its deadline ends with
  `error` (`not_started`; `cancelled` if a stop was asked) and one `end`,
  with its question stored first if it had waited (enqueue), so its
  conversation is never blocked.

A starting in-process `serve` also hands out at once every queued run it
finds, due or not: after a restart, the previous process's are nobody's.
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
from turnstream.keys import RunKeys
from turnstream.live.status import Requeue, RunStatus
from turnstream.runs.approving import expire_once
from turnstream.runs.broker import Kick
from turnstream.runs.ending import end_run
from turnstream.runs.reply import Reply
from turnstream.runtime import Runtime
from turnstream.store.views import NewMessage

logger = logging.getLogger("turnstream.reaper")

NOT_STARTED = ("No worker took this run in time.", "not_started")


async def requeue_once(rt: Runtime, kick: Kick | None) -> int:
    """Look at the queued runs that are due; return how many were handed out or ended.

    Without `kick` (this process runs no runs), only runs no process that could
    run them has looked at since their give-up line are looked at: those to end.
    """
    give_up = rt.settings.not_started_seconds
    before = now_ms() - (0 if kick else int(give_up * 1000))
    acted = 0
    for k in await rt.runs.due_queued(before=before):
        found = await rt.runs.requeue(k, caller="kick" if kick else "look", give_up_seconds=give_up)
        if found is Requeue.GIVE_UP:
            acted += await give_up_run(rt, k)
        elif found is Requeue.KICK and kick is not None and await _startable(rt, k):
            logger.warning("run %s: no worker claimed it in time; handing it out again", k.sid)
            await kick(k)
            metrics.reaper_action("requeued")
            acted += 1
    return acted


async def requeue_all(rt: Runtime, kick: Kick) -> int:
    """Hand out every queued run, due or not (a starting in-process `serve`).

    Up to 10,000 of them: any beyond are handed out when they come due.
    """
    handed = 0
    give_up = rt.settings.not_started_seconds
    for k in await rt.runs.due_queued(before=None, limit=10_000):
        found = await rt.runs.requeue(k, caller="all", give_up_seconds=give_up)
        if found is Requeue.KICK and await _startable(rt, k):
            await kick(k)
            handed += 1
    if handed:
        logger.warning("%d queued run(s) left by an earlier process handed out again", handed)
    return handed


async def _startable(rt: Runtime, k: RunKeys) -> bool:
    """Whether the request that started the run wrote its SQL side (runs/service.py).

    One that did not is slow or died; run now, the reply could be stored without
    its question, or after the replies a regenerate was to delete. It is left
    for the request to finish, or, if it never does, for the give-up.
    """
    if await rt.runs.is_prepared(k):
        return True
    logger.warning("run %s: no worker claimed it, and its start never finished", k.sid)
    return False


async def give_up_run(rt: Runtime, k: RunKeys) -> bool:
    """End a queued run no worker took (`not_started`); False if it is not queued (any more).

    A run that waited for another (enqueue) has not stored its question yet: it
    goes in first, so the conversation reads question, then the (empty) reply.
    One whose stop was asked meanwhile ends `cancelled`, as its worker would have.
    """
    record = await rt.runs.get(k)
    if record is None or record.status is not RunStatus.QUEUED:
        return False
    message, enqueued = await rt.runs.question(k)
    if enqueued and record.user_message_id:
        question = NewMessage(id=record.user_message_id, role="user", content=message)
        await rt.store.save(cid=k.cid, message=question, keep_existing=True)
    status = RunStatus.ERROR
    error: tuple[str, str] | None = NOT_STARTED
    if await rt.redis.exists(k.cancel):
        status, error = RunStatus.CANCELLED, None
    if await end_run(rt, k, record, status, Reply(), error=error, require=RunStatus.QUEUED):
        logger.warning("ended run %s (%s): no worker took it in time", k.sid, status)
        metrics.reaper_action("not_started")
        return True
    return False


async def requeue_forever(
    rt: Runtime, stopping: asyncio.Event, kick: Kick | None, *, hand_out_all: bool = False
) -> None:
    """Look at the due queued runs every reaper interval until `stopping` is set.

    With `hand_out_all` (and `kick`), the first pass hands out every queued run.
    After a Redis outage no worker could claim anything: the next look waits one
    claim window, so that nothing is handed out twice or ended for that.
    """
    loop = asyncio.get_running_loop()
    judge_after = 0.0
    all_pending = hand_out_all and kick is not None
    while not stopping.is_set():
        try:
            if all_pending and kick is not None:
                await requeue_all(rt, kick)
                all_pending = False
            if loop.time() >= judge_after:
                await requeue_once(rt, kick)
                await expire_once(rt, kick)  # approvals no one answered in time
        except (RedisError, SQLAlchemyError, DatabaseUnavailable) as exc:
            logger.warning("queued-run pass failed, retrying: %s", exc)
            if isinstance(exc, RedisError):
                judge_after = loop.time() + rt.settings.claim_seconds
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), rt.settings.reaper_interval)
