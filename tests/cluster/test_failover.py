"""A master killed while 20 runs stream, on a cluster of three masters with a replica each.

It starts six servers of its own and waits out a failover (`cluster-node-timeout` 2 s,
then an election): about 10 s of one pytest worker, mostly waiting. What it checks is
what docs/cluster.md says: every run ends with exactly one `end`, and a resume after
the end replays one consistent stream; what it prints is what the asynchronous
replica lost.

Every run waits the failover out and completes: a write on a connection the failover
closed, which redis-py 8.1.0 lets out as AttributeError or TypeError
(redis/redis-py#4287), is named a ConnectionError (live/client.py) and retried on the
new master like any other.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from api_support import api_for
from helpers import eventually, wait_until
from servers import RedisClusterNodes
from sse import parse_sse

from turnstream import keys
from turnstream.config import Settings
from turnstream.keys import RunKeys

RUNS = 20


@pytest.fixture
def six_nodes(tmp_path: Path) -> Iterator[RedisClusterNodes]:
    binary = os.environ.get("TURNSTREAM_TEST_REDIS_SERVER")
    if not binary:
        pytest.skip("the failover test runs under scripts/test (it names redis-server)")
    nodes = RedisClusterNodes(binary, tmp_path, masters=3, replicas=1)
    try:
        nodes.start()
        # A replica that never finished its first sync cannot take over: wait for them.
        wait_until(lambda: _replicas_synced(nodes.ports), timeout=15, what="the replicas in sync")
        yield nodes
    finally:
        nodes.kill()


def _replicas_synced(ports: list[int]) -> bool:
    roles = []
    for port in ports:
        with redis.Redis(port=port) as client:
            roles.append(client.info("replication"))
    replicas = [r for r in roles if r["role"] == "slave"]
    return len(replicas) == 3 and all(r["master_link_status"] == "up" for r in replicas)


def _master_of(ports: list[int], key: str) -> int:
    client = redis.RedisCluster(host="127.0.0.1", port=ports[0])
    try:
        return int(client.get_node_from_key(key).port)
    finally:
        client.close()


async def test_a_master_killed_mid_stream_every_run_ends_once_and_replays_whole(
    six_nodes: RedisClusterNodes, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/ts.db",
        redis_url=six_nodes.url,
        redis_cluster=True,
        data_dir=tmp_path / "data",
        demo_words=200,
        demo_delay_ms=30,
        lease_seconds=10,
        max_active_runs=RUNS,  # one user's twenty runs at once
        runs_per_minute=100,
    )
    async with asyncio.timeout(60), api_for(settings) as (http, headers, _app):
        cids = []
        for _ in range(RUNS):
            created = await http.post("/api/v1/conversations", headers=headers)
            cids.append(created.json()["id"])
        posts = [
            asyncio.create_task(
                http.post(
                    f"/api/v1/conversations/{cid}/message/?stream=true",
                    headers=headers,
                    data={"content": "hello"},
                )
            )
            for cid in cids
        ]
        rt = _app.state.runtime

        async def all_streaming() -> bool:
            sids = [await rt.redis.get(keys.active(cid)) for cid in cids]
            statuses = [
                await rt.redis.get(RunKeys(c, s).status)
                for c, s in zip(cids, sids, strict=True)
                if s
            ]
            return statuses.count("running") == RUNS

        await eventually(all_streaming, timeout=20, what="every run streaming")
        victim = _master_of(six_nodes.ports, RunKeys(cids[0], "x").run)
        held = sum(_master_of(six_nodes.ports, RunKeys(cid, "x").run) == victim for cid in cids)
        os.kill(six_nodes.pid(victim), signal.SIGKILL)
        killed = time.monotonic()
        seen = [parse_sse((await post).text) for post in posts]
        ended_after = time.monotonic() - killed
        replays = []
        for cid, events in zip(cids, seen, strict=True):
            sid = events[0].data["sessionId"]
            resumed = await http.get(f"/api/v1/conversations/{cid}/resume/{sid}", headers=headers)
            replays.append(parse_sse(resumed.text))
    lost = sum(
        len({e.id for e in a} - {e.id for e in b}) for a, b in zip(seen, replays, strict=True)
    )
    differ = sum(
        [(e.id, e.data) for e in a] != [(e.id, e.data) for e in b]
        for a, b in zip(seen, replays, strict=True)
    )
    statuses = [events[-1].data.get("status") for events in seen]
    print(
        f"killed the master of {held}/{RUNS} runs; all ended {ended_after:.1f} s later; "
        f"statuses {sorted(set(statuses))}; replays that differ from the live stream: "
        f"{differ}; events the live stream had and the replay lacks: {lost}"
    )
    assert statuses == ["completed"] * RUNS  # waited out, not ended by the failover
    for events in seen + replays:
        assert [e.event for e in events].count("end") == 1 and events[-1].event == "end"
    for events in replays:  # a replay is one consistent stream: every seq once, in order
        assert [e.data["seq"] for e in events] == list(range(1, len(events) + 1))
