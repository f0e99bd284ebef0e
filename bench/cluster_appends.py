"""Redis's cost per event on one node and on a three-master cluster: what a master can carry.

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
1,000,000 / (µs per event) events a second. Results: bench/results/cluster_appends.json.
"""

from __future__ import annotations

import argparse
import asyncio
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

from turnstream import events
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
        ports.append(int(url.rsplit(":", 1)[1].split("/")[0]))
    nodes = [f"{HOST}:{p}" for p in ports]
    subprocess.run(["redis-cli", "--cluster", "create", *nodes, "--cluster-yes"],
                   check=True, capture_output=True)  # fmt: skip

    def ready() -> bool:
        return all(redis.Redis(port=p).cluster("info")["cluster_state"] == "ok" for p in ports)

    wait_for(ready, 15, "cluster_state:ok", procs[0])
    return procs, ports


def cpu(ports: list[int]) -> list[float]:
    infos = [redis.Redis(host=HOST, port=p).info("cpu") for p in ports]
    return [float(i["used_cpu_user"]) + float(i["used_cpu_sys"]) for i in infos]


def keys_held(ports: list[int]) -> list[int]:
    return [int(redis.Redis(host=HOST, port=p).dbsize()) for p in ports]


async def drive(url: str, cluster: bool, ports: list[int], runs: int, seconds: float) -> dict:
    client = connect_redis(url, cluster=cluster)
    state = RunState(client, maxlen=10_000, ttl_seconds=600)
    stamp = f"{time.time_ns()}"
    ks = [RunKeys(f"bench-{stamp}-{i}", f"conversation:bench:{stamp}-{i}") for i in range(runs)]
    for k in ks:
        await state.create(k, user_id=k.cid, message_id="m", user_message_id="", message="x",
                           enqueue=False, max_active=1)  # fmt: skip
        await state.claim(k, worker="bench", lease_seconds=600)
    written = 0
    deadline = time.monotonic() + seconds
    before = cpu(ports)

    async def one(k: RunKeys) -> None:
        nonlocal written
        while time.monotonic() < deadline:
            await state.append(k, [events.delta("word ")])
            written += 1

    started = time.monotonic()
    await asyncio.gather(*(one(k) for k in ks))
    elapsed = time.monotonic() - started
    used = [a - b for a, b in zip(cpu(ports), before, strict=True)]
    for k in ks:
        await state.finish(k, status=RunStatus.COMPLETED, message_id="m")
    await client.aclose()
    return {
        "events": written,
        "events_per_s": written / elapsed,
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
        single_port = int(single_url.rsplit(":", 1)[1].split("/")[0])
        cluster_url = f"redis://{HOST}:{ports[0]}/0"
        figures: dict[str, list[dict[str, Any]]] = {"single": [], "cluster": []}
        try:
            for i in range(repeats):
                order = ["single", "cluster"] if i % 2 == 0 else ["cluster", "single"]
                for layout in order:
                    log(f"repeat {i + 1}/{repeats}: {layout}")
                    if layout == "single":
                        got = asyncio.run(drive(single_url, False, [single_port], runs, seconds))
                    else:
                        got = asyncio.run(drive(cluster_url, True, ports, runs, seconds))
                    figures[layout].append(got)
        finally:
            Proc.stop_all()
    summary = {
        layout: {
            "events_per_s": median([f["events_per_s"] for f in rows]),
            "us_per_event_total": median([f["us_per_event_total"] for f in rows]),
            "us_per_event_busiest_master": median([f["us_per_event_busiest"] for f in rows]),
        }
        for layout, rows in figures.items()
    }
    print_table(
        ["layout", "events/s (client-bound)", "Redis µs/event (all nodes)", "µs/event, busiest"],
        [[layout, f"{s['events_per_s']:.0f}", f"{s['us_per_event_total']:.1f}",
          f"{s['us_per_event_busiest_master']:.1f}"] for layout, s in summary.items()],
    )  # fmt: skip
    params = {"runs": runs, "seconds": seconds, "repeats": repeats}
    write_results("cluster_appends", {"params": params, "repeats": figures, "medians": summary})


if __name__ == "__main__":
    socket.setdefaulttimeout(10)
    main()
