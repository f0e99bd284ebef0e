"""Each run script, driven directly through RunState against a real Redis."""

from __future__ import annotations

import re
from importlib import resources

import pytest
from redis.asyncio import Redis

from turnstream import events, keys
from turnstream.clock import now_ms
from turnstream.errors import ActiveRunLimit
from turnstream.events import StreamEntry
from turnstream.keys import RunField, RunKeys
from turnstream.live.state import RunState
from turnstream.live.status import Requeue, RunStatus

LEASE_SECONDS = 60


async def _create(
    runs: RunState, k: RunKeys, *, user_id: str = "u", enqueue: bool = False, max_active: int = 5
) -> tuple[bool, str | None]:
    return await runs.create(
        k,
        user_id=user_id,
        message_id=f"reply-{k.sid}",
        user_message_id=f"question-{k.sid}",
        message="hello",
        enqueue=enqueue,
        max_active=max_active,
    )


async def _running(runs: RunState, k: RunKeys, *, worker: str = "w") -> RunKeys:
    await _create(runs, k)
    assert await runs.claim(k, worker=worker, lease_seconds=LEASE_SECONDS)
    return k


async def _entries(redis: Redis, k: RunKeys) -> list[StreamEntry]:
    return [StreamEntry.from_redis(i, f) for i, f in await redis.xrange(k.stream)]


# create


async def test_create_writes_queued_and_points_chat_active_at_the_run(runs, redis):
    k = RunKeys("c1", "s1")
    assert await _create(runs, k) == (True, None)
    [queued] = await _entries(redis, k)
    assert (queued.type, queued.seq, queued.data) == ("queued", 1, {"sessionId": "s1"})
    assert await redis.get(keys.active("c1")) == "s1"
    assert await redis.get(k.status) == "queued"
    assert await redis.zrange(keys.user_runs("u"), 0, -1) == [k.status]
    record = await runs.get(k)
    assert record is not None and record.status is RunStatus.QUEUED
    assert (record.user_id, record.message_id, record.last_id) == ("u", "reply-s1", queued.id)
    assert await runs.question(k) == ("hello", False)


async def test_create_with_reject_returns_the_active_run_and_creates_nothing(runs, redis):
    first, second = RunKeys("c1", "s1"), RunKeys("c1", "s2")
    await _create(runs, first)
    assert await _create(runs, second) == (False, "s1")
    assert not await redis.exists(second.run, second.stream, second.status)
    assert await redis.get(keys.active("c1")) == "s1"
    # Once the first has ended, the conversation takes a new run.
    await runs.finish(first, status=RunStatus.CANCELLED, message_id="m")
    assert await _create(runs, second) == (True, None)


async def test_create_with_enqueue_waits_for_the_active_run(runs, redis):
    first, second = RunKeys("c1", "s1"), RunKeys("c1", "s2")
    await _running(runs, first)
    assert await _create(runs, second, enqueue=True) == (True, "s1")
    record = await runs.get(second)
    assert record is not None and record.multitask_after == "s1"
    assert record.status is RunStatus.QUEUED
    assert await runs.question(second) == ("hello", True)
    assert await redis.get(keys.active("c1")) == "s2"


async def test_create_refuses_a_user_at_the_cap(runs, redis):
    a, b, c = RunKeys("c1", "s1"), RunKeys("c2", "s2"), RunKeys("c3", "s3")
    await _create(runs, a, max_active=2)
    await _create(runs, b, max_active=2)
    with pytest.raises(ActiveRunLimit) as refused:
        await _create(runs, c, max_active=2)
    assert refused.value.limit == 2
    assert not await redis.exists(c.run, c.stream, c.status, keys.active("c3"))
    # Other users are not counted; an ended run leaves the user's set.
    assert await _create(runs, RunKeys("c4", "s4"), user_id="other", max_active=2) == (True, None)
    await runs.finish(a, status=RunStatus.CANCELLED, message_id="m")
    assert await _create(runs, c, max_active=2) == (True, None)
    assert sorted(await redis.zrange(keys.user_runs("u"), 0, -1)) == [b.status, c.status]


# claim


async def test_claim_is_a_compare_and_set(runs, redis):
    k = RunKeys("c1", "s1")
    await _create(runs, k)
    assert await runs.claim(k, worker="w1", lease_seconds=LEASE_SECONDS)
    assert not await runs.claim(k, worker="w2", lease_seconds=LEASE_SECONDS)
    record = await runs.get(k)
    assert record is not None and (record.status, record.worker) == (RunStatus.RUNNING, "w1")
    assert await redis.get(k.status) == "running"
    assert [e.type for e in await _entries(redis, k)] == ["queued", "start"]
    lease = await redis.zscore(keys.leases(k.shard), k.lease_member)
    assert lease == int(await redis.hget(k.run, RunField.LEASE_UNTIL))


