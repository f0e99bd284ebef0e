"""Starting and stopping runs: what the API does before a worker takes over."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import math
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession
from taskiq import AsyncBroker

from turnstream import keys, metrics
from turnstream.clock import now_ms
from turnstream.errors import ActiveRunLimit, RateLimited, RunConflict
from turnstream.ids import session_id, uuid7
from turnstream.keys import RunKeys
from turnstream.live.client import maybe_text
from turnstream.live.record import RunRecord
from turnstream.live.status import RunStatus, is_live
from turnstream.runs import archiver
from turnstream.runs.broker import kick
from turnstream.runs.ending import end_run
from turnstream.runs.reply import Reply
from turnstream.runtime import Runtime
from turnstream.store import runlog
from turnstream.store.models import Run
from turnstream.store.views import NewMessage
from turnstream.store.workspace import announcing_uploads

# How long a request waits for a concurrent one with the same Idempotency-Key to record its run.
_CLAIM_WAIT_SECONDS = 5.0


class Multitask(enum.StrEnum):
    """What a new message does while another run of the conversation is active."""

    REJECT = "reject"  # 409, naming the active run
    INTERRUPT = "interrupt"  # stop the active run, then start
    ENQUEUE = "enqueue"  # start once the active run has ended


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

    Raises RateLimited past the user's runs a minute, ActiveRunLimit past their runs
    at once, and RunConflict when another run is active and this one would not wait
    for it (`multitask` reject, or a regenerate).
    """
    message_id = uuid7()
    sid = session_id(user_id, message_id)
    idem_key, replay = await _admit(rt, user_id, sid, idempotency_key)
    if replay is not None:
        return replay
    if multitask is Multitask.INTERRUPT:
        active = maybe_text(await rt.redis.get(keys.active(cid)))
        if active is not None:
            await stop_run(rt, RunKeys(cid, active))

    k = RunKeys(cid, sid)
    user_message_id = "" if regenerate else uuid7()
    # Regenerating replaces the latest reply, so it cannot wait behind another run.
    enqueue = multitask is not Multitask.REJECT and not regenerate
    try:
        created, other = await rt.runs.create(
            k,
            user_id=user_id,
            message_id=message_id,
            user_message_id=user_message_id,
            message=content,
            enqueue=enqueue,
            max_active=rt.settings.max_active_runs,
        )
        if not created:
            assert other is not None
            raise RunConflict(active_session_id=other, conversation_id=cid)
    except (ActiveRunLimit, RunConflict):
        if idem_key is not None:
            await rt.redis.delete(idem_key)  # nothing started: a retry may start it
        raise
    await _record_and_kick(
        rt,
        broker,
        k,
        user_id=user_id,
        message_id=message_id,
        user_message_id=user_message_id,
        content=content,
        regenerate=regenerate,
        waits=other is not None,
    )
    return Started(sid, message_id, replayed=False)


async def _admit(
    rt: Runtime, user_id: str, sid: str, idempotency_key: str | None
) -> tuple[str | None, Started | None]:
    """The Idempotency-Key's Redis key (if any) and the run it already started (if any).

    Raises RateLimited when the user has started `runs_per_minute` runs in the last
    minute; a replay does not count against that.
    """
    idem_key = None
    if idempotency_key is not None:
        digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
        idem_key = keys.idempotency(user_id, digest)
        if replay := await _replay(rt, idem_key):
            return idem_key, replay
    wait_ms = await rt.runs.count_start(user_id, sid, per_minute=rt.settings.runs_per_minute)
    if wait_ms:
        raise RateLimited(
            retry_after=math.ceil(wait_ms / 1000), per_minute=rt.settings.runs_per_minute
        )
    if idem_key is not None:
        # None once claimed; else a concurrent request with the same key got there first.
        return idem_key, await _claim(rt, idem_key, sid)
    return None, None


async def _record_and_kick(
    rt: Runtime,
    broker: AsyncBroker,
    k: RunKeys,
    *,
    user_id: str,
    message_id: str,
    user_message_id: str,
    content: str,
    regenerate: bool,
    waits: bool,
) -> None:
    """Record the created run in SQL, store its question, and hand it to a worker.

    If any of it fails, the run ends with `error` (code `start_failed`) and the
    failure propagates.
    """
    row = runlog.new_run(
        session_id=k.sid,
        conversation_id=k.cid,
        user_id=user_id,
        message_id=message_id,
        created_at_ms=now_ms(),
    )
    # A regenerate answers the stored question again; a waiting message is stored in its turn.
    stored_now = not (regenerate or waits)
    question = NewMessage(id=user_message_id, role="user", content=content) if stored_now else None
    try:
        await _record(rt, k, row, question, regenerate=regenerate)
        await _prepared(rt, k)
        await kick(broker, k.cid, k.sid)
    except BaseException:
        record = await rt.runs.get(k)
        if record is not None:
            ended_at = await rt.runs.finish(
                k,
                status=RunStatus.ERROR,
                message_id=message_id,
                error=("The run could not be started.", "start_failed"),
            )
            if ended_at is not None:
                metrics.run_ended("error", created_at_ms=record.created_at, ended_at_ms=ended_at)
        raise


