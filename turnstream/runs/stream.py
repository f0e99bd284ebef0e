"""Reading run streams: one reader per process for every stream its clients follow.

A thousand clients each holding a blocking XREAD would need a thousand Redis
connections and wake-ups. Instead the hub keeps one dedicated connection that
issues a single blocking XREAD over all followed streams, then hands each
batch of entries, parsed once, to every follower of that stream.

    follower --subscribe--> hub.cursors[stream] = where the hub reads from
    hub: XREAD BLOCK over all cursors --> entries --> each follower's queue

A follower that joins a stream the hub already reads catches up on its own
(XRANGE up to the hub's cursor) and takes the rest from the hub, so it gets
every entry once. A new stream wakes the blocked XREAD with CLIENT UNBLOCK,
so joining costs no block timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from turnstream.events import StreamEntry, cursor_key
from turnstream.keys import RunKeys
from turnstream.runs.state import RunStatus

logger = logging.getLogger("turnstream.hub")

_BATCH = 500
# Below the Redis client's socket timeout (runtime.SOCKET_TIMEOUT), so a quiet
# XREAD never looks like a dead connection.
BLOCK_MS = 2000
# After a busy XREAD, wait this long before the next: more entries per round trip.
_GATHER_SECONDS = 0.002


class _Follower:
    __slots__ = ("last_id", "queue")

    def __init__(self, last_id: str) -> None:
        self.last_id = last_id
        self.queue: asyncio.Queue[list[StreamEntry]] = asyncio.Queue()


class StreamHub:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._reader = redis.client()  # one connection of its own for the blocking XREAD
        self._reader_id: int | None = None
        self._followers: dict[str, set[_Follower]] = {}
        self._cursors: dict[str, str] = {}
        self._generation = 0  # bumped when a stream is added
        self._inflight: int | None = None  # generation of the XREAD under way
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            self._reader_id = int(await self._reader.client_id())
        except ResponseError:
            self._reader_id = None  # no CLIENT ID (fakeredis): joiners wait for the block
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._reader.aclose()

    async def follow(
        self, k: RunKeys, cursor: str, *, idle_seconds: float = BLOCK_MS / 1000
    ) -> AsyncIterator[list[StreamEntry]]:
        """Batches of the entries after `cursor` (exclusive) until `end`.

        Also returns once the run has ended (or expired) with nothing newer
        left, so a cursor at or past the end gets a finished stream, not a hang.
        """
        follower = _Follower(cursor)
        hub_cursor = self._add(k.stream, follower)
        try:
            if hub_cursor is not None and cursor_key(cursor) < cursor_key(hub_cursor):
                missed = await self._range(k.stream, cursor, hub_cursor)
                if missed:
                    follower.last_id = missed[-1].id
                    yield missed
                    if missed[-1].is_end:
                        return
            while True:
                try:
                    batch = await asyncio.wait_for(follower.queue.get(), idle_seconds)
                except TimeoutError:
                    status = await self.redis.get(k.status)
                    if status is not None and RunStatus(status).active:
                        continue
                    batch = await self._range(k.stream, follower.last_id, "+")
                    if not batch:
                        return
                fresh = [e for e in batch if cursor_key(e.id) > cursor_key(follower.last_id)]
                if not fresh:
                    continue
                follower.last_id = fresh[-1].id
                ended = next((i for i, e in enumerate(fresh) if e.is_end), None)
                if ended is not None:
                    yield fresh[: ended + 1]
                    return
                yield fresh
        finally:
            self._remove(k.stream, follower)

    def _add(self, stream: str, follower: _Follower) -> str | None:
        """Register a follower; return the hub's cursor if it already read this stream."""
        self._followers.setdefault(stream, set()).add(follower)
        existing = self._cursors.get(stream)
        if existing is None:
            self._cursors[stream] = follower.last_id
            self._generation += 1
            self._nudge()
        return existing

    def _remove(self, stream: str, follower: _Follower) -> None:
        followers = self._followers.get(stream)
        if followers is None:
            return
        followers.discard(follower)
        if not followers:
            del self._followers[stream]
            self._cursors.pop(stream, None)

    def _nudge(self) -> None:
        """Make the reader pick up a new stream now, not after its block times out."""
        self._wake.set()
        if self._inflight is not None and self._reader_id is not None:
            asyncio.get_running_loop().create_task(self._unblock(self._generation))

    async def _unblock(self, generation: int) -> None:
        # The XREAD may still be on its way to Redis: retry briefly until it blocks.
        for _ in range(50):
            if self._inflight is None or self._inflight >= generation:
                return
            with contextlib.suppress(RedisError):
                if await self.redis.client_unblock(self._reader_id):
                    return
            await asyncio.sleep(0.002)

    async def _run(self) -> None:
        while True:
            if not self._cursors:
                self._wake.clear()
                await self._wake.wait()
                continue
            streams = dict(self._cursors)
            self._inflight = self._generation
            try:
                reply = await self._reader.xread(streams, count=_BATCH, block=BLOCK_MS)
            except RedisError as exc:
                logger.warning("stream reader: %s; retrying", exc)
                await asyncio.sleep(0.5)
                continue
            finally:
                self._inflight = None
            for stream, raw in _by_stream(reply):
                entries = [StreamEntry.from_redis(i, f) for i, f in raw]
                if stream in self._cursors:
                    self._cursors[stream] = entries[-1].id
                for follower in self._followers.get(stream, ()):
                    follower.queue.put_nowait(entries)
            if reply:
                await asyncio.sleep(_GATHER_SECONDS)

    async def _range(self, stream: str, after: str, until: str) -> list[StreamEntry]:
        raw = await self.redis.xrange(stream, f"({after}", until, count=None)
        return [StreamEntry.from_redis(i, f) for i, f in raw]


async def expired(redis: Redis, k: RunKeys, cursor: str) -> str | None:
    """If entries after `cursor` were trimmed away, the cursor to resync from; else None."""
    trimmed_through = await redis.hget(k.run, "trimmed_through")
    if trimmed_through and cursor_key(cursor) < cursor_key(trimmed_through):
        return trimmed_through
    return None


def _by_stream(reply: Any) -> list[tuple[str, list[tuple[str, dict[str, str]]]]]:
    """XREAD's reply as (stream, entries) pairs, whether RESP2 (list) or RESP3 (dict) shaped."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [(stream, value[0]) for stream, value in reply.items()]
    return [(stream, entries) for stream, entries in reply]
