"""What differs on a Redis Cluster of three masters: a conversation's keys in one slot,
the keys spread with no hot master, no lookup that scans, the start-up check, and a
write on a connection a failover closed.

The runs' API, the session endpoints, approvals and the process reliability tests run
on a cluster as well, unchanged (modules marked `on_cluster_too`); these are the
checks that only a cluster can answer.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
import typer
from api_support import api_for
from helpers import eventually, free_port
from redis.asyncio import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from sse import parse_sse

from turnstream import keys
from turnstream.cli.checks import check_redis, cluster_problem
from turnstream.keys import RunKeys
from turnstream.live.client import connect_redis, entries
from turnstream.live.notices import Subscribers


async def _conversation(http: httpx.AsyncClient, headers: dict[str, str]) -> str:
    response = await http.post("/api/v1/conversations", headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _post(http: httpx.AsyncClient, headers: dict[str, str], cid: str) -> httpx.Response:
    url = f"/api/v1/conversations/{cid}/message/?stream=true"
    return await http.post(url, headers=headers, data={"content": "hello"})


async def test_a_run_streams_to_its_end_and_the_session_endpoints_answer(cluster_settings):
    async with api_for(cluster_settings) as (http, headers, app):
        cid = await _conversation(http, headers)
        events = parse_sse((await _post(http, headers, cid)).text)
        sid = events[0].data["sessionId"]
        active = await http.get(f"/api/v1/conversations/{cid}/active-session", headers=headers)
        task = await http.get(f"/api/v1/conversations/{cid}/task-status", headers=headers)
        messages = await http.get(f"/api/v1/conversations/{cid}/messages", headers=headers)
        rt = app.state.runtime
        k = RunKeys(cid, sid)
        stored = entries(await rt.redis.xrange(k.stream))
        deleted = await http.delete(f"/api/v1/conversations/{cid}", headers=headers)
        left = await rt.redis.exists(k.stream, k.run, k.status, keys.active(cid))
    assert deleted.status_code == 204 and left == 0  # one DEL: the keys share a slot
    assert [e.event for e in events].count("end") == 1 and events[-1].event == "end"
    assert [e.data["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e.id for e in events] == [e.id for e in stored]
    assert active.json()["status"] == "completed" and active.json()["sessionId"] == sid
    assert active.json()["cursor"] == events[-1].id
    assert task.json()["isActive"] is False and task.json()["sessionId"] == sid
    reply = messages.json()["items"][-1]
    text = "".join(e.data["text"] for e in events if e.event == "delta")
    assert (reply["role"], reply["content"]) == ("assistant", text)


async def test_300_conversations_spread_their_keys_over_the_three_masters(
    cluster_settings, masters
):
    async with api_for(cluster_settings) as (http, headers, app):
        rt = app.state.runtime
        for i in range(300):
            cid = await _conversation(http, headers)
            k = RunKeys(cid, f"conversation:user-{i % 30}:{i}")
            await rt.runs.create(
                k, user_id=f"user-{i % 30}", message_id=str(i), user_message_id="",
                message="x", enqueue=False, max_active=100,
            )  # fmt: skip
            await rt.runs.claim(k, worker="w", lease_seconds=60)
    sizes = [m.dbsize() for m in masters]
    assert sum(sizes) > 300 * 4  # each conversation's run keys, its owner, ...
    shares = [size / sum(sizes) for size in sizes]
    assert all(0.20 <= share <= 0.47 for share in shares), shares


async def test_the_session_endpoints_make_no_scan_on_any_master(cluster_settings, masters):
    async with api_for(cluster_settings) as (http, headers, _app):
        cid = await _conversation(http, headers)
        await _post(http, headers, cid)
        for m in masters:
            m.config_resetstat()
        for _ in range(10):
            for endpoint in ("active-session", "task-status"):
                answer = await http.get(f"/api/v1/conversations/{cid}/{endpoint}", headers=headers)
                assert answer.status_code == 200
    stats = [m.info("commandstats") for m in masters]
    for s in stats:
        assert not {"cmdstat_keys", "cmdstat_scan"} & set(s), s
    assert sum(s.get("cmdstat_evalsha", {}).get("calls", 0) for s in stats) >= 20  # counted


def test_the_start_up_check_takes_the_cluster_and_refuses_a_mix_up(cluster_url, redis_url):
    assert cluster_problem(cluster_url) is None  # it answers, every slot is covered, Redis 7+
    assert cluster_problem(redis_url)  # a single Redis named as a cluster
    with pytest.raises(typer.Exit):
        check_redis(cluster_url)  # a cluster node named as a single Redis


async def test_a_write_on_a_connection_a_failover_closed_is_a_connection_error(cluster_url):
    """redis-py 8.1.0 lets AttributeError out of a write on a transport closed under it
    (redis/redis-py#4287); the cluster client retries only a ConnectionError."""
    client = connect_redis(cluster_url, cluster=True)
    try:
        await client.initialize()
        assert all(node.connection_class is not Connection for node in client.get_nodes())
        node = client.get_primaries()[0]
        connection = node.connection_class(host=node.host, port=node.port)
        await connection.connect()
        connection._writer = object()  # a transport gone from under the write, as in #4287
        with pytest.raises(RedisConnectionError, match="lost mid-write"):
            await connection.send_packed_command(connection.pack_command("PING"))
        assert not connection.is_connected  # the next command connects afresh
        assert await client.ping()
    finally:
        await client.aclose()


async def test_a_cluster_that_cannot_be_reached_is_a_connection_error():
    """As a single Redis that cannot be reached is: what the executor holds events through
    and the API answers 503 to (redis-py's own RedisClusterException is neither)."""
    client = connect_redis(f"redis://127.0.0.1:{free_port()}/0", cluster=True)
    try:
        with pytest.raises(RedisConnectionError, match="Redis Cluster unavailable"):
            await client.get("chat:active:{c1}")
    finally:
        await client.aclose()


async def test_a_channel_left_and_followed_again_at_once_stays_on_its_connection(cluster_url):
    """The confirmation of our own SUNSUBSCRIBE, read after the channel was subscribed
    again, is not the server dropping the channel (a slot that moved): nothing is moved."""
    client = connect_redis(cluster_url, cluster=True)
    got: list[dict] = []
    subscribers = Subscribers(client, got.append, idle_seconds=0.05, stopping=asyncio.Event())
    moves: list[str | None] = []
    rehome = subscribers.rehome

    async def counted(broken, channel):
        moves.append(channel)
        await rehome(broken, channel)

    subscribers.rehome = counted  # type: ignore[method-assign]
    channel = RunKeys("c1", "s1").channel
    try:
        await subscribers.start()
        for _ in range(20):
            await subscribers.subscribe(channel)
            await subscribers.unsubscribe(channel)
        await subscribers.subscribe(channel)

        async def delivered() -> bool:
            await client.spublish(channel, "hello")
            return any(m["type"] == "smessage" and m["data"] == "hello" for m in got)

        await eventually(delivered, timeout=5, what="a notice on the channel followed again")
    finally:
        await subscribers.close()
        await client.aclose()
    assert moves == []
