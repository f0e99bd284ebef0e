"""The stream hub: many followers at once, each getting every entry once."""

from __future__ import annotations

import asyncio

from helpers import eventually

from turnstream import events
from turnstream.keys import RunField, RunKeys
from turnstream.live.status import RunStatus
from turnstream.live.stream import StreamHub


async def _running_run(runs, i: int) -> RunKeys:
    k = RunKeys(f"c{i}", f"conversation:u:m{i}")
    await runs.create(
        k,
        user_id="u",
        message_id=f"m{i}",
        user_message_id="",
        message="x",
        enqueue=False,
        max_active=1000,
    )
    await runs.claim(k, worker="w", lease_seconds=60)
    return k


async def test_many_first_followers_joining_at_once_all_get_every_entry(app):
    """A fresh hub, 150 runs, every follower joining at the same moment (a deploy's reconnect)."""
    rt = app.state.runtime
    hub = StreamHub(rt.redis)
    await hub.start()
    try:
        ks = [await _running_run(rt.runs, i) for i in range(150)]

        async def follow(k):
            return [e.seq for batch in [b async for b in hub.follow(k, "0-0")] for e in batch]

        followers = [asyncio.create_task(follow(k)) for k in ks]

        def all_subscribed() -> bool:
            channels = hub._channels.values()
            return len(channels) == len(ks) and all(c.confirmed.is_set() for c in channels)

        await eventually(all_subscribed, timeout=10, what=f"{len(ks)} followers subscribed")
        for n in range(5):
            for k in ks:
                await rt.runs.append(k, [events.delta(f"w{n} ")])
        for k in ks:
            await rt.runs.finish(k, status=RunStatus.COMPLETED, message_id="m")
        async with asyncio.timeout(20):
            seen = await asyncio.gather(*followers)
    finally:
        await hub.close()
    # queued, start, 5 deltas, end: each follower saw all 8, in order, once.
    assert all(s == list(range(1, 9)) for s in seen), [s for s in seen if s != list(range(1, 9))][
        :3
    ]


async def test_first_subscriptions_racing_on_a_fresh_hub_are_all_confirmed(app):
    """Redis-py opened a connection per concurrent first SUBSCRIBE and kept one: 99 of 100 hung."""
    hub = StreamHub(app.state.runtime.redis)
    await hub.start()

    async def follow_gone_run(i: int) -> list:
        # No such run: subscribe, confirm, catch up on nothing, see it is not live, end.
        return [b async for b in hub.follow(RunKeys(f"gone{i}", f"conversation:u:g{i}"), "0-0")]

    try:
        async with asyncio.timeout(5):
            results = await asyncio.gather(*(follow_gone_run(i) for i in range(100)))
    finally:
        await hub.close()
    assert results == [[]] * 100


async def test_a_lost_notice_is_read_back_from_the_stream(app):
    """A notice lost in a reconnect must not become a silent gap: the seq gap gives it away."""
    rt = app.state.runtime
    hub = StreamHub(rt.redis, idle_seconds=60)  # no tick to the rescue: only the gap check
    await hub.start()
    try:
        k = await _running_run(rt.runs, 0)
        seen: list[int] = []
        started = asyncio.Event()

        async def follow():
            async for batch in hub.follow(k, "0-0"):
                seen.extend(e.seq for e in batch)
                started.set()

        follower = asyncio.create_task(follow())
        async with asyncio.timeout(5):
            await started.wait()  # queued and start arrived
        # An entry written without its notice, as if the notice were lost.
        seq = await rt.redis.hincrby(k.run, RunField.SEQ, 1)
        fields = {"type": "delta", "seq": seq, "ts": 1, "data": '{"text":"lost"}'}
        await rt.redis.xadd(k.stream, fields)
        await rt.runs.append(k, [events.delta("after")])
        await rt.runs.finish(k, status=RunStatus.COMPLETED, message_id="m")
        async with asyncio.timeout(5):
            await follower
    finally:
        await hub.close()
    assert seen == [1, 2, 3, 4, 5]


async def test_a_follower_that_leaves_while_subscribing_does_not_block_the_next(app):
    """A client gone while its SUBSCRIBE waited for the connection left the channel
    registered but never subscribed: every later follower on the process waited 10 s, then failed.
    """
    rt = app.state.runtime
    hub = StreamHub(rt.redis)
    await hub.start()
    try:
        k = await _running_run(rt.runs, 0)
        async with hub._notices._by_node[""]._commands:  # another follower (un)subscribes
            gone = asyncio.create_task(anext(aiter(hub.follow(k, "0-0"))))
            # It has joined the run's channel and now waits for the connection to subscribe.
            await eventually(
                lambda: k.channel in hub._channels, timeout=5, what="the follower to join"
            )
            gone.cancel()  # its client went away
        async with asyncio.timeout(3):
            first = await anext(aiter(hub.follow(k, "0-0")))
    finally:
        await hub.close()
    assert [e.type for e in first] == ["queued", "start"]
