"""Redis's cost per event on one node and on a three-master cluster: what a master can carry;
and what a replica can lose at a failover, and what `WAIT` would cost to lose nothing.

    python bench/cluster_appends.py            # 200 runs, 10 s per layout, 3 repeats
    python bench/cluster_appends.py --quick    # 100 runs, 4 s, 1 repeat

Each repeat creates and claims `--runs` runs through `RunState` (the scripts the worker
uses), then appends one `delta` at a time to all of them from one asyncio client for
`--seconds`, the way the executor writes a run's events (the append script: HINCRBY,
XADD, a PUBLISH or SPUBLISH, a trim check). Measured on each Redis: the CPU it used
(`used_cpu_user` + `used_cpu_sys` from INFO) per 1,000 events, and how the events
spread over the masters. The single node is the baseline, measured in the same run,
the two layouts interleaved. The client is the bottleneck on these 2 shared cores, so
the figure that matters is Redis's CPU per event: a master at one core carries
1,000,000 / (µs per event) events a second.

Two more layouts, a primary with one replica (as a cluster master with its replica):
`replica`, as turnstream writes (replication asynchronous), sampling every 50 ms how
far the replica is behind (bytes of the replication stream, and events at the run's
average bytes per event; an upper bound, see `replication_offsets`): what a failover
at that moment would lose; and `replica+WAIT`, each append followed by `WAIT 1 1000`,
which returns once the replica has it: nothing acknowledged is lost, at the cost
this measures (events/s and the append's latency). Results: bench/results/cluster_appends.json.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from support import (
    HOST,
    Proc,
    free_port,
    log,
    median,
    print_table,
    start_redis,
    wait_for,
    write_results,
)

from turnstream import events, keys
from turnstream.keys import RunKeys
from turnstream.live.client import connect_redis
from turnstream.live.state import RunState
from turnstream.live.status import RunStatus


def start_cluster(workdir: Path) -> tuple[list[Proc], list[int]]:
    """Three masters on loopback, their bus ports given (`cluster-port`, Redis 7+)."""
    procs, ports = [], []
    for i in range(3):
        folder = workdir / f"node{i}"
        folder.mkdir()
        bus = free_port()
        proc, url = start_redis(folder, "--cluster-enabled", "yes", "--cluster-port", str(bus),
                                "--cluster-config-file", str(folder / "nodes.conf"))  # fmt: skip
        procs.append(proc)
        ports.append(port_of(url))
    nodes = [f"{HOST}:{p}" for p in ports]
    subprocess.run(["redis-cli", "--cluster", "create", *nodes, "--cluster-yes"],
                   check=True, capture_output=True)  # fmt: skip

    def ready() -> bool:
        return all(redis.Redis(port=p).cluster("info")["cluster_state"] == "ok" for p in ports)

    wait_for(ready, 15, "cluster_state:ok", procs[0])
    return procs, ports


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def cpu(ports: list[int]) -> list[float]:
    infos = [redis.Redis(host=HOST, port=p).info("cpu") for p in ports]
    return [float(i["used_cpu_user"]) + float(i["used_cpu_sys"]) for i in infos]


def replication_offsets(primary: int, replica: int) -> tuple[int, int]:
    """The primary's replication offset and the replica's (bytes of the replication stream).

    The replica's is read first: their difference is an upper bound of how far it is
    behind, by what the primary wrote between the two reads (well under a millisecond).
    """
    copy = _client(replica).info("replication")["slave_repl_offset"]
    master = _client(primary).info("replication")["master_repl_offset"]
    return int(master), int(copy)


@functools.cache
def _client(port: int) -> redis.Redis:
    """One connection per server, kept: a new one between the two reads would widen the gap."""
    return redis.Redis(host=HOST, port=port)


def keys_held(ports: list[int]) -> list[int]:
    return [int(redis.Redis(host=HOST, port=p).dbsize()) for p in ports]


async def drive(
    url: str, cluster: bool, ports: list[int], runs: int, seconds: float, *,
    replica: int | None = None, wait: bool = False,
) -> dict[str, Any]:  # fmt: skip
    keys.use_cluster_layout(cluster)  # as Runtime.open does
    client = connect_redis(url, cluster=cluster)
    state = RunState(client, maxlen=10_000, ttl_seconds=600)
    stamp = f"{time.time_ns()}"
    ks = [RunKeys(f"bench-{stamp}-{i}", f"conversation:bench:{stamp}-{i}") for i in range(runs)]
    for k in ks:
        await state.create(k, user_id=k.cid, message_id="m", user_message_id="", message="x",
                           enqueue=False, max_active=1)  # fmt: skip
        await state.claim(k, worker="bench", lease_seconds=600)
    written = 0
    latencies: list[float] = []
    lags: list[int] = []
    deadline = time.monotonic() + seconds
    before = cpu(ports)
    offsets = replication_offsets(ports[0], replica) if replica else (0, 0)

    async def one(k: RunKeys) -> None:
        nonlocal written
        while time.monotonic() < deadline:
            sent = time.perf_counter()
            await state.append(k, [events.delta("word ")])
            if wait:
                await client.execute_command("WAIT", 1, 1000)
            latencies.append(time.perf_counter() - sent)
            written += 1

    async def watch_lag() -> None:
        while replica and time.monotonic() < deadline:
            primary, copy = await asyncio.to_thread(replication_offsets, ports[0], replica)
            lags.append(primary - copy)
            await asyncio.sleep(0.05)

    started = time.monotonic()
    await asyncio.gather(watch_lag(), *(one(k) for k in ks))
    elapsed = time.monotonic() - started
    if replica:
        final = replication_offsets(ports[0], replica)
        bytes_per_event = (final[0] - offsets[0]) / max(written, 1)
    used = [a - b for a, b in zip(cpu(ports), before, strict=True)]
    for k in ks:
        await state.finish(k, status=RunStatus.COMPLETED, message_id="m")
    await client.aclose()
    latencies.sort()
    lag: dict[str, float] = {}
    if replica:
        lags.sort()
        middle = lags[len(lags) // 2]
        lag = {
            "lag_bytes_median": middle,
            "lag_bytes_max": lags[-1],
            "lag_events_median": middle / bytes_per_event,
            "lag_events_max": lags[-1] / bytes_per_event,
        }
    return {
        **lag,
        "events": written,
        "events_per_s": written / elapsed,
        "append_ms_p50": latencies[len(latencies) // 2] * 1000,
        "append_ms_p99": latencies[int(len(latencies) * 0.99)] * 1000,
        "redis_cpu_s": used,
        "us_per_event_total": sum(used) / written * 1e6,
        "us_per_event_busiest": max(used) / (written / len(ports)) * 1e6 if written else 0,
        "keys_per_master": keys_held(ports),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs, seconds, repeats = (100, 4.0, 1) if args.quick else (200, 10.0, 3)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        (workdir / "single").mkdir()
        _single, single_url = start_redis(workdir / "single")
        _nodes, ports = start_cluster(workdir)
        single_port = port_of(single_url)
        cluster_url = f"redis://{HOST}:{ports[0]}/0"
        (workdir / "primary").mkdir()
        (workdir / "replica").mkdir()
        _primary, primary_url = start_redis(workdir / "primary")
        primary = port_of(primary_url)
        _replica, replica_url = start_redis(workdir / "replica", "--replicaof", HOST, str(primary))
        replica = port_of(replica_url)
        wait_for(lambda: replication_offsets(primary, replica)[1] > 0, 15, "the replica")
        layouts = {
            "single": lambda: drive(single_url, False, [single_port], runs, seconds),
            "cluster": lambda: drive(cluster_url, True, ports, runs, seconds),
            "replica": lambda: drive(primary_url, False, [primary], runs, seconds,
                                     replica=replica),
            "replica+WAIT": lambda: drive(primary_url, False, [primary], runs, seconds,
                                          replica=replica, wait=True),
        }  # fmt: skip
        figures: dict[str, list[dict[str, Any]]] = {layout: [] for layout in layouts}
        try:
            for i in range(repeats):
                order = list(layouts) if i % 2 == 0 else list(reversed(layouts))
                for layout in order:
                    log(f"repeat {i + 1}/{repeats}: {layout}")
                    figures[layout].append(asyncio.run(layouts[layout]()))
        finally:
            Proc.stop_all()
    measured = ("events_per_s", "us_per_event_total", "us_per_event_busiest", "append_ms_p50",
                "append_ms_p99", "lag_events_median", "lag_events_max")  # fmt: skip
    summary = {
        layout: {name: median([f[name] for f in rows]) for name in measured if name in rows[0]}
        for layout, rows in figures.items()
    }
    print_table(
        ["layout", "events/s (client-bound)", "Redis µs/event (all nodes)", "µs/event, busiest",
         "append p50 / p99 (ms)", "replica behind (events, median / max)"],
        [[layout, f"{s['events_per_s']:.0f}", f"{s['us_per_event_total']:.1f}",
          f"{s['us_per_event_busiest']:.1f}",
          f"{s['append_ms_p50']:.2f} / {s['append_ms_p99']:.2f}",
          f"{s['lag_events_median']:.1f} / {s['lag_events_max']:.0f}"
          if "lag_events_max" in s else "-"] for layout, s in summary.items()],
    )  # fmt: skip
    params = {"runs": runs, "seconds": seconds, "repeats": repeats}
    write_results("cluster_appends", {"params": params, "repeats": figures, "medians": summary})


if __name__ == "__main__":
    socket.setdefaulttimeout(10)
    main()