async def test_a_finished_run_cannot_be_claimed(runs, redis):
    k = RunKeys("c1", "s1")
    await _create(runs, k)
    await runs.finish(k, status=RunStatus.CANCELLED, message_id="m")
    assert not await runs.claim(k, worker="w", lease_seconds=LEASE_SECONDS)
    assert "start" not in [e.type for e in await _entries(redis, k)]


# append


async def test_append_numbers_events_and_reports_a_stop(runs, redis):
    k = await _running(runs, RunKeys("c1", "s1"))
    assert not await runs.append(k, [events.delta("a"), events.delta("b")])
    assert not await runs.append(k, [events.delta("c")])
    await runs.ask_stop(k)
    assert await runs.append(k, [events.delta("d")])
    entries = await _entries(redis, k)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5, 6]
    assert [e.data.get("text") for e in entries[2:]] == ["a", "b", "c", "d"]


async def test_a_batch_sent_twice_is_written_once(runs, redis):
    k = await _running(runs, RunKeys("c1", "s1"))
    await runs.append(k, [events.delta("a")], batch=1)
    await runs.append(k, [events.delta("a")], batch=1)
    await runs.append(k, [events.delta("b")], batch=2)
    assert [e.data.get("text") for e in await _entries(redis, k)][2:] == ["a", "b"]


async def test_append_writes_nothing_once_the_run_has_ended(runs, redis):
    k = await _running(runs, RunKeys("c1", "s1"))
    await runs.finish(k, status=RunStatus.COMPLETED, message_id="m")
    assert await runs.append(k, [events.delta("late")])
    assert [e.type for e in await _entries(redis, k)] == ["queued", "start", "end"]


async def test_trimming_records_the_newest_id_trimmed_away(redis):
    runs = RunState(redis, maxlen=10, ttl_seconds=60)  # trims in steps of 1
    k = await _running(runs, RunKeys("c1", "s1"))
    ids = [e.id for e in await _entries(redis, k)]
    for n in range(20):
        await runs.append(k, [events.delta(str(n))])
        ids.append((await redis.xrevrange(k.stream, count=1))[0][0])
    kept = await _entries(redis, k)
    assert len(kept) <= 11 and kept[-1].seq == 22
    assert await redis.hget(k.run, RunField.TRIMMED_THROUGH) == ids[ids.index(kept[0].id) - 1]


# heartbeat


async def test_heartbeat_renews_the_lease_and_the_keys(runs, redis):
    k = await _running(runs, RunKeys("c1", "s1"))
    before = await redis.zscore(keys.leases(k.shard), k.lease_member)
    await redis.pexpire(k.stream, 1000)
    assert await runs.heartbeat(k, worker="w", lease_seconds=LEASE_SECONDS * 2) == 0
    assert await redis.zscore(keys.leases(k.shard), k.lease_member) > before
    assert await redis.pttl(k.stream) > 1000
    await runs.ask_stop(k)
    assert await runs.heartbeat(k, worker="w", lease_seconds=LEASE_SECONDS) == 1


async def test_heartbeat_fails_once_the_run_is_not_the_workers(runs):
    k = await _running(runs, RunKeys("c1", "s1"), worker="w1")
    assert await runs.heartbeat(k, worker="w2", lease_seconds=LEASE_SECONDS) == -1
    await runs.finish(k, status=RunStatus.COMPLETED, message_id="m")
    assert await runs.heartbeat(k, worker="w1", lease_seconds=LEASE_SECONDS) == -1


# finish


async def test_finish_writes_one_end_and_a_second_finish_is_a_no_op(runs, redis):
    k = await _running(runs, RunKeys("c1", "s1"))
    ended_at = await runs.finish(
        k, status=RunStatus.ERROR, message_id="m", error=("It broke.", "agent_error")
    )
    assert ended_at is not None
    again = await runs.finish(k, status=RunStatus.COMPLETED, message_id="m")
    assert again is None
    entries = await _entries(redis, k)
    assert [e.type for e in entries] == ["queued", "start", "error", "end"]
    assert entries[2].data == {"message": "It broke.", "code": "agent_error"}
    assert entries[3].data == {"status": "error", "messageId": "m"}
    record = await runs.get(k)
    assert record is not None and (record.status, record.error) == (RunStatus.ERROR, "It broke.")
    assert record.ended_at == ended_at
    assert await redis.get(k.status) == "error"
    assert await redis.zscore(keys.leases(k.shard), k.lease_member) is None


