"""Reading run streams: one subscriber per process for every run its clients follow.

The stream is the record; a notice is the doorbell. The append script
PUBLISHes every entry it writes to the run's channel. Each API process keeps
one pub/sub connection, subscribed to the channels of the runs its clients
follow, and hands each entry, parsed once, to every follower of that run: one
message per event, whatever the number of runs followed. (A single XREAD over
all followed streams costs O(runs) per round trip: measured at 200 runs it
topped out near 2,000 events/s.)

    follower: subscribe, wait for the confirmation, XRANGE after its cursor
    hub: notices -> each follower's queue; every `idle_seconds`, a tick
    follower: skip what it has seen; on a seq gap, or a tick after a quiet spell, XRANGE

Catching up only after the subscription is confirmed leaves no gap; skipping
ids already seen leaves no duplicate. A notice lost in a reconnect shows as a
gap in `seq` and is read back from the stream; the tick's XRANGE also notices
an ended or expired run. A follower given a `stop` (the API's drain, when its
server shuts down) is ended by a last item in its queue once `stop` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from turnstream.background import stop_task
from turnstream.events import StreamEntry, cursor_key
from turnstream.keys import RunField, RunKeys
from turnstream.live.client import entries, maybe_text, text
from turnstream.live.status import is_live

logger = logging.getLogger("turnstream.stream")

IDLE_SECONDS = 2.0
_CONFIRM_SECONDS = 10.0
# Ticks go out in this many slices per idle period, so quiet followers do not all
# check Redis at the same moment.
_TICK_SLICES = 10
_TICK: list[StreamEntry] = []  # an empty batch: "nothing came for a while, look yourself"
_STOP: list[StreamEntry] = []  # another: "stop following", once the follower's `stop` is set


class Stop(Protocol):
    """What ends a follow early when it is set: an asyncio or anyio `Event`."""

    def wait(self) -> Awaitable[object]: ...


class _Follower:
    __slots__ = ("last_id", "last_seq", "queue", "slice")

    def __init__(self, last_id: str, slice: int) -> None:
        self.last_id = last_id
        self.last_seq: int | None = None
        self.slice = slice
        self.queue: asyncio.Queue[list[StreamEntry]] = asyncio.Queue()


class _Channel:
    __slots__ = ("confirmed", "followers")

    def __init__(self) -> None:
        self.followers: set[_Follower] = set()
        self.confirmed = asyncio.Event()


class StreamHub:
    """This process's one pub/sub connection, shared by every client following a run."""

    def __init__(self, redis: Redis, *, idle_seconds: float = IDLE_SECONDS) -> None:
        self.redis = redis
        self.idle_seconds = idle_seconds
        self._pubsub: PubSub = redis.pubsub()
        self._channels: dict[str, _Channel] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._joined = 0
        self._commands = asyncio.Lock()  # one (un)subscribe at a time on the connection

    async def start(self) -> None:
        # Connect once, up front: redis-py's PubSub opens a connection per concurrent
        # first subscribe and keeps only one, so the others' confirmations never come.
        await self._pubsub.connect()
        self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._tick())]

    async def close(self) -> None:
        for task in self._tasks:
            await stop_task(task, self._stopping)
        await self._pubsub.aclose()

    async def follow(
        self, k: RunKeys, cursor: str, *, stop: Stop | None = None
    ) -> AsyncIterator[list[StreamEntry]]:
        """Batches of the entries after `cursor` (exclusive), until `end`.

        Also returns once the run has ended (or expired) with nothing newer
        left, so a cursor at or past the end gets a finished stream, not a hang;
        and, without `end`, soon after `stop` is set.
        """
        self._joined += 1
        follower = _Follower(cursor, self._joined % _TICK_SLICES)
        stopper = None if stop is None else asyncio.create_task(_stop_when(stop, follower))
        try:
            channel = await self._join(k.channel, follower)
            try:
                await asyncio.wait_for(channel.confirmed.wait(), _CONFIRM_SECONDS)
            except TimeoutError as exc:
                raise RedisTimeoutError(f"no subscription to {k.channel} confirmed") from exc
            # Catch up only now that nothing can slip by; notices queued meanwhile repeat it.
            catch_up: list[StreamEntry] | None = await self._range(k.stream, cursor)
            heard = False  # a notice came since the last tick
            while True:
                if catch_up is not None:
                    batch, catch_up = catch_up, None
                else:
                    batch = await follower.queue.get()
                    if batch is _STOP:
                        return
                    if batch is not _TICK:
                        heard = True
                        if follower.last_seq is not None and batch[0].seq > follower.last_seq + 1:
                            # A notice went missing (a reconnect): read the gap from the stream.
                            batch = await self._range(k.stream, follower.last_id)
                    elif heard:
                        heard = False
                        continue
                    else:
                        batch = await self._range(k.stream, follower.last_id)
                if not batch and not await self._live(k):
                    return
                fresh = [e for e in batch if cursor_key(e.id) > cursor_key(follower.last_id)]
                if not fresh:
                    continue
                follower.last_id, follower.last_seq = fresh[-1].id, fresh[-1].seq
                ended = next((i for i, e in enumerate(fresh) if e.is_end), None)
                if ended is not None:
                    yield fresh[: ended + 1]
                    return
                yield fresh
        finally:
            if stopper is not None:
                stopper.cancel()
            await self._leave(k.channel, follower)

    async def _join(self, name: str, follower: _Follower) -> _Channel:
        channel = self._channels.get(name)
        if channel is not None:
            channel.followers.add(follower)
            return channel
        channel = self._channels[name] = _Channel()
        channel.followers.add(follower)
        # Shielded: if this follower's client goes away now, the others that join the
        # channel meanwhile still need the subscription.
        await asyncio.shield(self._command(self._pubsub.subscribe, name))
        return channel

    async def _leave(self, name: str, follower: _Follower) -> None:
        channel = self._channels.get(name)
        if channel is None:
            return
        channel.followers.discard(follower)
        if not channel.followers:
            del self._channels[name]
            with contextlib.suppress(RedisError):
                await asyncio.shield(self._command(self._pubsub.unsubscribe, name))

    async def _command(self, command: Callable[[str], Awaitable[object]], name: str) -> None:
        """One (un)subscribe at a time on the connection, in the order they were asked for."""
        async with self._commands:
            await command(name)

    async def _listen(self) -> None:
        while not self._stopping.is_set():
            if not self._pubsub.subscribed:
                await asyncio.sleep(0.05)
                continue
            try:
                message = await self._pubsub.get_message(timeout=self.idle_seconds)
            except RedisError as exc:
                logger.warning("stream notices interrupted: %s; reconnecting", exc)
                await asyncio.sleep(0.5)
                continue
            if message is None:
                continue
            channel = self._channels.get(text(message["channel"]))
            if channel is None:
                continue
            if message["type"] == "subscribe":
                channel.confirmed.set()
            elif message["type"] == "message":
                batch = [StreamEntry.from_notice(text(message["data"]))]
                for follower in channel.followers:
                    follower.queue.put_nowait(batch)

    async def _tick(self) -> None:
        current = 0
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.idle_seconds / _TICK_SLICES)
            current = (current + 1) % _TICK_SLICES
            for channel in self._channels.values():
                for follower in channel.followers:
                    if follower.slice == current:
                        follower.queue.put_nowait(_TICK)

    async def _range(self, stream: str, after: str) -> list[StreamEntry]:
        return entries(await self.redis.xrange(stream, f"({after}", "+"))

    async def _live(self, k: RunKeys) -> bool:
        return is_live(maybe_text(await self.redis.get(k.status)))


async def _stop_when(stop: Stop, follower: _Follower) -> None:
    await stop.wait()
    follower.queue.put_nowait(_STOP)


async def expired(redis: Redis, k: RunKeys, cursor: str) -> str | None:
    """If entries after `cursor` were trimmed away, the cursor to resync from; else None."""
    trimmed_through = maybe_text(await redis.hget(k.run, RunField.TRIMMED_THROUGH))
    if trimmed_through and cursor_key(cursor) < cursor_key(trimmed_through):
        return trimmed_through
    return None
