"""turnstream on a Redis Cluster of three masters: the run's life, the session endpoints,
a stop, an approval; random drops and resumes over two API processes and two workers;
the keys spread, and no lookup scans; a write on a connection a failover closed.

A small set on purpose: the whole suite runs on one Redis; these check that what differs
on a cluster (a conversation's keys in one slot, the user's in another, the sharded
indexes, sharded pub/sub per master, the cluster's queue) holds the same promises.
"""

from __future__ import annotations

import asyncio

import chaos
import httpx
import pytest
import typer
from api_support import api_for
from helpers import eventually
from redis.asyncio import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from servers import Process, Server, create_token
from sse import parse_sse

from turnstream import keys
from turnstream.cli.checks import check_redis, cluster_problem
from turnstream.keys import RunKeys
from turnstream.live.client import connect_redis, entries


async def _conversation(http: httpx.AsyncClient, headers: dict[str, str]) -> str:
    response = await http.post("/api/v1/conversations", headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _post(
    http, headers, cid: str, content: str = "hello", multitask: str = "reject"
) -> httpx.Response:
    url = f"/api/v1/conversations/{cid}/message/?stream=true&multitask={multitask}"
    return await http.post(url, headers=headers, data={"content": content})


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


async def test_a_stop_ends_the_run_cancelled_with_its_partial_reply(cluster_settings):
    async with api_for(cluster_settings, demo_words=400, demo_delay_ms=10) as (http, h, app):
        rt = app.state.runtime
        cid = await _conversation(http, h)
        posting = asyncio.create_task(_post(http, h, cid))

        async def running() -> str | None:
            sid = await rt.redis.get(keys.active(cid))
            return (
                sid if sid and await rt.redis.get(RunKeys(cid, sid).status) == "running" else None
            )

        sid = await eventually(running, timeout=10, what="the run to be running")
        stopped = await http.post(f"/api/v1/conversations/{cid}/stop", headers=h)
        events = parse_sse((await posting).text)
        messages = await http.get(f"/api/v1/conversations/{cid}/messages", headers=h)
    assert stopped.status_code == 200 and stopped.json() == {
        "status": "cancelled",
        "sessionId": sid,
    }
    assert events[-1].event == "end" and events[-1].data["status"] == "cancelled"
    assert messages.json()["items"][-1]["status"] == "cancelled"


async def test_multitask_rejects_enqueues_and_interrupts_as_on_one_node(cluster_settings):
    """The newest run (`chat:active`, the conversation's slot) and the user's cap (the
    user's slot): a second message is refused, waits its turn, or stops the first."""
    async with api_for(cluster_settings, demo_words=300, demo_delay_ms=10) as (http, h, app):
        rt = app.state.runtime
        cid = await _conversation(http, h)
        first = asyncio.create_task(_post(http, h, cid, "one"))
        first_sid = await eventually(
            lambda: rt.redis.get(keys.active(cid)), timeout=10, what="the first run"
        )
        refused = await _post(http, h, cid, "refused")
        queued = asyncio.create_task(_post(http, h, cid, "two", multitask="enqueue"))
        await eventually(
            lambda: _newer(rt, cid, first_sid), timeout=10, what="the second run to be newest"
        )
        second_sid = await rt.redis.get(keys.active(cid))
        interrupting = await _post(http, h, cid, "three", multitask="interrupt")
        streams = [parse_sse((await run).text) for run in (first, queued)]
        third = parse_sse(interrupting.text)
        messages = await http.get(f"/api/v1/conversations/{cid}/messages", headers=h)
    assert refused.status_code == 409 and refused.json()["sessionId"] == first_sid
    # The first ran to its end; the second waited for it and was stopped by the third.
    assert streams[0][-1].data["status"] == "completed"
    assert [e.event for e in streams[1]][:1] == ["queued"]
    assert streams[1][-1].data["status"] == "cancelled"
    assert streams[1][0].data["sessionId"] == second_sid
    assert third[-1].data["status"] == "completed"
    questions = [m["content"] for m in messages.json()["items"] if m["role"] == "user"]
    assert questions == ["one", "two", "three"]  # the refused one was not stored


async def _newer(rt, cid: str, sid: str) -> bool:
    return (await rt.redis.get(keys.active(cid))) not in (None, sid)


async def test_an_approval_waits_and_the_run_goes_on_once_decided(cluster_settings):
    async with api_for(cluster_settings, tool_approval="calculator") as (http, h, app):
        rt = app.state.runtime
        cid = await _conversation(http, h)
        posting = asyncio.create_task(_post(http, h, cid, '/tool calculator {"expression": "6*7"}'))

        async def asked() -> tuple[RunKeys, dict] | None:
            sid = await rt.redis.get(keys.active(cid))
            k = RunKeys(cid, sid or "")
            found = [
                e for e in entries(await rt.redis.xrange(k.stream)) if e.type == "approval_request"
            ]
            return (k, found[0].data) if found else None

        k, request = await eventually(asked, timeout=10, what="an approval_request")
        # Waiting, it holds no lease: its shard of the lease index does not list it.
        assert await rt.redis.zscore(keys.leases(k.shard), k.lease_member) is None
        url = f"/api/v1/conversations/{cid}/approvals/{request['approvalId']}"
        decided = await http.post(url, headers=h, json={"approved": True})
        events = parse_sse((await posting).text)
    assert decided.status_code == 200, decided.text
    results = [e.data for e in events if e.event == "tool_result"]
    assert [r["content"] for r in results] == ["42"]
    assert events[-1].event == "end" and events[-1].data["status"] == "completed"
    assert [e.data["seq"] for e in events] == list(range(1, len(events) + 1))


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


def test_random_drops_and_resumes_over_two_apis_and_two_workers_lose_nothing(
    cluster_url, migrated_postgres_url, tmp_path
):
    """tests/chaos.py's tabs on the cluster (as tests/reliability/test_resume_chaos.py on
    one Redis, smaller): each run's notices come from its own master to either process."""
    env = {
        "TURNSTREAM_REDIS_URL": cluster_url,
        "TURNSTREAM_REDIS_CLUSTER": "true",
        "TURNSTREAM_DATABASE_URL": migrated_postgres_url,
        "TURNSTREAM_DEMO_WORDS": str(chaos.WORDS),
        "TURNSTREAM_DEMO_DELAY_MS": "25",
        "TURNSTREAM_RUNS_PER_MINUTE": "10000",
    }
    apis = [Server(env, tmp_path / f"api{i}.log", "--no-worker") for i in range(2)]
    workers = [Process(["worker"], env, tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        for api in apis:
            api.wait_ready()
        tokens = [
            {"Authorization": f"Bearer {create_token(migrated_postgres_url, f'chaos{u}')}"}
            for u in range(2)
        ]
        tally = chaos.Tally()
        clients = asyncio.run(chaos.storm([a.url for a in apis], tokens, tally, clients=6, runs=3))
    finally:
        for process in (*apis, *workers):
            process.stop()
    assert chaos.lost_and_duplicated(clients) == (0, 0), f"seed {chaos.SEED}"
    for client in clients:
        assert [m["role"] for m in client.messages] == ["user", "assistant"] * 3
        stored = {m["id"]: m for m in client.messages}
        for reply in client.replies:
            assert reply.events == reply.full
            assert [e.data["seq"] for e in reply.full] == list(range(1, len(reply.full) + 1))
            assert reply.full[-1].event == "end" and reply.full[-1].data["status"] == "completed"
            text = "".join(e.data["text"] for e in reply.events if e.event == "delta")
            assert stored[reply.full[-1].data["messageId"]]["content"] == text
    assert sum(tally.drops.values()) >= 150 and tally.resumes["on another process"] >= 50
    for process in (*apis, *workers):
        assert "Traceback" not in process.output(), process.output()[-3000:]