async def test_finish_refuses_a_run_not_in_the_required_status(runs, redis):
    k = RunKeys("c1", "s1")
    await _create(runs, k)
    assert (
        await runs.finish(k, status=RunStatus.ERROR, message_id="m", require=RunStatus.RUNNING)
        is None
    )
    assert await redis.get(k.status) == "queued"
    # A lease that has not lapsed yet is not ended by a reaper either.
    await runs.claim(k, worker="w", lease_seconds=LEASE_SECONDS)
    assert await runs.finish(k, status=RunStatus.ERROR, message_id="m", lapsed_before=1) is None
    assert [e.type for e in await _entries(redis, k)] == ["queued", "start"]


async def test_completed_runs_keep_a_capped_list_of_durations(runs, redis):
    cancelled = await _running(runs, RunKeys("c1", "s1"))
    await runs.finish(cancelled, status=RunStatus.CANCELLED, message_id="m")
    assert await redis.llen(keys.durations(cancelled.shard)) == 0  # only completed runs count
    k = RunKeys("c2", "s2")
    durations = keys.durations(k.shard)  # each index shard keeps its own runs' durations
    await redis.rpush(durations, *["999999"] * keys.DURATIONS_KEPT)
    await _running(runs, k)
    await runs.finish(k, status=RunStatus.COMPLETED, message_id="m")
    assert await redis.llen(durations) == keys.DURATIONS_KEPT
    assert int(await redis.lindex(durations, 0)) < 999999  # the newest first


# the queued-run index (chat:queued) and the requeue script


async def _due(redis: Redis, k: RunKeys, *, ago_ms: int, deadline_too: bool = True) -> None:
    """Make the run due `ago_ms` ago in chat:queued (and its claim deadline too)."""
    past = now_ms() - ago_ms
    await redis.zadd(keys.queued(k.shard), {k.lease_member: past})
    await redis.hset(k.run, RunField.LOOK_AT, past)
    if deadline_too:
        await redis.hset(k.run, RunField.CLAIM_BY, past)


async def test_create_indexes_a_queued_run_and_claim_or_finish_take_it_out(redis):
    runs = RunState(redis, maxlen=100, ttl_seconds=60, claim_seconds=30)
    claimed, ended, refused = RunKeys("c1", "s1"), RunKeys("c2", "s2"), RunKeys("c2", "s3")
    before = now_ms()
    await _create(runs, claimed)
    await _create(runs, ended)
    assert await _create(runs, refused) == (False, "s2")  # reject: nothing indexed
    indexed = {
        member: score
        for shard in keys.every_shard(keys.queued)
        for member, score in await redis.zrange(shard, 0, -1, withscores=True)
    }
    assert set(indexed) == {claimed.lease_member, ended.lease_member}
    deadline = int(await redis.hget(claimed.run, RunField.CLAIM_BY))
    assert indexed[claimed.lease_member] == deadline
    assert before + 30_000 <= deadline <= now_ms() + 30_000
    assert await runs.claim(claimed, worker="w", lease_seconds=LEASE_SECONDS)
    await runs.finish(ended, status=RunStatus.CANCELLED, message_id="m")
    assert await runs.indexes.count(keys.queued) == 0
    # An enqueued run is indexed too: the reapers move its deadline on while it waits.
    waiting = RunKeys("c1", "s4")
    assert await _create(runs, waiting, enqueue=True) == (True, "s1")
    assert await redis.zscore(keys.queued(waiting.shard), waiting.lease_member) is not None


async def test_requeue_hands_out_a_late_run_once_a_window_until_it_gives_it_up(runs, redis):
    k = RunKeys("c1", "s1")
    await _create(runs, k)
    assert await runs.due_queued(before=now_ms()) == []  # not due yet
    await _due(redis, k, ago_ms=1000)
    assert await runs.due_queued(before=now_ms()) == [k]
    # A process that cannot run it leaves it; one that can hands it out.
    assert await runs.requeue(k, caller="look", give_up_seconds=60) is Requeue.NOTHING
    assert await runs.requeue(k, caller="kick", give_up_seconds=60) is Requeue.KICK
    # The next look is one claim window away (no second kick meanwhile); the deadline stays.
    assert await redis.zscore(keys.queued(k.shard), k.lease_member) > now_ms()
    assert int(await redis.hget(k.run, RunField.CLAIM_BY)) < now_ms()
    assert await runs.due_queued(before=now_ms()) == []
    assert await runs.requeue(k, caller="kick", give_up_seconds=60) is Requeue.NOTHING
    # Unclaimed past the give-up line: any process gives it up.
    await _due(redis, k, ago_ms=61_000)
    assert await runs.due_queued(before=now_ms() - 60_000) == [k]
    assert await runs.requeue(k, caller="look", give_up_seconds=60) is Requeue.GIVE_UP
    assert await runs.requeue(k, caller="kick", give_up_seconds=60) is Requeue.NOTHING
    assert await redis.get(k.status) == "queued"  # the caller ends it (runs/requeue.py)
    # Once it has ended (or been claimed), a look drops it from the index.
    await runs.finish(k, status=RunStatus.ERROR, message_id="m", require=RunStatus.QUEUED)
    await redis.zadd(keys.queued(k.shard), {k.lease_member: 0})  # as if a look raced the end
    assert await runs.requeue(k, caller="kick", give_up_seconds=60) is Requeue.NOTHING
    assert await runs.indexes.count(keys.queued) == 0


