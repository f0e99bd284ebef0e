"""Starting and stopping runs: what the API does before a worker takes over."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
import math
from dataclasses import dataclass

from taskiq import AsyncBroker

from turnstream import keys
from turnstream.ids import session_id, uuid7
from turnstream.keys import RunKeys
from turnstream.runs.broker import kick
from turnstream.runs.executor import end_run
from turnstream.runs.reply import Reply
from turnstream.runs.state import ActiveRunLimit, RunRecord, RunStatus, now_ms
from turnstream.runtime import Runtime
from turnstream.store import runlog
from turnstream.store.views import NewMessage

logger = logging.getLogger("turnstream.runs")


class Multitask(enum.StrEnum):
    """What a new message does while another run of the conversation is active."""

    REJECT = "reject"  # 409, naming the active run
    INTERRUPT = "interrupt"  # stop the active run, then start
    ENQUEUE = "enqueue"  # start once the active run has ended


class RateLimited(Exception):
    """Too many runs started in the last minute; `retry_after` seconds until the next may."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class RunConflict(Exception):
    def __init__(self, active_session_id: str) -> None:
        super().__init__(active_session_id)
        self.active_session_id = active_session_id


@dataclass(frozen=True)
class Started:
    session_id: str
    message_id: str
    replayed: bool  # True when an Idempotency-Key matched an earlier request


async def start_run(
    rt: Runtime,
    broker: AsyncBroker,
    *,
    cid: str,
    user_id: str,
    content: str,
    multitask: Multitask,
    idempotency_key: str | None = None,
    regenerate: bool = False,
) -> Started:
    """Create a run for `content` and hand it to a worker.

    Raises RunConflict when another run is active and `multitask` is reject.
    """
    message_id = uuid7()
    sid = session_id(user_id, message_id)
    idem_key = None
    if idempotency_key is not None:
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
        idem_key = keys.idempotency(user_id, digest)
        if replay := await _replay(rt, idem_key):
            return replay
    wait_ms = await rt.runs.count_start(user_id, sid, per_minute=rt.settings.runs_per_minute)
    if wait_ms:
        raise RateLimited(retry_after=math.ceil(wait_ms / 1000))
    if idem_key is not None and not await rt.redis.set(
        idem_key, sid, nx=True, ex=keys.IDEMPOTENCY_TTL_SECONDS
    ):
        if replay := await _replay(rt, idem_key):  # a concurrent retry got there first
            return replay

    if multitask is Multitask.INTERRUPT:
        active = await rt.redis.get(keys.active(cid))
        if active is not None:
            await stop_run(rt, RunKeys(cid, active))

    k = RunKeys(cid, sid)
    user_message_id = "" if regenerate else uuid7()
    fields = {
        "session_id": sid,
        "conversation_id": cid,
        "user_id": user_id,
        "message_id": message_id,
        "user_message_id": user_message_id,
        "message": content,
    }
    # Regenerating replaces the latest reply, so it cannot wait behind another run.
    enqueue = multitask is not Multitask.REJECT and not regenerate
    try:
        created, other = await rt.runs.create(
            k, fields, enqueue=enqueue, max_active=rt.settings.max_active_runs
        )
        if not created:
            assert other is not None
            raise RunConflict(other)
    except (ActiveRunLimit, RunConflict):
        if idem_key is not None:
            await rt.redis.delete(idem_key)  # nothing started: a retry may start it
        raise
    try:
        await runlog.record_run(
            rt.sessions,
            session_id=sid,
            conversation_id=cid,
            user_id=user_id,
            message_id=message_id,
            created_at_ms=now_ms(),
        )
        if regenerate:
            await rt.store.delete_replies_after_last_user(cid=cid)
        elif other is None:
            # A message that waits for another run joins the conversation when its turn comes.
            await rt.store.append(
                cid=cid, message=NewMessage(id=user_message_id, role="user", content=content)
            )
        await kick(broker, cid, sid)
    except BaseException:
        record = await rt.runs.get(k)
        if record is not None:
            await rt.runs.finish(
                k,
                status=RunStatus.ERROR,
                message_id=message_id,
                error=("The run could not be started.", "start_failed"),
            )
        raise
    return Started(sid, message_id, replayed=False)


async def _replay(rt: Runtime, idem_key: str) -> Started | None:
    """The run an earlier request with the same Idempotency-Key started, if any."""
    first = await rt.redis.get(idem_key)
    run = await runlog.get_run(rt.sessions, session_id=first) if first else None
    return Started(run.id, run.message_id, replayed=True) if run else None


async def stop_run(rt: Runtime, k: RunKeys) -> RunRecord | None:
    """Ask the run to stop and wait (bounded) until it has ended; None if it is not active."""
    record = await rt.runs.get(k)
    if record is None or not record.status.active:
        return None
    await rt.runs.ask_stop(k)
    if record.status is RunStatus.QUEUED:
        # No worker has it yet: end it here. If one claims it meanwhile, it sees the stop.
        await end_run(rt, k, record, RunStatus.CANCELLED, Reply(), require=RunStatus.QUEUED)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(rt.settings.stop_wait_seconds):
            await rt.runs.wait_ended(k)
    return await rt.runs.get(k)
