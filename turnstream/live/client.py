"""Our Redis client: made here, and its replies typed here, once.

Every client turnstream talks to Redis with decodes its replies
(`decode_responses=True`): `connect_redis` below, and embedded mode's fakeredis
fallback (`EmbeddedRedis.client`). Every string comes back as `str`.

redis-py's annotations cannot know that: one `Redis` class serves decoding and
raw clients alike, so `get` is typed `bytes | str | None`, `xrange` a list of
`(bytes | str | None, dict | None)` pairs, and so on. Rather than a cast or a
`# type: ignore` at each read, the few sites that read strings pass the reply
through one of these helpers, which narrow it to what our clients return:

    text(value)          bytes | str         -> str
    maybe_text(value)    bytes | str | None  -> str | None
    members(reply)       a ZRANGE-family reply without scores -> list[str]
    entries(reply)       an XRANGE / XREVRANGE reply -> list[StreamEntry]

They check rather than cast (a `bytes` is decoded, not passed on as a `str`),
so a raw client handed in by mistake still reads right. We did not write a
typed facade (a Protocol of the commands we use, returning `str`): it would
restate dozens of redis-py signatures, pipelines and scripts included, and
drift from the library's; the client stays a plain `redis.asyncio.Redis`.

On a Redis Cluster (`connect_redis(url, cluster=True)`) it is redis-py's
`RedisCluster`, which has the same command methods, scripts and pipelines
(routed by key; a pipeline's commands go to their nodes) but is not a `Redis`
subclass. It is typed as `Redis` here, once: the few things that differ (pub/sub
per node, the stream hub's sweep, which is one script per slot) ask `is_cluster`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self, cast

from redis.asyncio import BlockingConnectionPool, Connection, Redis, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, SlotNotCoveredError

from turnstream.events import StreamEntry

if TYPE_CHECKING:
    from collections.abc import Iterable

    # these aliases came with redis-py 8's precise reply types
    from redis.typing import StreamRangeResponse, ZSetRangeResponse

SOCKET_TIMEOUT = 5.0
MAX_CONNECTIONS = 256


def connect_redis(url: str, *, cluster: bool = False) -> Redis:
    """The one way this process talks to Redis: strings in and out, outages noticed quickly.

    A blocking pool: a burst of requests waits briefly for a connection instead of
    failing with "Too many connections" (redis-py's default pool refuses at once).
    With `cluster`, `url` names any node of a Redis Cluster; the client finds the rest
    and keeps up to MAX_CONNECTIONS to each node.
    """
    if cluster:
        client = ClusterClient.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            decode_responses=True,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=2.0,
        )
        return cast(Redis, client)  # the same commands; see the module's docstring
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=SOCKET_TIMEOUT,
        decode_responses=True,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=2.0,
    )
    return Redis(connection_pool=pool)


class ClusterClient(RedisCluster):
    """redis-py's cluster client, but a cluster it cannot reach fails with the
    ConnectionError a single Redis it cannot reach fails with.

    redis-py raises RedisClusterException there ("cannot be connected", "startup nodes
    could not agree", "all slots are not covered"), which is not even a RedisError: a run
    that wrote while every master was restarting ended `error` instead of holding its
    events, and a request got 500 instead of 503. What a lost master's slots raise before
    its replica takes over (SlotNotCoveredError) is the same outage. The run queue's
    cluster broker talks through one too (runs/cluster_broker.py). Its connections name
    a write on a closed socket too (`_NamesLostConnections`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _name_lost_connections(self)

    async def initialize(self, *args: Any, **kwargs: Any) -> Self:
        try:
            await super().initialize(*args, **kwargs)
        except RedisClusterException as exc:  # every one it raises is the cluster's state
            raise RedisConnectionError(f"Redis Cluster unavailable: {exc}") from exc
        return self

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except SlotNotCoveredError as exc:
            raise RedisConnectionError(f"Redis Cluster unavailable: {exc}") from exc


class _NamesLostConnections(Connection):
    """A connection whose write, on a socket a cluster failover closed under it, fails with
    the ConnectionError it is: redis-py 8.1.0 lets AttributeError or TypeError out of
    its transport there (redis/redis-py#4287), and under uvloop a RuntimeError ("the
    handler is closed"), which no retry catches, so the run that wrote ended `error`
    instead of waiting out the failover on the new master."""

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        try:
            await super().send_packed_command(command, check_health)
        except (AttributeError, TypeError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and "handler is closed" not in str(exc):
                raise
            await self.disconnect(nowait=True)
            raise RedisConnectionError(f"Connection lost mid-write ({exc!r})") from exc


def _name_lost_connections(client: RedisCluster) -> None:
    """Every node the client knows, and every node it learns of, on such connections (TLS
    ones too: the class is made on the one the URL chose)."""
    nodes = client.nodes_manager
    chosen = nodes.connection_kwargs.get("connection_class", Connection)
    named = type(f"Named{chosen.__name__}", (_NamesLostConnections, chosen), {})
    nodes.connection_kwargs["connection_class"] = named
    for node in nodes.startup_nodes.values():
        node.connection_class = named


def is_cluster(redis: Redis) -> bool:
    """Whether the client is a Redis Cluster's (see `connect_redis`)."""
    return isinstance(redis, RedisCluster)


def text(value: bytes | str) -> str:
    """A string reply as the `str` a decoding client returns."""
    return value.decode() if isinstance(value, bytes) else value


def maybe_text(value: bytes | str | None) -> str | None:
    """A string reply, or None for a missing key or field."""
    return None if value is None else text(value)


def members(reply: ZSetRangeResponse) -> list[str]:
    """The members of a ZRANGE-family reply asked for without WITHSCORES."""
    out: list[str] = []
    for member in reply:
        if not isinstance(member, str | bytes):
            raise TypeError("members() reads a reply without scores; drop WITHSCORES")
        out.append(text(member))
    return out


def entries(reply: StreamRangeResponse | None) -> list[StreamEntry]:
    """The entries of an XRANGE or XREVRANGE reply, oldest first as Redis sent them.

    redis-py types an entry's id and fields as optional because XCLAIM reports a
    deleted entry as a pair of nils. A range never holds one; if it did, it would
    raise here rather than be skipped.
    """
    out: list[StreamEntry] = []
    for entry_id, fields in reply or []:
        if entry_id is None or fields is None:
            raise ValueError("a stream range reply with a deleted (nil) entry")
        out.append(StreamEntry.from_redis(entry_id, fields))
    return out
