"""A run's live state in Redis, changed only by atomic Lua scripts.

Every transition is one script (turnstream/lua/<name>.lua), so that two actors
can never both win:

    create     -> queued      the API; writes the `queued` event
    claim      queued -> running   a worker; compare-and-set, so a redelivered
                                   task message never runs a run twice
    append     events while running; returns whether a stop was asked
    heartbeat  renews the worker's lease; fails once the run is no longer its own
    finish     -> completed | error | cancelled; writes `error`/`end` exactly once
    archived   notes how far SQL holds the run's events (runs/archiver.py), and trims
    requeue    a reaper's look at a queued run no worker claimed in time (`chat:queued`)

These seven share `_prelude.lua` (their common KEYS and ARGV, and the helpers
that write, trim and keep): `run_script` puts it in front of each one's text.
Every event gets the next `seq` from the run hash inside the script that
writes it, so the API, the worker and the reaper can all write to one stream.

Each script touches only the run's conversation's keys (one hash slot of a
cluster). What lives elsewhere is done around it, here: the user's place under
the cap (live/admission.py) before the create, the reapers' index shards
(live/indexes.py: an entry before the change that needs it, conditional removals
after), and at the end the duration sample and the cap's place given back.

Length: one class for every script and read of a run's live state, each next to the
others it must agree with; split, they would be read side by side anyway.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from turnstream import events, keys, lua
from turnstream.clock import now_ms
from turnstream.errors import RedisUnavailable
from turnstream.events import Event, StreamEntry, dumps
from turnstream.keys import RunField, RunKeys
from turnstream.live.admission import RESERVE_WINDOW_MS, Admission
from turnstream.live.client import is_cluster, maybe_text
from turnstream.live.indexes import Indexes
from turnstream.live.record import RunRecord
from turnstream.live.status import Requeue, RunStatus, is_live


def run_script(name: str) -> str:
    """A run script's whole text: the shared `_prelude.lua`, then `<name>.lua`."""
    return lua.load("_prelude") + "\n" + lua.load(name)


# Read once, at import.
_CREATE = run_script("create")
_CLAIM = run_script("claim")
_APPEND = run_script("append")
_HEARTBEAT = run_script("heartbeat")
_FINISH = run_script("finish")
_REQUEUE = run_script("requeue")
_ARCHIVED = run_script("archived")
_NEWEST = lua.load("newest")
_COUNT_START = lua.load("count_start")

_RATE_WINDOW_MS = 60_000


