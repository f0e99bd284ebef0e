"""The stream hub's pub/sub connections: one for the process, or one per cluster node.

A `Subscriber` is one pub/sub connection and the task that reads it, handing each
message to the hub. On one Redis the hub keeps one, subscribed (SUBSCRIBE) to the
channels of every run its clients follow. On a Redis Cluster a channel lives on the
node that holds its hash slot (sharded pub/sub: SSUBSCRIBE and SPUBLISH, Redis 7+;
a run's channel `chat:notify:{cid}:{sid}` is in its conversation's slot, beside
the keys its scripts write), so the hub keeps one per master that holds a followed
run: following 1,000 runs spread over 3 masters takes 3 connections, not 1,000.
(Classic PUBLISH on a cluster goes to every node over the cluster bus, which
costs every node every run's traffic.)

A subscriber whose connection breaks reconnects and subscribes again; a notice
lost meanwhile is read back from the stream (the hub's sweep, live/stream.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from turnstream.background import stop_task

logger = logging.getLogger("turnstream.stream")

# A message as redis-py's PubSub returns it: type, channel, data.
Deliver = Callable[[dict[str, Any]], None]


class Subscriber:
    """One pub/sub connection, its (un)subscribes one at a time, and its reader."""

    def __init__(
        self,
        pubsub: PubSub,
        deliver: Deliver,
        *,
        sharded: bool,
        idle_seconds: float,
        stopping: asyncio.Event,
        owner: Redis | None = None,
    ) -> None:
        self._pubsub = pubsub
        self._deliver = deliver
        self._sharded = sharded
        self._idle_seconds = idle_seconds
        self._stopping = stopping
        self._owner = owner  # a node's own client, closed with the subscriber
        self._commands = asyncio.Lock()  # one (un)subscribe at a time on the connection
        self._subscribed = asyncio.Event()  # wakes the reader once it has something to read
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Connect once, up front: redis-py's PubSub opens a connection per concurrent
        # first subscribe and keeps only one, so the others' confirmations never come.
        await self._pubsub.connect()
        self._task = asyncio.create_task(self._listen())

    async def close(self) -> None:
        if self._task is not None:
            await stop_task(self._task, self._stopping)
        await self._pubsub.aclose()
        if self._owner is not None:
            await self._owner.aclose()

    async def subscribe(self, channel: str) -> None:
        async with self._commands:
            if self._sharded:
                await self._pubsub.ssubscribe(channel)
            else:
                await self._pubsub.subscribe(channel)
        self._subscribed.set()

    async def unsubscribe(self, channel: str) -> None:
        async with self._commands:
            if self._sharded:
                await self._pubsub.sunsubscribe(channel)
            else:
                await self._pubsub.unsubscribe(channel)

    async def _listen(self) -> None:
        while not self._stopping.is_set():
            if not self._pubsub.subscribed:
                # Woken by the next subscribe: its confirmation (which the follower awaits)
                # is read at once, not after a poll interval.
                self._subscribed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._subscribed.wait(), 0.05)
                continue
            try:
                message = await self._pubsub.get_message(timeout=self._idle_seconds)
            except RedisError as exc:
                logger.warning("stream notices interrupted: %s; reconnecting", exc)
                await asyncio.sleep(0.5)
                continue
            if message is not None:
                self._deliver(message)


async def node_pubsub(cluster: RedisCluster, channel: str) -> tuple[str, Redis]:
    """The name of the master that holds `channel`'s slot, and a client of that node alone
    (the cluster client's own settings: password, TLS, decoding)."""
    await cluster.initialize()  # the slot map, once (a no-op after)
    node = cluster.get_node_from_key(channel)
    if node is None:
        raise RedisConnectionError(f"no master holds the slot of {channel}")
    kwargs = {**node.connection_kwargs, "host": node.host, "port": node.port}
    pool = ConnectionPool(connection_class=node.connection_class, **kwargs)
    return node.name, Redis(connection_pool=pool)
