"""The trim of an archived run, script by script: nothing SQL lacks is ever dropped."""

from __future__ import annotations

from redis.asyncio import Redis

from turnstream import events
from turnstream.keys import RunField, RunKeys
from turnstream.live.state import RunState
from turnstream.live.status import RunStatus


async def _running(runs: RunState, k: RunKeys) -> None:
    await runs.create(
        k,
        user_id="u",
        message_id="m",
        user_message_id="q",
        message="hi",
        enqueue=False,
        max_active=5,
    )
    assert await runs.claim(k, worker="w", lease_seconds=60)


async def _ids(redis: Redis, k: RunKeys) -> list[str]:
    return [entry_id for entry_id, _fields in await redis.xrange(k.stream)]


async def test_an_archived_run_keeps_what_sql_lacks_and_trims_once_it_has_it(redis_url):
    redis = Redis.from_url(redis_url, decode_responses=True)
    runs = RunState(redis, maxlen=4, ttl_seconds=60, archive=True)  # trims in steps of 1
    k = RunKeys("c1", "s1")
    await _running(runs, k)
    assert await redis.hget(k.run, RunField.ARCHIVED_THROUGH) == "0-0"
    for n in range(10):
        await runs.append(k, [events.delta(str(n))])
    written = await _ids(redis, k)
    assert len(written) == 12  # nothing archived: nothing trimmed
    assert await redis.hget(k.run, RunField.TRIMMED_THROUGH) is None

    assert await runs.archived(k, written[5])  # SQL holds 6 of them: those may go
    assert await _ids(redis, k) == written[6:]
    assert await redis.hget(k.run, RunField.TRIMMED_THROUGH) == written[5]
    assert not await runs.archived(k, written[2])  # the mark never moves back
    assert await redis.hget(k.run, RunField.ARCHIVED_THROUGH) == written[5]

    assert await runs.archived(k, written[-1])  # all of them: down to maxlen
    assert await _ids(redis, k) == written[-4:]
    await runs.finish(k, status=RunStatus.COMPLETED, message_id="m")
    # `end`, which SQL does not hold yet, stays; so do the ones before it (one step of slack).
    kept = await redis.xrange(k.stream)
    assert [i for i, _f in kept[:-1]] == written[-4:] and kept[-1][1]["type"] == "end"
    await redis.aclose()


async def test_a_run_created_without_archiving_trims_as_before(redis_url):
    redis = Redis.from_url(redis_url, decode_responses=True)
    runs = RunState(redis, maxlen=4, ttl_seconds=60)
    k = RunKeys("c1", "s2")
    await _running(runs, k)
    for n in range(10):
        await runs.append(k, [events.delta(str(n))])
    assert await redis.hget(k.run, RunField.ARCHIVED_THROUGH) is None
    assert await redis.xlen(k.stream) <= 5
    assert not await runs.archived(k, "9999999999999-0")  # not archived: no mark to move
    await redis.aclose()