async def test_requeue_moves_the_deadline_of_a_run_waiting_its_turn(runs, redis):
    first, second = RunKeys("c1", "s1"), RunKeys("c1", "s2")
    await _running(runs, first)
    await _create(runs, second, enqueue=True)
    await _due(redis, second, ago_ms=120_000)
    await redis.pexpire(second.run, 1000)
    assert await runs.requeue(second, caller="kick", give_up_seconds=60) is Requeue.WAITING
    assert int(await redis.hget(second.run, RunField.CLAIM_BY)) > now_ms()
    assert await redis.zscore(keys.queued(second.shard), second.lease_member) > now_ms()
    assert await redis.pttl(second.run) > 1000  # its keys live on while it waits
    # Its turn has come: now it is late, and handed out.
    await runs.finish(first, status=RunStatus.COMPLETED, message_id="m")
    await _due(redis, second, ago_ms=1000)
    assert await runs.requeue(second, caller="kick", give_up_seconds=60) is Requeue.KICK


async def test_requeue_all_hands_out_every_queued_run_due_or_not(runs, redis):
    late, fresh, running = RunKeys("c1", "s1"), RunKeys("c2", "s2"), RunKeys("c3", "s3")
    await _create(runs, late)
    await _create(runs, fresh)
    await _running(runs, running)
    await _due(redis, late, ago_ms=10 * 60_000)  # past any give-up line: still handed out
    assert sorted(await runs.due_queued(before=None), key=str) == sorted([late, fresh], key=str)
    for k in (late, fresh):
        assert await runs.requeue(k, caller="all", give_up_seconds=60) is Requeue.KICK
        assert int(await redis.hget(k.run, RunField.CLAIM_BY)) > now_ms()  # a new window
    assert await runs.requeue(running, caller="all", give_up_seconds=60) is Requeue.NOTHING


# newest, count_start


async def test_newest_follows_chat_active(runs, redis):
    assert await runs.newest("c1") is None
    first, second = RunKeys("c1", "s1"), RunKeys("c1", "s2")
    await _running(runs, first)
    record = await runs.newest("c1")
    assert record is not None and (record.session_id, record.status) == ("s1", RunStatus.RUNNING)
    assert record.last_id == (await _entries(redis, first))[-1].id
    await _create(runs, second, enqueue=True)
    record = await runs.newest("c1")
    assert record is not None and (record.session_id, record.multitask_after) == ("s2", "s1")


async def test_count_start_refuses_past_the_rate_and_says_how_long_to_wait(runs, redis):
    assert await runs.count_start("u", "s1", per_minute=2) == 0
    assert await runs.count_start("u", "s2", per_minute=2) == 0
    wait_ms = await runs.count_start("u", "s3", per_minute=2)
    assert 0 < wait_ms <= 60_000
    assert await redis.zrange(keys.rate("u"), 0, -1) == ["s1", "s2"]
    assert await runs.count_start("other", "s4", per_minute=2) == 0


# the scripts' text and the package's layering


def _lua_files() -> dict[str, str]:
    folder = resources.files("turnstream.lua")
    return {p.name: p.read_text() for p in folder.iterdir() if p.name.endswith(".lua")}


def test_every_script_starts_with_a_header_naming_its_keys_and_args():
    for name, text in _lua_files().items():
        header = text.split("\n\n", 1)[0]
        assert header.startswith(f"-- {name.removesuffix('.lua')}:"), name
        assert "KEYS[" in header and "ARGV[" in header, name


def test_the_scripts_use_only_the_run_hash_fields_named_in_keys():
    named = {v for k, v in vars(RunField).items() if k.isupper()}
    used = set()
    for text in _lua_files().values():
        for command, args in re.findall(r"'(HSET|HGET|HINCRBY)', run, ([^)]*)\)", text):
            parts = [a.strip() for a in args.split(",")]
            fields = parts[::2] if command == "HSET" else parts[:1]
            used |= {f.strip("'") for f in fields if f.startswith("'")}
    assert len(used) >= 10 and used <= named, used - named
