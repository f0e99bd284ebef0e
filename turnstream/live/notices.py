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
lost meanwhile is read back from the stream (the hub's sweep, live/stream.py). On
a cluster a broken connection may be a master gone for good (a failover promoted
its replica) and a server-sent SUNSUBSCRIBE a slot that moved: the channels then
move to the master that holds their slot now (`Subscribers.rehome`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, cast

from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from turnstream.background import stop_task

logger = logging.getLogger("turnstream.stream")

# A message as redis-py's PubSub returns it: type, channel, data.
Deliver = Callable[[dict[str, Any]], None]
# Told when a subscriber's connection broke (the subscriber), or its server dropped a
# channel it did not ask to leave (a slot moved: the subscriber and that channel).
Moved = Callable[["Subscriber", str | None], Awaitable[None]]


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
        moved: Moved | None = None,
    ) -> None:
        self.channels: set[str] = set()  # subscribed, or being subscribed
        # Sharded unsubscribes sent whose confirmation has not come: a `sunsubscribe` for
        # one of these is ours, even when the channel was subscribed again meanwhile.
        self._leaving: Counter[str] = Counter()
        self.retired = False  # its channels moved elsewhere: the reader stops
        self._moved = moved
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
        self.channels.add(channel)
        async with self._commands:
            if self._sharded:
                await self._pubsub.ssubscribe(channel)
            else:
                await self._pubsub.subscribe(channel)
        self._subscribed.set()

    async def unsubscribe(self, channel: str) -> None:
        self.channels.discard(channel)
        async with self._commands:
            if self._sharded:
                self._leaving[channel] += 1
                await self._pubsub.sunsubscribe(channel)
            else:
                await self._pubsub.unsubscribe(channel)

    async def _listen(self) -> None:
        while not self._stopping.is_set() and not self.retired:
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
                self._leaving.clear()  # their confirmations went with the connection
                await asyncio.sleep(0.5)
                await self._move(None)
                continue
            if message is None:
                continue
            channel = str(message["channel"])
            if message["type"] == "sunsubscribe":
                if self._leaving[channel] > 0:
                    self._leaving[channel] -= 1  # our own unsubscribe, confirmed
                    if not self._leaving[channel]:
                        del self._leaving[channel]
                elif channel in self.channels:
                    await self._move(channel)  # the server dropped it: its slot moved
                    continue
            self._deliver(message)

    async def _move(self, channel: str | None) -> None:
        """Ask for this connection's channels (or one) to move; a failure is tried again at
        the next error (while a failover runs, the cluster may not answer yet)."""
        if self._moved is None:
            return
        try:
            await self._moved(self, channel)
        except RedisError as exc:
            logger.warning("stream notices not moved yet: %s", exc)


class Subscribers:
    """This process's pub/sub connections: one on a single Redis, one per master on a
    cluster (made when a run it holds is first followed), and which channel is on which."""

    def __init__(
        self, redis: Redis, deliver: Deliver, *, idle_seconds: float, stopping: asyncio.Event
    ) -> None:
        self.redis = redis
        self.sharded = isinstance(redis, RedisCluster)
        self._deliver = deliver
        self._idle_seconds = idle_seconds
        self._stopping = stopping
        self._by_node: dict[str, Subscriber] = {}  # by node name ("" on one Redis)
        self._retired: list[Subscriber] = []  # a lost master's: closed with the rest
        self._making = asyncio.Lock()  # one new subscriber, or one move, at a time

    async def start(self) -> None:
        if not self.sharded:
            await self._add("", self.redis, owned=False)

    async def close(self) -> None:
        self._stopping.set()
        for subscriber in [*self._by_node.values(), *self._retired]:
            await subscriber.close()

    async def subscribe(self, channel: str) -> None:
        await (await self._for(channel)).subscribe(channel)

    async def unsubscribe(self, channel: str) -> None:
        for subscriber in list(self._by_node.values()):
            if channel in subscriber.channels:
                await subscriber.unsubscribe(channel)

    async def rehome(self, broken: Subscriber, channel: str | None) -> None:
        """Move `broken`'s channels (or just `channel`) to the masters that hold them now.

        The cluster client's slot map is read again first. Before a failover has promoted
        a replica the map still names the lost master, and nothing moves yet; the next
        error asks again.
        """
        async with self._making:
            await cast(RedisCluster, self.redis).nodes_manager.initialize()
        for name in [channel] if channel else list(broken.channels):
            target = await self._for(name)
            if target is not broken:
                broken.channels.discard(name)
                await target.subscribe(name)
        if not broken.channels and broken in self._by_node.values():
            self._by_node = {n: s for n, s in self._by_node.items() if s is not broken}
            broken.retired = True  # its reader ends
            self._retired.append(broken)
            logger.warning("stream notices moved to the masters that hold them now")

    async def _for(self, channel: str) -> Subscriber:
        """The connection `channel` is read on: the one, or its slot's master's."""
        if not self.sharded:
            return self._by_node[""]
        async with self._making:
            name, client = await node_pubsub(cast(RedisCluster, self.redis), channel)
            if name in self._by_node:
                await client.aclose()
                return self._by_node[name]
            return await self._add(name, client, owned=True)

    async def _add(self, name: str, client: Redis, *, owned: bool) -> Subscriber:
        subscriber = Subscriber(
            client.pubsub(),
            self._deliver,
            sharded=self.sharded,
            idle_seconds=self._idle_seconds,
            stopping=self._stopping,
            owner=client if owned else None,
            moved=self.rehome if self.sharded else None,
        )
        await subscriber.start()
        self._by_node[name] = subscriber
        return subscriber


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
