"""The user's cap as a step of its own (live/admission.py): crashes between the steps.

A run's keys and its user's count live in two hash slots, so starting a run is two
steps. These tests stop a start between them, or an end before its release, and check
what a user would: the cap still counts every run that exists, and a place no run
holds is given back when it is needed.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from turnstream import keys
from turnstream.errors import ActiveRunLimit, RedisUnavailable
from turnstream.keys import RunKeys
from turnstream.live import admission
from turnstream.live.state import RunState
from turnstream.live.status import RunStatus


async def _create(runs: RunState, k: RunKeys, *, cap: int = 2) -> tuple[bool, str | None]:
    return await runs.create(
        k,
        user_id="u",
        message_id=f"reply-{k.sid}",
        user_message_id="",
        message="hello",
        enqueue=False,
        max_active=cap,
    )


async def _server_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return seconds * 1000 + micros // 1000


async def _held(redis: Redis) -> list[str]:
    return sorted(await redis.zrange(keys.user_runs("u"), 0, -1))


async def test_a_run_holds_its_place_until_it_ends(runs, redis):
    a, b = RunKeys("c1", "s1"), RunKeys("c2", "s2")
    await _create(runs, a)
    await _create(runs, b)
    assert await _held(redis) == sorted([a.status, b.status])
    with pytest.raises(ActiveRunLimit):
        await _create(runs, RunKeys("c3", "s3"))
    await runs.finish(a, status=RunStatus.COMPLETED, message_id="m")
    assert await _held(redis) == [b.status]  # given back at the end, not at the next create


async def test_a_refused_create_gives_its_place_back(runs, redis):
    first, second = RunKeys("c1", "s1"), RunKeys("c1", "s2")
    await _create(runs, first)
    assert await _create(runs, second) == (False, "s1")  # reject: another run is active
    assert await _held(redis) == [first.status]
    assert await runs.indexes.count(keys.queued) == 1  # the refused run is not listed


async def test_a_reservation_whose_create_never_came_is_let_go_after_the_grace(runs, redis):
    # A process reserved two places and died before creating either run.
    now = await _server_ms(redis)
    lost, fresh = RunKeys("c1", "s1"), RunKeys("c2", "s2")
    await redis.zadd(
        keys.user_runs("u"),
        {lost.status: now - admission.GRACE_MS - 1, fresh.status: now - 100},
    )
    # The old one is let go when the cap needs the place; the fresh one may still become
    # a run (its create has RESERVE_WINDOW_MS), so it holds.
    new = RunKeys("c3", "s3")
    assert await _create(runs, new) == (True, None)
    assert await _held(redis) == sorted([fresh.status, new.status])
    with pytest.raises(ActiveRunLimit):
        await _create(runs, RunKeys("c4", "s4"))


async def test_at_the_cap_a_start_waits_for_the_creates_still_on_their_way(runs, redis):
    """The user's other starts of this moment hold places with no run yet; one whose create
    is refused gives its place back at once, and the start waiting for it goes ahead
    (ten interrupts at once on one conversation must not be "too many active runs")."""
    a, racing = RunKeys("c1", "s1"), RunKeys("c2", "s2")
    await _create(runs, a)
    await runs.admission.reserve("u", racing, cap=2)  # a start between its two steps

    async def refused_soon() -> None:
        await asyncio.sleep(0.2)
        await runs.admission.release("u", racing)  # its create was refused

    releasing = asyncio.create_task(refused_soon())
    assert await _create(runs, RunKeys("c3", "s3")) == (True, None)
    await releasing
    with pytest.raises(ActiveRunLimit):  # two live runs hold the places now
        await _create(runs, RunKeys("c4", "s4"))


async def test_an_end_that_died_before_its_release_is_let_go_at_the_cap(runs, redis):
    a, b = RunKeys("c1", "s1"), RunKeys("c2", "s2")
    await _create(runs, a)
    await _create(runs, b)
    await runs.finish(a, status=RunStatus.ERROR, message_id="m")
    await redis.zadd(keys.user_runs("u"), {a.status: await _server_ms(redis)})  # not released
    assert await _create(runs, RunKeys("c3", "s3")) == (True, None)
    assert a.status not in await _held(redis)


async def test_a_create_past_its_reservations_window_creates_nothing(runs, redis, monkeypatch):
    """A start that stalled between the steps past the window: the place may be let go by
    now, so the create refuses rather than make a run without its count."""
    k = RunKeys("c1", "s1")
    reserve = runs.admission.reserve

    async def stalled(user_id: str, k: RunKeys, *, cap: int) -> int:
        return await reserve(user_id, k, cap=cap) - admission.RESERVE_WINDOW_MS - 1

    monkeypatch.setattr(runs.admission, "reserve", stalled)
    with pytest.raises(RedisUnavailable):
        await _create(runs, k)
    assert not await redis.exists(k.run, k.status, k.stream, keys.active("c1"))
    assert await _held(redis) == []
    assert await runs.indexes.count(keys.queued) == 0
