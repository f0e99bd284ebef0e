"""The reapers' indexes of runs (leases, queued, waiting), sharded so that a cluster spreads them.

Each index is `keys.SHARDS` sorted sets, `chat:leases:{shard-N}` and so on; a run is
listed in the shard of its conversation (`keys.shard_of`). A shard lives in another
hash slot than the runs it lists, so the run scripts cannot update it atomically with
the run: the run's hash is the truth, and an index entry is a hint kept by three rules.

1. An entry is added (or its score moved later) *before* the script that moves the
   run into the state the index lists: a crash in between leaves an entry too many,
   never a run missing from its index (a queued run nobody would hand out again, a
   running run no reaper would end).
2. Whoever reads an entry checks it against the run's hash before acting on it: the
   scripts re-check the state (claim, finish, requeue, decide compare and set), and
   the readers here drop an entry whose run left the state, or move its score to the
   hash's (`look_at`, `lease_until`, `wait_until`) when the hash says later.
3. An entry is removed only if it is the one the remover saw (lua/unindex.lua: the
   score it read, or "due by now"). Whoever adds one again after that gives it a later
   score, so a run that went back into the state (waiting -> queued, after its claim)
   keeps its entry. Only a run's end (final) removes its entries unconditionally.

Every process covers every shard in each pass, one pipelined read for all of them;
two processes acting on one entry is harmless, since the scripts decide.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from typing import Literal

from redis.asyncio import Redis

from turnstream import keys, lua
from turnstream.clock import now_ms
from turnstream.keys import RunField, RunKeys
from turnstream.live.client import text
from turnstream.live.status import RunStatus

_UNINDEX = lua.load("unindex")

# The run's state while a time field of its hash is what the index lists.
_STATES = {RunField.LEASE_UNTIL: RunStatus.RUNNING, RunField.WAIT_UNTIL: RunStatus.WAITING}

# An index: a function from a shard number to its key (keys.leases, keys.queued, ...).
Index = Callable[[int], str]


class Indexes:
    """Adds, reads and conditional removals over every shard of the run indexes."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._unindex = redis.register_script(_UNINDEX)

    async def add(self, index: Index, k: RunKeys, score: int) -> None:
        """List the run (or move its score): before the change that needs the entry."""
        await self.redis.zadd(index(k.shard), {k.lease_member: score})

    async def move(self, index: Index, k: RunKeys, score: int) -> None:
        """Move an entry's score to what the run's hash says; never adds one back."""
        await self.redis.zadd(index(k.shard), {k.lease_member: score}, xx=True)

    async def drop_if(
        self, index: Index, k: RunKeys, score: int, *, mode: Literal["eq", "le"] = "eq"
    ) -> bool:
        """Remove the entry if its score is `score` ('eq') or at or before it ('le')."""
        return bool(await self._unindex(keys=[index(k.shard)], args=[k.lease_member, score, mode]))

    async def drop_all(self, k: RunKeys, indexes: Iterable[Index]) -> None:
        """Remove the run from every one of `indexes`: only once it has ended (final)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for index in indexes:
                pipe.zrem(index(k.shard), k.lease_member)
            await pipe.execute()

    async def due(
        self, index: Index, *, before: float | None, limit: int = 100
    ) -> list[tuple[RunKeys, int]]:
        """Up to `limit` entries scored at `before` (ms) or earlier (None: any), oldest first,
        from every shard, with the score each had."""
        line = "+inf" if before is None else before
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in keys.every_shard(index):
                pipe.zrangebyscore(shard, "-inf", line, 0, limit, withscores=True)
            replies = await pipe.execute()
        found = heapq.merge(*(_scored(reply) for reply in replies), key=lambda pair: pair[1])
        return [(RunKeys.from_lease_member(member), score) for member, score in found][:limit]

    async def lapsed(self, index: Index, field: str, *, limit: int = 100) -> list[RunKeys]:
        """Up to `limit` runs whose time in the index (`field` in their hash: `lease_until`,
        `wait_until`) is past, oldest first: the reapers' input.

        Each entry due is checked against its run's hash: one whose run left the state
        is dropped, one whose time was moved on since is moved there too.
        """
        now = now_ms()
        due = await self.due(index, before=now, limit=limit)
        async with self.redis.pipeline(transaction=False) as pipe:
            for k, _ in due:
                pipe.hmget(k.run, [RunField.STATUS, field])
            heads = await pipe.execute()
        lapsed = []
        for (k, _), (status, until) in zip(due, heads, strict=True):
            if status != _STATES[field]:
                await self.drop_if(index, k, now, mode="le")
            elif until is not None and int(until) >= now:
                await self.move(index, k, int(until))
            else:
                lapsed.append(k)
        return lapsed

    async def count(self, index: Index) -> int:
        """How many runs the index lists (stale entries included), over every shard."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in keys.every_shard(index):
                pipe.zcard(shard)
            return sum(int(n) for n in await pipe.execute())


def _scored(reply: list[tuple[bytes | str, float]]) -> list[tuple[str, int]]:
    return [(text(member), int(score)) for member, score in reply]
