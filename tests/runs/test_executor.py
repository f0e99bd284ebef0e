"""The executor and reaper directly: at-most-once claims, lapsed leases, shutdown."""

from __future__ import annotations

import asyncio

from helpers import eventually

from turnstream import keys
from turnstream.clock import now_ms
from turnstream.keys import RunKeys
from turnstream.live.status import RunStatus
from turnstream.runs.executor import execute
from turnstream.runs.reaper import reap_once
from turnstream.runs.service import Multitask, start_run
from turnstream.store.users import ensure_user


class _NoBroker:
    """Records kicks instead of running them, so a test can execute by hand."""

    def __init__(self) -> None:
        self.kicked: list[tuple[str, str]] = []

    def find_task(self, _name):
        broker = self

        class _Task:
            async def kiq(self, cid, sid):
                broker.kicked.append((cid, sid))

        return _Task()


async def _queued_run(rt, content="hello"):
    async with rt.sessions() as db:
        await ensure_user(db, user_id="alice")
        await db.commit()
    conversation = await rt.store.create(user_id="alice")
    broker = _NoBroker()
    started = await start_run(
        rt,
        broker,
        cid=conversation.id,
        user_id="alice",
        content=content,
        multitask=Multitask.REJECT,
    )
    assert broker.kicked == [(conversation.id, started.session_id)]
    return RunKeys(conversation.id, started.session_id), started


async def _types(rt, k):
    return [fields["type"] for _id, fields in await rt.redis.xrange(k.stream)]


async def test_a_run_delivered_twice_executes_once(app):
    rt = app.state.runtime
    k, started = await _queued_run(rt)
    await asyncio.gather(
        execute(rt, k.cid, k.sid, worker="w1"), execute(rt, k.cid, k.sid, worker="w2")
    )
    await execute(rt, k.cid, k.sid, worker="w3")  # a late redelivery, after the end
    types = await _types(rt, k)
    assert types.count("start") == 1 and types.count("end") == 1
    assert types.count("delta") >= 1
    replies = [m for m in (await rt.store.load(cid=k.cid)).messages if m.role == "assistant"]
    assert [m.id for m in replies] == [started.message_id]


async def test_reaper_ends_a_run_whose_lease_lapsed_and_keeps_the_partial_reply(app):
    rt = app.state.runtime
    k, started = await _queued_run(rt)
    assert await rt.runs.claim(k, worker="dead-worker", lease_seconds=0.05)
    from turnstream import events

    await rt.runs.append(k, [events.delta("half a "), events.delta("reply")])
    await asyncio.sleep(0.1)  # the 50 ms lease lapsing is what this test is about
    assert await reap_once(rt) == 1
    assert await reap_once(rt) == 0  # nothing twice
    record = await rt.runs.get(k)
    assert record.status is RunStatus.ERROR
    types = await _types(rt, k)
    assert types[-2:] == ["error", "end"] and types.count("end") == 1
    reply = next(m for m in (await rt.store.load(cid=k.cid)).messages if m.id == started.message_id)
    assert (reply.content, reply.status) == ("half a reply", "error")


async def test_a_batch_sent_again_after_a_lost_reply_is_written_once(app):
    from turnstream import events

    rt = app.state.runtime
    k, _started = await _queued_run(rt)
    assert await rt.runs.claim(k, worker="w", lease_seconds=60)
    first = [events.delta("one "), events.delta("two ")]
    await rt.runs.append(k, first, batch=1)
    await rt.runs.append(k, first, batch=1)  # the retry of a write whose reply was lost
    await rt.runs.append(k, [events.delta("three")], batch=2)
    entries = await rt.redis.xrange(k.stream)
    assert [f["type"] for _id, f in entries] == ["queued", "start", "delta", "delta", "delta"]
    assert [int(f["seq"]) for _id, f in entries] == [1, 2, 3, 4, 5]


async def test_reaper_leaves_a_run_with_a_live_lease_alone(app):
    rt = app.state.runtime
    k, _started = await _queued_run(rt)
    assert await rt.runs.claim(k, worker="live-worker", lease_seconds=60)
    assert await reap_once(rt) == 0
    # A lease that lapsed in the index but was renewed since is re-checked in the script.
    await rt.redis.zadd(keys.LEASES, {k.lease_member: now_ms() - 1000})
    assert await reap_once(rt) == 0
    assert (await rt.runs.get(k)).status is RunStatus.RUNNING


async def test_shutdown_ends_in_flight_runs_instead_of_leaving_them_running(settings):
    from turnstream.api.app import create_app

    application = create_app(settings.model_copy(update={"demo_words": 200, "demo_delay_ms": 20}))
    async with application.router.lifespan_context(application):
        rt = application.state.runtime
        k, _started = await _queued_run(rt)
        task = asyncio.create_task(execute(rt, k.cid, k.sid, worker="w"))

        async def streaming() -> bool:
            return "delta" in await _types(rt, k)

        await eventually(streaming, timeout=10, what="the run's first delta")
        # Leaving the lifespan closes the runtime, which must end the run first.
    assert task.done()
    from turnstream.live.client import connect_redis

    check = connect_redis(settings.redis_url)
    try:
        assert await check.get(k.status) == "error"
        fields = await check.xrevrange(k.stream, count=2)
        assert [f["type"] for _id, f in reversed(fields)] == ["error", "end"]
        assert '"code":"worker_stopped"' in fields[1][1]["data"]
    finally:
        await check.aclose()
