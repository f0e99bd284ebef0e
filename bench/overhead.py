"""What Redis in the middle costs: time to the last event of a 500-event reply.

    python bench/overhead.py [--events 500] [--delay-ms 5] [--repeats 5]

Side by side in one run, with the same agent (N deltas, `--delay-ms` apart):

- direct: the agent consumed in-process, as a server without turnstream would stream it;
- turnstream: `POST /message/?stream=true` to a real `turnstream serve` on a real
  `redis-server`, the client timing the arrival of the run's last delta over loopback HTTP.

Both clocks start when the request (or the iteration) starts. The overhead is
(turnstream - direct) / direct, median over repeats; the goal is ≤ 10 %.
Prints a table and writes bench/results/overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "overhead.json"


async def paced_agent(ctx):  # TURNSTREAM_AGENT=overhead:paced_agent
    """N deltas, a fixed delay apart: the reply both sides stream."""
    events = int(os.environ["BENCH_EVENTS"])
    delay = float(os.environ["BENCH_DELAY_MS"]) / 1000
    for i in range(events):
        await asyncio.sleep(delay)
        yield f"w{i} "


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _direct() -> float:
    start = time.perf_counter()
    async for _ in paced_agent(None):
        pass
    return time.perf_counter() - start


async def _through_turnstream(client: httpx.AsyncClient, url: str, headers: dict) -> float:
    cid = (await client.post(f"{url}/api/v1/conversations", headers=headers)).json()["id"]
    start = time.perf_counter()
    last_delta = None
    async with client.stream(
        "POST",
        f"{url}/api/v1/conversations/{cid}/message/?stream=true",
        headers=headers,
        data={"content": "hello"},
    ) as response:
        async for line in response.aiter_lines():
            if line.startswith("event: delta"):
                last_delta = time.perf_counter()
            elif line.startswith("event: end"):
                break
    assert last_delta is not None, "no delta arrived"
    return last_delta - start


def _start_services(tmp: Path, env: dict[str, str]) -> tuple[subprocess.Popen, subprocess.Popen]:
    redis_port, api_port = _free_port(), _free_port()
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        sys.exit("redis-server is missing: apt-get install -y redis-server")
    redis = subprocess.Popen(
        [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    env.update(
        TURNSTREAM_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        TURNSTREAM_DATABASE_URL=f"sqlite+aiosqlite:///{tmp}/bench.db",
        TURNSTREAM_AGENT="overhead:paced_agent",
        PYTHONPATH=f"{ROOT / 'bench'}{os.pathsep}{env.get('PYTHONPATH', '')}",
    )
    log = (tmp / "serve.log").open("wb")
    api = subprocess.Popen(
        [sys.executable, "-m", "turnstream", "serve", "--port", str(api_port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    env["BENCH_API_URL"] = f"http://127.0.0.1:{api_port}"
    return redis, api


def _token(log: Path) -> str:
    """The demo token `serve` prints on its first start, once it is up."""
    for _ in range(300):
        text = log.read_text(errors="replace")
        if "ts_" in text and "Application startup complete" in text:
            return next(w for w in text.split() if w.startswith("ts_"))
        time.sleep(0.1)
    sys.exit(f"turnstream serve did not start:\n{log.read_text()}")


async def main(args: argparse.Namespace) -> None:
    os.environ["BENCH_EVENTS"], os.environ["BENCH_DELAY_MS"] = str(args.events), str(args.delay_ms)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = dict(os.environ)
        redis, api = _start_services(tmp, env)
        try:
            url = env["BENCH_API_URL"]
            headers = {"Authorization": f"Bearer {_token(tmp / 'serve.log')}"}
            rows = []
            async with httpx.AsyncClient(timeout=120) as client:
                await _through_turnstream(client, url, headers)  # warm-up
                for i in range(args.repeats):
                    direct = await _direct()
                    via = await _through_turnstream(client, url, headers)
                    rows.append({"direct_s": direct, "turnstream_s": via})
                    print(
                        f"  repeat {i + 1}/{args.repeats}: direct {direct:.3f} s, "
                        f"turnstream {via:.3f} s",
                        flush=True,
                    )
        finally:
            api.terminate()
            api.wait(10)
            redis.terminate()
            redis.wait(10)
    direct = statistics.median(r["direct_s"] for r in rows)
    via = statistics.median(r["turnstream_s"] for r in rows)
    overhead = (via - direct) / direct
    print(f"\n{'events':>7} {'delay ms':>9} {'direct s':>9} {'turnstream s':>13} {'overhead':>9}")
    print(f"{args.events:>7} {args.delay_ms:>9} {direct:>9.3f} {via:>13.3f} {overhead:>8.1%}")
    print(f"goal ≤ 10 %: {'met' if overhead <= 0.10 else 'missed'}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "overhead",
                "machine": {"cores": os.cpu_count(), "platform": platform.platform()},
                "parameters": vars(args),
                "repeats": rows,
                "median_direct_s": direct,
                "median_turnstream_s": via,
                "overhead": overhead,
                "goal": 0.10,
                "goal_met": overhead <= 0.10,
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            indent=2,
        )
    )
    print(f"results: {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--delay-ms", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