async def _record(
    rt: Runtime, k: RunKeys, row: Run, question: NewMessage | None, *, regenerate: bool
) -> None:
    """The run's row, and what it starts from, in one transaction: its question (naming the
    files uploaded since the message before it), or a regenerate's deletion. A message that
    waits for another run (no `question` here) joins the conversation when its turn comes."""

    async def add_run(db: AsyncSession) -> None:
        db.add(row)
        if question is not None:
            await announcing_uploads(rt.files, k.cid, question)(db)

    if regenerate:
        await rt.store.delete_replies_after_last_user(cid=k.cid, also=add_run)
    elif question is None:
        async with rt.sessions() as db, db.begin():
            await add_run(db)
    else:
        await rt.store.append(cid=k.cid, message=question, also=add_run)


async def _claim(rt: Runtime, idem_key: str, sid: str) -> Started | None:
    """Claim `idem_key` for run `sid`: None once claimed, or the run of the request holding it.

    The holder records its run in SQL a moment after its claim, or deletes the key if it
    starts nothing; until one or the other, wait (bounded). Answering 409 meanwhile, and
    deleting the holder's key with it, would let a later retry start a second run.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _CLAIM_WAIT_SECONDS
    while not await rt.redis.set(idem_key, sid, nx=True, ex=keys.IDEMPOTENCY_TTL_SECONDS):
        if replay := await _replay(rt, idem_key):
            return replay
        if loop.time() > deadline:
            # The holder died between its claim and its record: take the key over.
            await rt.redis.set(idem_key, sid, ex=keys.IDEMPOTENCY_TTL_SECONDS)
            return None
        await asyncio.sleep(0.02)
    return None


async def _replay(rt: Runtime, idem_key: str) -> Started | None:
    """The run an earlier request with the same Idempotency-Key started, if any."""
    first = maybe_text(await rt.redis.get(idem_key))
    run = await runlog.get_run(rt.sessions, session_id=first) if first else None
    return Started(run.id, run.message_id, replayed=True) if run else None


async def _prepared(rt: Runtime, k: RunKeys) -> None:
    """Mark the run's SQL side done; end it here if a stop came while it was being done.

    Until then a stop only asks (see `stop_run`): ending the run earlier would store
    its reply before its own user message, or before the deletion of the replies a
    regenerate replaces, which would then delete it too. Of the two checks, the
    stop's (after asking) or this one (after marking), at least one sees the other.
    """
    await rt.runs.mark_prepared(k)
    if await rt.redis.exists(k.cancel):
        await _end_queued(rt, k)


async def _end_queued(rt: Runtime, k: RunKeys) -> None:
    """Cancel a run no worker has claimed yet; a no-op once one has (it sees the stop).

    Also a no-op while the run waits for the one before it (`enqueue`): ended now,
    its reply would be stored before that run's. Its worker ends it in its turn.
    """
    record = await rt.runs.get(k)
    if record is None or record.status is not RunStatus.QUEUED:
        return
    before = record.multitask_after
    if before and is_live(maybe_text(await rt.redis.get(RunKeys(k.cid, before).status))):
        return
    if record.waited:  # it waited for approvals and was to go on
        await _end_waited(rt, k, record, RunStatus.QUEUED)
        return
    await end_run(rt, k, record, RunStatus.CANCELLED, Reply(), require=RunStatus.QUEUED)


async def _end_waited(rt: Runtime, k: RunKeys, record: RunRecord, require: RunStatus) -> None:
    """Cancel a run that waited for approvals, with no worker: its calls left are `not run`."""
    reply = await archiver.reply_so_far(rt, k)
    await end_run(rt, k, record, RunStatus.CANCELLED, reply, require=require, replace=True)


async def stop_run(rt: Runtime, k: RunKeys) -> RunRecord | None:
    """Ask the run to stop and wait (bounded) until it has ended; None if it is not active.

    The record returned may still be active (the wait timed out) or have ended
    otherwise than `cancelled` (it finished before it saw the stop).
    """
    record = await rt.runs.get(k)
    if record is None or not record.status.active:
        return None
    await rt.runs.ask_stop(k)
    if record.status is RunStatus.WAITING:
        await _end_waited(rt, k, record, RunStatus.WAITING)
    elif record.status is RunStatus.QUEUED and await rt.runs.is_prepared(k):
        # No worker has it yet: end it here. If one claims it meanwhile, it sees the stop.
        await _end_queued(rt, k)
    await rt.runs.wait_ended(k, within=rt.settings.stop_wait_seconds)
    record = await rt.runs.get(k)
    if record is not None and record.status is RunStatus.QUEUED:
        # Still queued after the whole wait, so never prepared: the request that was
        # starting it is gone (its process died) or stuck. It must not block the conversation.
        await _end_queued(rt, k)
        record = await rt.runs.get(k)
    return record
