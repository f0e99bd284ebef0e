"""The reapers' index shards (live/indexes.py): hints kept next to the runs they list.

An index shard lives in another hash slot than its runs, so no script updates both.
What must hold anyway: a run in a state the index lists is always listed, and a
reader never acts on an entry without checking the run.
"""

from __future__ import annotations

import pytest

from turnstream import keys
from turnstream.clock import now_ms
from turnstream.keys import RunField, RunKeys
from turnstream.live.state import RunState
from turnstream.live.status import RunStatus

# The cluster's layout, whose 16 shards these tests spread runs over, on one node.
pytestmark = pytest.mark.usefixtures("cluster_layout")


async def _queued(runs: RunState, k: RunKeys) -> None:
    created, _ = await runs.create(
        k,
        user_id=f"user-of-{k.cid}",
        message_id="m",
        user_message_id="",
        message="hi",
        enqueue=False,
        max_active=10,
    )
    assert created


async def test_the_runs_spread_over_every_shard_and_each_is_listed_in_its_own(runs, redis):
    ks = [RunKeys(f"conversation-{i}", f"s{i}") for i in range(64)]
    for k in ks:
        await _queued(runs, k)
    assert len({k.shard for k in ks}) == keys.SHARDS
    for k in ks:
        assert await redis.zscore(keys.queued(k.shard), k.lease_member) is not None
    assert len(await runs.due_queued(before=None, limit=1000)) == 64


async def test_a_lost_claim_leaves_the_winners_lease_in_the_index(runs, redis):
    k = RunKeys("c1", "s1")
    await _queued(runs, k)
    assert await runs.claim(k, worker="w1", lease_seconds=60)
    assert not await runs.claim(k, worker="w2", lease_seconds=120)  # a redelivered task
    lease = int(await redis.hget(k.run, RunField.LEASE_UNTIL))
    assert await redis.zscore(keys.leases(k.shard), k.lease_member) == lease
    assert await redis.zscore(keys.queued(k.shard), k.lease_member) is None  # claimed


async def test_the_reapers_read_drops_entries_of_ended_runs_and_keeps_live_ones(runs, redis):
    ended, renewed = RunKeys("c1", "s1"), RunKeys("c2", "s2")
    for k in (ended, renewed):
        await _queued(runs, k)
        assert await runs.claim(k, worker="w", lease_seconds=60)
    await runs.finish(ended, status=RunStatus.COMPLETED, message_id="m")
    past = now_ms() - 1000
    # As if a crash left the ended run's entry, and a renewal's move never came.
    for k in (ended, renewed):
        await redis.zadd(keys.leases(k.shard), {k.lease_member: past})
    assert await runs.lapsed_leases() == []
    assert await redis.zscore(keys.leases(ended.shard), ended.lease_member) is None
    moved = await redis.zscore(keys.leases(renewed.shard), renewed.lease_member)
    assert moved == int(await redis.hget(renewed.run, RunField.LEASE_UNTIL))


async def test_a_conditional_drop_keeps_an_entry_listed_again_meanwhile(runs, redis):
    """A reader saw the entry due while the run was elsewhere; before it drops the entry,
    the run comes back (waiting -> queued) and is listed again, with a later score."""
    k = RunKeys("c1", "s1")
    seen = now_ms() - 1000
    await redis.zadd(keys.queued(k.shard), {k.lease_member: seen})
    await runs.indexes.add(keys.queued, k, now_ms() + 15_000)  # listed again
    assert not await runs.indexes.drop_if(keys.queued, k, now_ms(), mode="le")
    assert await redis.zscore(keys.queued(k.shard), k.lease_member) is not None
