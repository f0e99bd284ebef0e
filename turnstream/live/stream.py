"""Reading run streams: one subscriber per process (per cluster node) for every run followed.

The stream is the record; a notice is the doorbell. The append script
PUBLISHes every entry it writes to the run's channel. Each API process keeps
one pub/sub connection (on a cluster, one per master: live/notices.py),
subscribed to the channels of the runs its clients follow, and hands each
entry, parsed once, to every follower of that run: one message per event,
whatever the number of runs followed. (A single XREAD over all followed
streams costs O(runs) per round trip: measured at 200 runs it topped out near
2,000 events/s.)

    follower: subscribe, wait for the confirmation, XRANGE after its cursor
    hub: notices -> each follower's queue; every `idle_seconds`, a sweep
    follower: skip what it has seen; on a seq gap, or a nudge from the sweep, XRANGE

Catching up only after the subscription is confirmed leaves no gap; skipping
ids already seen leaves no duplicate. A notice lost in a reconnect shows as a
gap in `seq` and is read back from the stream. The sweep catches what no later
notice would show: a lost last notice, and a run that ended or expired unheard.
It reads the newest `seq` and the status of every run that was quiet since the
last sweep, in one script call per slice (lua/heads.lua), and nudges only the
followers that are behind or whose run is no longer live. (Before, each quiet follower read its
stream and its status itself every 2 s: at 10,000 idle streams that was 10,000
round trips a second, a whole core, for nothing.) A follower given a `stop`
(the API's drain, when its server shuts down) is ended by a last item in its
queue once `stop` is set.

Length: the follow protocol and the hub that feeds it, which must agree on every
step (confirm, catch up, skip, nudge, sweep); apart, each would be read beside the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from turnstream import lua
from turnstream.background import stop_task
from turnstream.events import StreamEntry, cursor_key
from turnstream.keys import RunField, RunKeys
from turnstream.live.client import entries, is_cluster, maybe_text, text
from turnstream.live.notices import Subscribers
from turnstream.live.status import is_live

logger = logging.getLogger("turnstream.stream")

_HEADS = lua.load("heads")

IDLE_SECONDS = 2.0
_CONFIRM_SECONDS = 10.0
# The sweep goes in this many slices per idle period, so that no one call is long
# enough to hold up the event loop (or Redis).
_SWEEP_SLICES = 10
_NUDGE: list[StreamEntry] = []  # an empty batch: "the run moved unheard, look yourself"
_STOP: list[StreamEntry] = []  # another: "stop following", once the follower's `stop` is set


class Stop(Protocol):
    """What ends a follow early when it is set: an asyncio or anyio `Event`."""

    def wait(self) -> Awaitable[object]: ...


class _Follower:
    """One client's place in a run, and its queue of batches.

    The queue is a list and a future, not an `asyncio.Queue` (three deques, an
    event: about 2 KB): an API process holds one per open stream.
    """

    __slots__ = ("last_id", "last_seq", "pending", "waiter")

    def __init__(self, last_id: str) -> None:
        self.last_id = last_id
        self.last_seq: int | None = None
        self.pending: list[list[StreamEntry]] = []
        self.waiter: asyncio.Future[None] | None = None

    def put(self, batch: list[StreamEntry]) -> None:
        self.pending.append(batch)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def get(self) -> list[StreamEntry]:
        while not self.pending:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.pending.pop(0)


class _Channel:
    __slots__ = ("confirmed", "followers", "heard", "run", "slice")

    def __init__(self, run: str, slice: int) -> None:
        self.run = run  # the run hash: its newest `seq` and its status, for the sweep
        self.slice = slice
        self.followers: set[_Follower] = set()
        self.confirmed = asyncio.Event()
        self.heard = False  # a notice came since the last sweep: nothing to check


class StreamHub:
    """This process's pub/sub connections, shared by every client following a run.

    One on a single Redis; on a cluster (sharded pub/sub), one per master that holds
    a followed run, made when the first one is followed.
    """

    def __init__(self, redis: Redis, *, idle_seconds: float = IDLE_SECONDS) -> None:
        self.redis = redis
        self.idle_seconds = idle_seconds
        self.sharded = is_cluster(redis)
        self._heads = redis.register_script(_HEADS)
        self._channels: dict[str, _Channel] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._notices = Subscribers(
            redis, self._deliver, idle_seconds=idle_seconds, stopping=self._stopping
        )
        self._joined = 0

    async def start(self) -> None:
        await self._notices.start()
        self._tasks = [asyncio.create_task(self._sweep())]

    async def close(self) -> None:
        for task in self._tasks:
            await stop_task(task, self._stopping)
        await self._notices.close()

    async def follow(
        self, k: RunKeys, cursor: str, *, stop: Stop | None = None
    ) -> AsyncGenerator[list[StreamEntry]]:
        """Batches of the entries after `cursor` (exclusive), until `end`.

        Also returns once the run has ended (or expired) with nothing newer
        left, so a cursor at or past the end gets a finished stream, not a hang;
        and, without `end`, soon after `stop` is set.
        """
        follower = _Follower(cursor)
        stopper = None if stop is None else asyncio.create_task(_stop_when(stop, follower))
        try:
            channel = await self._join(k, follower)
            try:
                await asyncio.wait_for(channel.confirmed.wait(), _CONFIRM_SECONDS)
            except TimeoutError as exc:
                raise RedisTimeoutError(f"no subscription to {k.channel} confirmed") from exc
            # Catch up only now that nothing can slip by; notices queued meanwhile repeat it.
            # From the cursor's own entry on: its `seq` is where gaps are counted from.
            batch: list[StreamEntry] | None = await self._range(k.stream, cursor, inclusive=True)
            while True:
                read = batch is not None  # from the stream, not a notice
                if batch is None:
                    batch = await follower.get()
                    if batch is _STOP:
                        return
                    if batch is _NUDGE or (
                        follower.last_seq is not None and batch[0].seq > follower.last_seq + 1
                    ):
                        # A notice went missing (a reconnect): read the gap from the stream.
                        batch, read = await self._range(k.stream, follower.last_id), True
                fresh = [e for e in batch if cursor_key(e.id) > cursor_key(follower.last_id)]
                if batch:
                    follower.last_seq = max(follower.last_seq or 0, batch[-1].seq)
                batch = None
                if not fresh:
                    if read and not await self._live(k):
                        return
                    continue
                follower.last_id = fresh[-1].id
                ended = next((i for i, e in enumerate(fresh) if e.is_end), None)
                if ended is not None:
                    yield fresh[: ended + 1]
                    return
                yield fresh
        finally:
            if stopper is not None:
                stopper.cancel()
            await self._leave(k.channel, follower)

    async def _join(self, k: RunKeys, follower: _Follower) -> _Channel:
        name = k.channel
        channel = self._channels.get(name)
        if channel is not None:
            channel.followers.add(follower)
            return channel
        self._joined += 1
        channel = self._channels[name] = _Channel(k.run, self._joined % _SWEEP_SLICES)
        channel.followers.add(follower)
        # Shielded: if this follower's client goes away now, the others that join the
        # channel meanwhile still need the subscription.
        await asyncio.shield(self._notices.subscribe(name))
        return channel

    async def _leave(self, name: str, follower: _Follower) -> None:
        channel = self._channels.get(name)
        if channel is None:
            return
        channel.followers.discard(follower)
        if not channel.followers:
            del self._channels[name]
            with contextlib.suppress(RedisError):
                await asyncio.shield(self._notices.unsubscribe(name))

    def _deliver(self, message: dict[str, Any]) -> None:
        """A message a subscriber read: a confirmation, or a notice for the run's followers."""
        channel = self._channels.get(text(message["channel"]))
        if channel is None:
            return
        if message["type"] in ("subscribe", "ssubscribe"):
            channel.confirmed.set()
        elif message["type"] in ("message", "smessage"):
            channel.heard = True
            batch = [StreamEntry.from_notice(text(message["data"]))]
            for follower in channel.followers:
                follower.put(batch)

    async def _sweep(self) -> None:
        current = 0
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.idle_seconds / _SWEEP_SLICES)
            current = (current + 1) % _SWEEP_SLICES
            try:
                await self._check(current)
            except RedisError as exc:
                logger.warning("stream sweep failed: %s", exc)

    async def _check(self, current: int) -> None:
        """Nudge the followers of this slice's quiet runs that are behind or no longer live."""
        quiet = []
        for channel in list(self._channels.values()):
            if channel.slice == current:
                if not channel.heard:
                    quiet.append(channel)
                channel.heard = False
        if not quiet:
            return
        heads = await self._read_heads([channel.run for channel in quiet])
        for i, channel in enumerate(quiet):
            seq, status = heads[2 * i], heads[2 * i + 1]
            newest = int(seq or 0)
            live = is_live(maybe_text(status))
            for follower in channel.followers:
                if not live or newest > (follower.last_seq or 0):
                    follower.put(_NUDGE)

    async def _read_heads(self, runs: list[str]) -> list[Any]:
        """Each run hash's `seq` and `status`, flat: one script on one Redis; on a cluster,
        where the hashes sit in many slots, one pipeline (a round trip per node)."""
        if not self.sharded:
            return list(await self._heads(keys=runs))
        async with self.redis.pipeline(transaction=False) as pipe:
            for run in runs:
                pipe.hmget(run, [RunField.SEQ, RunField.STATUS])
            return [value for pair in await pipe.execute() for value in pair]

    async def _range(self, stream: str, after: str, inclusive: bool = False) -> list[StreamEntry]:
        return entries(await self.redis.xrange(stream, after if inclusive else f"({after}", "+"))

    async def _live(self, k: RunKeys) -> bool:
        return is_live(maybe_text(await self.redis.get(k.status)))


async def _stop_when(stop: Stop, follower: _Follower) -> None:
    await stop.wait()
    follower.put(_STOP)


async def expired(redis: Redis, k: RunKeys, cursor: str) -> str | None:
    """If entries after `cursor` were trimmed away, the cursor to resync from; else None."""
    trimmed_through = maybe_text(await redis.hget(k.run, RunField.TRIMMED_THROUGH))
    if trimmed_through and cursor_key(cursor) < cursor_key(trimmed_through):
        return trimmed_through
    return None
