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

Length: one class for every script and read of a run's live state, each next to the
others it must agree with; split, they would be read side by side anyway.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, Literal

from redis.asyncio import Redis

from turnstream import events, keys, lua
from turnstream.clock import now_ms
from turnstream.errors import ActiveRunLimit
from turnstream.events import Event, StreamEntry, dumps
from turnstream.keys import RunField, RunKeys
from turnstream.live.client import maybe_text, members
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
        """The prelude's KEYS[1..8], then a script's own."""
        prelude = [k.stream, k.run, k.status, k.cancel, k.active, keys.LEASES, keys.DURATIONS]
        return [*prelude, keys.QUEUED, *more]

    def script_args(self, k: RunKeys, *extra: Any, events: Sequence[Event] = ()) -> list[Any]:
        """The prelude's ARGV[1..5], a script's own, then the events as (type, data) pairs."""
        flat: list[Any] = [now_ms(), self.maxlen, self.ttl_ms, k.channel, k.sid, *extra]
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
        """
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
        queued = events.queued(k.sid)
        mode = "enqueue" if enqueue else "reject"
        args = self.script_args(
            k,
            json.dumps(fields),
            mode,
            keys.status_prefix(k.cid),
            max_active,
            now_ms() + self.claim_ms,
            k.lease_member,
            events=[queued],
        )
        created, other = await self._create(
            keys=self.script_keys(k, keys.user_runs(user_id)), args=args
        )
        if created == -1:
            raise ActiveRunLimit(max_active)
        return bool(created), other or None

    async def claim(self, k: RunKeys, *, worker: str, lease_seconds: float) -> bool:
        """Take a queued run for `worker` and write `start`; False if it was not queued."""
        start = events.start(worker)
        args = self.script_args(
            k, worker, _lease_until(lease_seconds), k.lease_member, events=[start]
        )
        return bool(await self._claim(keys=self.script_keys(k), args=args))

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
        args = self.script_args(k, worker, _lease_until(lease_seconds), k.lease_member)
        return int(await self._heartbeat(keys=self.script_keys(k), args=args))

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
            k.lease_member,
            keys.DURATIONS_KEPT,
            events=written,
        )
        ended = await self._finish(keys=self.script_keys(k), args=args)
        return int(args[0]) if ended else None  # args[0]: the `now` the script wrote

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
        args = self.script_args(k, k.lease_member, now + self.claim_ms, line, caller)
        return Requeue(int(await self._requeue(keys=self.script_keys(k, *waits_for), args=args)))

    async def due_queued(self, *, before: int | None, limit: int = 100) -> list[RunKeys]:
        """Up to `limit` queued runs due at `before` (ms) or earlier (None: any), oldest first."""
        line = "+inf" if before is None else before
        due = await self.redis.zrangebyscore(keys.QUEUED, "-inf", line, 0, limit)
        return [RunKeys.from_lease_member(m) for m in members(due)]

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
        reply = await self._newest(
            keys=[keys.active(cid)], args=[keys.run_prefix(cid), keys.stream_prefix(cid)]
        )
        if not reply or not reply[0]:
            return None
        flat_hash, newest = reply
        if RunField.SESSION_ID not in flat_hash[::2]:  # what a write after it expired left
            return None
        entry = None
        if newest:
            entry_id, flat_fields = newest[0]
            entry = StreamEntry.from_redis(entry_id, _pairs(flat_fields))
        return RunRecord.from_hash(_pairs(flat_hash), entry)

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
        leases = await self.redis.zrangebyscore(keys.LEASES, "-inf", now_ms(), 0, limit)
        return [RunKeys.from_lease_member(m) for m in members(leases)]


def _pairs(flat: list[str]) -> dict[str, str]:
    """A script's flat [field, value, ...] reply as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _lease_until(lease_seconds: float) -> int:
    return now_ms() + int(lease_seconds * 1000)
