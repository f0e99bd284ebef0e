"""The executor and reaper directly: at-most-once claims, lapsed leases, shutdown."""

from __future__ import annotations

import asyncio
import json

from helpers import NoBroker, eventually

from turnstream import events, keys
from turnstream.clock import now_ms
from turnstream.keys import RunKeys
from turnstream.live.status import RunStatus
from turnstream.runs import archiver
from turnstream.runs.executor import execute
from turnstream.runs.reaper import reap_once
from turnstream.runs.service import Multitask, start_run
from turnstream.store.users import ensure_user


async def _queued_run(rt, content="hello"):
    async with rt.sessions() as db:
        await ensure_user(db, user_id="alice")
        await db.commit()
    conversation = await rt.store.create(user_id="alice")
    broker = NoBroker()
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


async def test_a_run_lost_after_its_worker_stored_the_whole_reply_ends_completed(app):
    """The worker stored the reply (the first step of an end) and died before ending the run:
    the reaper ends it as the conversation holds it, not with an error it does not show."""
    rt = app.state.runtime
    k, started = await _queued_run(rt)
    assert await rt.runs.claim(k, worker="dead-worker", lease_seconds=0.05)
    await rt.runs.append(k, [events.delta("the whole reply")])
    record = await rt.runs.get(k)
    reply = await archiver.reply_so_far(rt, k)
    stored = reply.messages(RunStatus.COMPLETED, message_id=record.message_id, session_id=k.sid)
    await rt.store.save_run(cid=k.cid, session_id=k.sid, messages=stored)
    await asyncio.sleep(0.1)  # the 50 ms lease lapsing is what this test is about

    assert await reap_once(rt) == 1
    assert (await rt.runs.get(k)).status is RunStatus.COMPLETED
    entries = await rt.redis.xrange(k.stream)
    assert [f["type"] for _id, f in entries][-2:] == ["delta", "end"]
    assert json.loads(entries[-1][1]["data"])["status"] == "completed"
    reply_row = next(
        m for m in (await rt.store.load(cid=k.cid)).messages if m.id == started.message_id
    )
    assert (reply_row.content, reply_row.status) == ("the whole reply", "complete")


async def test_a_batch_sent_again_after_a_lost_reply_is_written_once(app):
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
    # A lease that lapsed in the index but was renewed since is checked against the run,
    # and the index entry moved to the renewal.
    await rt.redis.zadd(keys.leases(k.shard), {k.lease_member: now_ms() - 1000})
    assert await reap_once(rt) == 0
    assert (await rt.runs.get(k)).status is RunStatus.RUNNING
    assert await rt.redis.zscore(keys.leases(k.shard), k.lease_member) > now_ms()


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


async def _entries(rt, k):
    return [(f["type"], json.loads(f["data"])) for _id, f in await rt.redis.xrange(k.stream)]


async def test_a_fast_agents_deltas_become_few_entries_with_the_whole_text_in_order(app):
    rt = app.state.runtime

    async def fast(ctx):  # a model far faster than the flush window: no await between deltas
        for i in range(3000):
            yield f"w{i} "

    rt.agent = fast
    k, started = await _queued_run(rt)
    await execute(rt, k.cid, k.sid, worker="w")
    entries = await _entries(rt, k)
    texts = [data["text"] for type_, data in entries if type_ == "delta"]
    wanted = "".join(f"w{i} " for i in range(3000))
    assert "".join(texts) == wanted and len(texts) <= 3
    reply = next(m for m in (await rt.store.load(cid=k.cid)).messages if m.id == started.message_id)
    assert reply.content == wanted


async def test_adjacent_texts_of_one_kind_merge_and_other_events_keep_their_place(app):
    rt = app.state.runtime

    async def mixed(ctx):
        yield events.reasoning("think ")
        yield events.reasoning("hard")
        yield "Hel"
        yield events.delta("lo")
        yield events.Event(events.EventType.DELTA, {"text": "!", "lang": "en"})  # not plain
        yield events.usage(3, 4)
        yield " Bye"

    rt.agent = mixed
    k, started = await _queued_run(rt)
    await execute(rt, k.cid, k.sid, worker="w")
    assert (await _entries(rt, k))[2:] == [
        ("reasoning", {"text": "think hard"}),
        ("delta", {"text": "Hello"}),
        ("delta", {"text": "!", "lang": "en"}),
        ("usage", {"prompt_tokens": 3, "completion_tokens": 4}),
        ("delta", {"text": " Bye"}),
        ("end", {"status": "completed", "messageId": started.message_id}),
    ]


async def test_the_first_event_reaches_the_stream_while_the_agent_still_runs(app):
    rt = app.state.runtime
    seen = asyncio.Event()

    async def waits_to_be_seen(ctx):
        yield "first"
        await seen.wait()  # goes on only once a client could have read "first"
        yield " second"

    rt.agent = waits_to_be_seen
    k, _started = await _queued_run(rt)
    run = asyncio.create_task(execute(rt, k.cid, k.sid, worker="w"))

    async def first_streamed() -> bool:
        return ("delta", {"text": "first"}) in await _entries(rt, k)

    await eventually(first_streamed, timeout=10, what="the first delta, before the agent ends")
    seen.set()
    await run
    assert [d["text"] for t, d in await _entries(rt, k) if t == "delta"] == ["first", " second"]