class RunState:
    """The run scripts and reads, bound to one Redis client and the retention settings.

    `claim_seconds`: a queued run that could start must be claimed within it (`chat:queued`).
    `archive`: runs are archived to SQL, so the trim keeps what SQL lacks (`archived`).
    Notices go out with SPUBLISH on a cluster (sharded pub/sub, live/notices.py), else PUBLISH.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        maxlen: int,
        ttl_seconds: int,
        claim_seconds: float = 15.0,
        archive: bool = False,
    ) -> None:
        self.redis = redis
        self.publish = "SPUBLISH" if is_cluster(redis) else "PUBLISH"
        self.indexes = Indexes(redis)
        self.admission = Admission(redis, ttl_ms=ttl_seconds * 1000)
        self.maxlen = maxlen
        self.archive = archive
        self.ttl_ms = ttl_seconds * 1000
        self.claim_ms = int(claim_seconds * 1000)
        self._create = redis.register_script(_CREATE)
        self._claim = redis.register_script(_CLAIM)
        self._append = redis.register_script(_APPEND)
        self._heartbeat = redis.register_script(_HEARTBEAT)
        self._finish = redis.register_script(_FINISH)
        self._requeue = redis.register_script(_REQUEUE)
        self._archived = redis.register_script(_ARCHIVED)
        self._newest = redis.register_script(_NEWEST)
        self._count_start = redis.register_script(_COUNT_START)

    def script_keys(self, k: RunKeys, *more: str) -> list[str]:
        """The prelude's KEYS[1..5], then a script's own (all in the conversation's slot)."""
        return [k.stream, k.run, k.status, k.cancel, k.active, *more]

    def script_args(self, k: RunKeys, *extra: Any, events: Sequence[Event] = ()) -> list[Any]:
        """The prelude's ARGV[1..6], a script's own, then the events as (type, data) pairs."""
        flat: list[Any] = [now_ms(), self.maxlen, self.ttl_ms, k.channel, k.sid, self.publish]
        flat += extra
        for event in events:
            flat += [event.type.value, dumps(event.data)]
        return flat

    async def create(
        self,
        k: RunKeys,
        *,
        user_id: str,
        message_id: str,
        user_message_id: str,
        message: str,
        enqueue: bool,
        max_active: int,
    ) -> tuple[bool, str | None]:
        """Record a new queued run, point `chat:active` at it, write `queued`.

        `message_id` is the reply's id; `user_message_id` the question's ("" when
        regenerating) and `message` its text. If another run of the conversation
        is active: with `enqueue`, the new run waits for it and (True, its id) is
        returned; else nothing is created and (False, its id) is returned.
        Raises ActiveRunLimit when the user already has `max_active` active runs.
        Two steps in two slots: the user's place, then the run (live/admission.py).
        """
        reserved_at = await self.admission.reserve(user_id, k, cap=max_active)
        fields = {
            RunField.SESSION_ID: k.sid,
            RunField.CONVERSATION_ID: k.cid,
            RunField.USER_ID: user_id,
            RunField.MESSAGE_ID: message_id,
            RunField.USER_MESSAGE_ID: user_message_id,
            RunField.MESSAGE: message,
        }
        if self.archive:
            fields[RunField.ARCHIVED_THROUGH] = "0-0"  # nothing in SQL yet: trim nothing
        claim_by = now_ms() + self.claim_ms
        await self.indexes.add(keys.queued, k, claim_by)  # listed before it is queued
        args = self.script_args(
            k,
            json.dumps(fields),
            "enqueue" if enqueue else "reject",
            keys.status_prefix(k.cid),
            claim_by,
            reserved_at,
            RESERVE_WINDOW_MS,
            events=[events.queued(k.sid)],
        )
        # Should this call fail without an answer, the reservation stays: it is its run's
        # if the create ran, else let go at the cap after admission.GRACE_MS.
        created, other = await self._create(keys=self.script_keys(k), args=args)
        if created != 1:  # refused: nothing holds the place or the entry
            await self.admission.release(user_id, k)
            await self.indexes.drop_if(keys.queued, k, claim_by)
        if created == -1:  # the reservation aged out: Redis (or this process) stalled that long
            raise RedisUnavailable
        return bool(created), other or None

    async def claim(self, k: RunKeys, *, worker: str, lease_seconds: float) -> bool:
        """Take a queued run for `worker` and write `start`; False if it was not queued."""
        lease_until = _lease_until(lease_seconds)
        # Leased in the index first; a claim that loses leaves an entry the reaper drops.
        await self.indexes.add(keys.leases, k, lease_until)
        args = self.script_args(k, worker, lease_until, events=[events.start(worker)])
        claimed = await self._claim(keys=self.script_keys(k), args=args)
        if not claimed[0]:  # the entry is the run's lease, if another claim holds one
            if held := maybe_text(claimed[1]):
                await self.indexes.move(keys.leases, k, int(held))
            else:
                await self.indexes.drop_if(keys.leases, k, lease_until)
            return False
        if look_at := maybe_text(claimed[1]):
            await self.indexes.drop_if(keys.queued, k, int(look_at))
        return True

    async def append(
        self, k: RunKeys, events: Sequence[Event], *, batch: int | None = None
    ) -> bool:
        """Write events; True when a stop was asked (or the run ended under us).

        With `batch` (numbered 1, 2, … by the one writer), sending a batch again is harmless.
        """
        number = "" if batch is None else batch
        args = self.script_args(k, number, events=events)
        _last_id, stop = await self._append(keys=self.script_keys(k), args=args)
        return bool(stop)

    async def heartbeat(self, k: RunKeys, *, worker: str, lease_seconds: float) -> int:
        """Renew the lease and the keys' TTL.

        Returns -1 if the run is no longer `worker`'s, else 1 if a stop was asked, 0 if not.
        """
        lease_until = _lease_until(lease_seconds)
        args = self.script_args(k, worker, lease_until)
        state = int(await self._heartbeat(keys=self.script_keys(k), args=args))
        if state >= 0:
            await self.indexes.add(keys.leases, k, lease_until)
        return state

    async def finish(
        self,
        k: RunKeys,
        *,
        status: RunStatus,
        message_id: str,
        error: tuple[str, str] | None = None,
        require: RunStatus | None = None,
        lapsed_before: int = 0,
    ) -> int | None:
        """End the run with its `error` (if any) and `end` events, unless it already ended.

        `error` is (message, code). With `require`, only a run in that status is
        ended; with `lapsed_before` (ms), only one whose lease lapsed before then.
        Returns the end time (ms) the script recorded, or None if it ended nothing.
        """
        written = []
        if error is not None:
            message, code = error
            written.append(events.error(message, code))
        written.append(events.end(status.value, message_id))
        args = self.script_args(
            k,
            status.value,
            error[0] if error else "",
            require.value if require else "",
            lapsed_before,
            events=written,
        )
        ended = await self._finish(keys=self.script_keys(k), args=args)
        if not ended[0]:
            return None
        await self._after_end(k, user_id=maybe_text(ended[1]) or "", duration=ended[2])
        return int(args[0])  # the `now` the script wrote

    async def _after_end(self, k: RunKeys, *, user_id: str, duration: int | str) -> None:
        """What an end changes outside the run's slot. A crash before it leaves index
        entries the readers drop, a place the cap lets go, one duration sample less."""
        await self.indexes.drop_all(k, (keys.leases, keys.queued, keys.waiting))
        if user_id:
            await self.admission.release(user_id, k)
        if isinstance(duration, int):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.lpush(keys.durations(k.shard), duration)
                pipe.ltrim(keys.durations(k.shard), 0, keys.DURATIONS_KEPT - 1)
                await pipe.execute()

    async def archived(self, k: RunKeys, through: str) -> bool:
        """Note that SQL holds the run's events through id `through`; trim what that frees."""
        return bool(
            await self._archived(keys=self.script_keys(k), args=self.script_args(k, through))
        )

    async def requeue(
        self, k: RunKeys, *, caller: Literal["kick", "look", "all"], give_up_seconds: float
    ) -> Requeue:
        """A reaper's look at a due queued run (`chat:queued`); see requeue.lua.

        `caller`: "kick" (this process can run it), "look" (it cannot), or "all" (a
        starting in-process serve hands out every queued run). A run still unclaimed
        `give_up_seconds` past its claim deadline is to be given up.
        """
        # The run it waits for (if any) is set at its create and never changes.
        after = maybe_text(await self.redis.hget(k.run, RunField.AFTER))
        waits_for = [RunKeys(k.cid, after).status] if after else []
        now = now_ms()
        line = now - int(give_up_seconds * 1000)
        args = self.script_args(k, now + self.claim_ms, line, caller)
        code, look_at = await self._requeue(keys=self.script_keys(k, *waits_for), args=args)
        if str(look_at):
            await self.indexes.move(keys.queued, k, int(look_at))  # where the hash says
        else:  # no longer queued: its entry goes, unless it was listed again meanwhile
            await self.indexes.drop_if(keys.queued, k, now, mode="le")
        return Requeue(int(code))

    async def due_queued(self, *, before: int | None, limit: int = 100) -> list[RunKeys]:
        """Up to `limit` queued runs due at `before` (ms) or earlier (None: any), oldest first.

        Index entries: the requeue script checks each against the run's hash.
        """
        return [k for k, _ in await self.indexes.due(keys.queued, before=before, limit=limit)]

    async def count_start(self, user_id: str, sid: str, *, per_minute: int) -> int:
        """Count a run the user starts now; 0, or the ms to wait if the minute's quota is used."""
        args: list[int | str] = [now_ms(), _RATE_WINDOW_MS, per_minute, sid]
        return int(await self._count_start(keys=[keys.rate(user_id)], args=args))

    async def get(self, k: RunKeys) -> RunRecord | None:
        """The run's record, or None once its keys have expired (or it never existed)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(k.run)
            pipe.xrevrange(k.stream, count=1)
            h, newest = await pipe.execute()
        if RunField.SESSION_ID not in h:  # none, or only what a write after it expired left
            return None
        return RunRecord.from_hash(h, StreamEntry.from_redis(*newest[0]) if newest else None)

    async def newest(self, cid: str) -> RunRecord | None:
        """The conversation's newest run (via `chat:active:{cid}`), or None if none is kept."""
        return (await self.owner_and_newest(cid))[1]

    async def owner_and_newest(self, cid: str) -> tuple[str | None, RunRecord | None]:
        """The conversation's cached owner (None if not cached) and newest run, in one call.

        A read, so tried twice: a pooled connection that a Redis restart closed fails
        its first command, and the second gets a new connection.
        """
        script_keys = [keys.active(cid), keys.owner(cid)]
        script_args = [keys.run_prefix(cid), keys.stream_prefix(cid)]
        try:
            reply = await self._newest(keys=script_keys, args=script_args)
        except RedisConnectionError:
            reply = await self._newest(keys=script_keys, args=script_args)
        owner, flat_hash, newest = reply
        if RunField.SESSION_ID not in flat_hash[::2]:  # none, or what a write after it expired left
            return maybe_text(owner), None
        entry = None
        if newest:
            entry_id, flat_fields = newest[0]
            entry = StreamEntry.from_redis(entry_id, _pairs(flat_fields))
        return maybe_text(owner), RunRecord.from_hash(_pairs(flat_hash), entry)

    async def question(self, k: RunKeys) -> tuple[str, bool]:
        """The run's question, and whether it was enqueued (so not stored yet)."""
        message, enqueued = await self.redis.hmget(k.run, [RunField.MESSAGE, RunField.ENQUEUED])
        return maybe_text(message) or "", maybe_text(enqueued) == "1"

    async def mark_prepared(self, k: RunKeys) -> None:
        """Record that the run's SQL side (its question, or a regenerate's deletion) is written."""
        await self.redis.hset(k.run, RunField.PREPARED, "1")

    async def is_prepared(self, k: RunKeys) -> bool:
        return bool(await self.redis.hget(k.run, RunField.PREPARED))

    async def wait_ended(self, k: RunKeys, *, within: float | None = None) -> bool:
        """True once the run has ended or its keys expired; False after `within` s: a deadline
        checked here (a cancellation lost in a Redis command once left a stop waiting)."""
        deadline = None if within is None else asyncio.get_running_loop().time() + within
        while deadline is None or asyncio.get_running_loop().time() < deadline:
            if not is_live(maybe_text(await self.redis.get(k.status))):
                return True
            await asyncio.sleep(0.05)
        return False

    async def ask_stop(self, k: RunKeys) -> None:
        """Set the run's cancel flag; its worker sees it on its next append or heartbeat."""
        await self.redis.set(k.cancel, "1", ex=keys.CANCEL_TTL_SECONDS)

    async def lapsed_leases(self, *, limit: int = 100) -> list[RunKeys]:
        """Up to `limit` runs whose lease expired before now, oldest first (the reaper's input)."""
        return await self.indexes.lapsed(keys.leases, RunField.LEASE_UNTIL, limit=limit)


def _pairs(flat: list[str]) -> dict[str, str]:
    """A script's flat [field, value, ...] reply as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _lease_until(lease_seconds: float) -> int:
    return now_ms() + int(lease_seconds * 1000)
