"""Start latency: from `POST …/message` to the run's first `start` event (issue 16, item 3).

    python bench/start_latency.py [--rates 20,100] [--seconds 5] [--repeats 3] [--quick]

Production shape on one machine: a real `redis-server`, `turnstream serve --no-worker`,
one `turnstream worker` (the Redis Streams queue of taskiq-redis) and PostgreSQL (fsync off,
as in the tests; `--database sqlite`: one SQLite file shared by both processes).
The agent (`start_latency:agent` below) answers three words at once, or streams a delta
every 50 ms until stopped when the message is `slow`.

- **ours**: open loop (each start sent on a fixed schedule, not after the previous one),
  each to its own conversation, created beforehand. The client posts with `stream=true`
  over a fresh loopback connection and stops the clock when the `start` event arrives
  on the response's SSE stream: what a user sees. Raw sockets, so the client takes
  little CPU. The `ts` of the `queued` and `start` events split the time in three:
  request -> `queued` (the API's admission), `queued` -> `start` (SQL writes, queue,
  worker claim), `start` -> client (pub/sub and SSE).
- **bare** (the baseline, measured in the same run, interleaved): a trivial taskiq task on
  the same broker class and settings (`turnstream.runs.broker.stream_broker`) in its own
  `taskiq worker` process with the same ack type and concurrency, enqueued at the same
  rates; the task records when it started against when `kiq` was called.
- **in flight**: starts at 20/s while N `slow` runs stream (N = 0, 25, 50): no start may
  wait for another run's step, so the latency must not grow with N.

Goals: ours p99 ≤ 2 x bare p99 + 5 ms at every rate; p99 with the most runs in flight
≤ 2 x p99 with none + 5 ms (a start delayed behind a step would show 50 ms).
Figures are medians over `--repeats`. Prints a table; writes bench/results/start_latency.json.
Takes about 3 minutes (`--quick`: about 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis
from support import (
    HOST,
    Proc,
    bare_taskiq_worker,
    create_conversations,
    create_token,
    fmt,
    log,
    median,
    print_table,
    ratio,
    serve,
    start_postgres,
    start_redis,
    summary,
    taskiq_listening,
    turnstream,
    turnstream_env,
    wait_for,
    write_results,
)
from taskiq import AsyncBroker, AsyncTaskiqDecoratedTask, Context, TaskiqDepends

from turnstream.runs.broker import stream_broker

SLOW_DELAY = 0.05  # seconds between a `slow` run's deltas
BARE_QUEUE = "bench:bare"
BARE_RESULTS = "bench:bare:latency"
CONCURRENCY = "100"  # runs (and bare tasks) at once per worker: turnstream's default

# ------------------------------------------------------------- what the workers import


async def agent(ctx: Any) -> AsyncIterator[str]:  # TURNSTREAM_AGENT=start_latency:agent
    """Three words at once; `slow`: a delta every 50 ms until the run is stopped."""
    if ctx.message != "slow":
        for word in ("one ", "two ", "three"):
            yield word
        return
    for i in range(12_000):
        await asyncio.sleep(SLOW_DELAY)
        yield f"w{i} "


async def bare_task(sent: float, context: Context = TaskiqDepends()) -> None:
    """Record how long after `kiq` this task started (seconds, one clock: one machine)."""
    started = time.time()
    async with Redis(connection_pool=context.broker.connection_pool) as redis:
        await redis.rpush(BARE_RESULTS, started - sent)


def bare(redis_url: str) -> tuple[AsyncBroker, AsyncTaskiqDecoratedTask[Any, Any]]:
    """The baseline's broker, with turnstream's class and settings, and its one task."""
    broker = stream_broker(redis_url, BARE_QUEUE, group="bench")
    return broker, broker.register_task(bare_task, task_name="bench.bare")


# `python -m taskiq worker start_latency:bare_broker` imports this one.
bare_broker, _ = bare(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))


# ------------------------------------------------------------- the client

_EVENT = re.compile(rb"event: (queued|start)\r?\ndata: (\{[^\r\n]*\})")


async def post_until_start(port: int, token: str, cid: str, content: str) -> dict[str, float]:
    """POST a message with `stream=true`; times (s) until `queued` and `start` arrive."""
    body = json.dumps({"content": content}).encode()
    head = (
        f"POST /api/v1/conversations/{cid}/message/?stream=true HTTP/1.1\r\n"
        f"Host: {HOST}:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sent, wall = time.perf_counter(), time.time()
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(head.encode() + body)
        buf, ts = b"", {}
        while "start" not in ts:
            chunk = await reader.read(65536)
            if not chunk:
                raise RuntimeError(f"stream ended before `start`: {buf[:300]!r}")
            buf += chunk
            ts = {m[1].decode(): json.loads(m[2])["ts"] for m in _EVENT.finditer(buf)}
        got = time.perf_counter()
    finally:
        writer.close()
    return {
        "total": got - sent,
        "admit": ts["queued"] / 1000 - wall,
        "queue": (ts["start"] - ts["queued"]) / 1000,
        "deliver": wall + (got - sent) - ts["start"] / 1000,
    }


async def open_loop(
    rate: float, seconds: float, fire: Callable[[int], Awaitable[Any]]
) -> tuple[list[Any], float]:
    """Call `fire(i)` at t0 + i/rate, whatever the earlier calls do; results, max lag (s)."""
    loop = asyncio.get_running_loop()
    t0, lag, tasks = loop.time() + 0.05, 0.0, []
    for i in range(int(rate * seconds)):
        due = t0 + i / rate
        if (wait := due - loop.time()) > 0:
            await asyncio.sleep(wait)
        lag = max(lag, loop.time() - due)
        tasks.append(asyncio.create_task(fire(i)))
    return await asyncio.gather(*tasks), lag


class Bench:
    """The processes, the token and a supply of fresh conversations."""

    def __init__(self, port: int, token: str, redis_url: str, cids: list[str]) -> None:
        self.port, self.token, self.cids = port, token, cids
        self.redis = Redis.from_url(redis_url)
        self.broker, self.bare_task = bare(redis_url)  # the producer side of the baseline

    def fresh(self, n: int) -> list[str]:
        taken, self.cids = self.cids[:n], self.cids[n:]
        assert len(taken) == n, "not enough conversations created: raise the estimate"
        return taken

    async def ours(self, rate: float, seconds: float) -> dict[str, Any]:
        cids = self.fresh(int(rate * seconds))

        async def fire(i: int) -> dict[str, float]:
            return await post_until_start(self.port, self.token, cids[i], "hi")

        samples, lag = await open_loop(rate, seconds, fire)
        parts = {p: summary(s[p] * 1000 for s in samples) for p in ("admit", "queue", "deliver")}
        return {**summary(s["total"] * 1000 for s in samples), "lag_ms": lag * 1000, **parts}

    async def bare(self, rate: float, seconds: float) -> dict[str, Any]:
        await self.redis.delete(BARE_RESULTS)

        async def fire(_i: int) -> None:
            await self.bare_task.kiq(time.time())

        n = int(rate * seconds)
        _, lag = await open_loop(rate, seconds, fire)
        for _ in range(600):  # up to 30 s for the last tasks to run
            if await self.redis.llen(BARE_RESULTS) >= n:
                break
            await asyncio.sleep(0.05)
        values = [float(v) * 1000 for v in await self.redis.lrange(BARE_RESULTS, 0, -1)]
        return {**summary(values), "lag_ms": lag * 1000}

    async def in_flight(self, n: int, rate: float, seconds: float) -> dict[str, Any]:
        """Start latency at `rate` while `n` slow runs stream; the slow runs stopped after."""
        slow = self.fresh(n)
        await asyncio.gather(*(post_until_start(self.port, self.token, c, "slow") for c in slow))
        await asyncio.sleep(0.5)
        figures = await self.ours(rate, seconds)
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{self.port}", timeout=60) as c:
            stops = [c.post(f"/api/v1/conversations/{cid}/stop", headers=headers) for cid in slow]
            for r in await asyncio.gather(*stops):
                assert r.status_code == 200, r.text
        return figures


# ------------------------------------------------------------- processes


def start_processes(work: Path, database: str) -> tuple[str, int, str]:
    """Redis, the database, `serve --no-worker`, `turnstream worker`, the bare taskiq worker."""
    _redis, url = start_redis(work)
    env = turnstream_env(
        work,
        url,
        agent="start_latency:agent",
        runs_per_minute="1000000",
        max_active_runs="100000",
        worker_concurrency=CONCURRENCY,
    )
    env["BENCH_REDIS_URL"] = url
    if database == "postgres":
        env["TURNSTREAM_DATABASE_URL"] = start_postgres(work)
        turnstream(work, env, "migrate", name="migrate").proc.wait(60)
    token = create_token(env)
    _serve, port = serve(work, env, "--no-worker")
    worker = turnstream(work, env, "worker", name="worker")
    bare = bare_taskiq_worker(work, env, "start_latency:bare_broker", CONCURRENCY)
    for proc in (worker, bare):
        wait_for(taskiq_listening(proc), 60, proc.name, proc)
    return url, port, token


async def measure(args: argparse.Namespace, url: str, port: int, token: str) -> dict[str, Any]:
    """Every figure of every repeat: {"rates": {rate: {side: [..]}}, "in_flight": {n: [..]}}."""
    per_repeat = sum(args.rates) + args.inflight_rate * len(args.inflight)
    n_cids = int(per_repeat * args.seconds * (args.repeats + 1)) + sum(args.inflight) * 2 + 50
    log(f"creating {n_cids} conversations")
    cids = await create_conversations(port, token, n_cids)
    bench = Bench(port, token, url, cids)
    await bench.broker.startup()
    runs: dict[str, Any] = {"rates": {}, "in_flight": {}}
    try:
        log("warm-up")
        await bench.bare(20, 1)
        await bench.ours(20, 1)
        for r in range(args.repeats):
            for rate in args.rates:
                for side in ("bare", "ours"):
                    figures = await getattr(bench, side)(rate, args.seconds)
                    runs["rates"].setdefault(rate, {}).setdefault(side, []).append(figures)
                    log(f"repeat {r + 1}: {side} at {rate}/s: p50 {fmt(figures['p50'])} ms, "
                        f"p99 {fmt(figures['p99'])} ms")  # fmt: skip
            for n in args.inflight:
                figures = await bench.in_flight(n, args.inflight_rate, args.seconds)
                runs["in_flight"].setdefault(n, []).append(figures)
                log(f"repeat {r + 1}: {n} in flight: p50 {fmt(figures['p50'])} ms, "
                    f"p99 {fmt(figures['p99'])} ms")  # fmt: skip
    finally:
        await bench.broker.shutdown()
        await bench.redis.aclose()
    return runs


# ------------------------------------------------------------- report


RATE_KEYS = ("rate", "ours_p50", "ours_p99", "bare_p50", "bare_p99", "ratio_p99",
             "admit_p50", "queue_p50", "deliver_p50")  # fmt: skip
RATE_COLUMNS = ("starts/s", "ours p50 ms", "ours p99 ms", "bare p50 ms", "bare p99 ms",
                "p99 ratio", "admit p50", "queue p50", "deliver p50")  # fmt: skip


def med(samples: list[dict[str, Any]], key: str, part: str | None = None) -> float | None:
    return median((s[part] if part else s)[key] for s in samples)


def report(args: argparse.Namespace, runs: dict[str, Any]) -> dict[str, Any]:
    rates, goals = [], []
    for rate, sides in runs["rates"].items():
        ours, bare = sides["ours"], sides["bare"]
        row = {
            "rate": rate,
            **{f"ours_{q}": med(ours, q) for q in ("p50", "p99")},
            **{f"bare_{q}": med(bare, q) for q in ("p50", "p99")},
            **{f"{p}_p50": med(ours, "p50", p) for p in ("admit", "queue", "deliver")},
            **{f"{p}_p99": med(ours, "p99", p) for p in ("admit", "queue", "deliver")},
        }
        row["ratio_p99"] = ratio(row["ours_p99"], row["bare_p99"])
        rates.append(row)
        limit = 2 * (row["bare_p99"] or 0) + 5
        goals.append(_goal(f"p99 at {rate}/s ≤ 2 x bare p99 + 5 ms", row["ours_p99"], limit))
    flight = [
        {"in_flight": n, "p50": med(s, "p50"), "p99": med(s, "p99"), "max": med(s, "max")}
        for n, s in runs["in_flight"].items()
    ]
    if flight:
        base, most = flight[0], flight[-1]
        limit = 2 * (base["p99"] or 0) + 5
        what = (
            f"p99 with {most['in_flight']} runs in flight ≤ 2 x p99 with {base['in_flight']} + 5 ms"
        )
        goals.append(_goal(what, most["p99"], limit))
    print_table(
        RATE_COLUMNS,
        [[fmt(r[k], ".2f" if k == "ratio_p99" else ".1f") for k in RATE_KEYS] for r in rates],
    )
    print()
    print_table(
        [f"in flight ({args.inflight_rate}/s)", "p50 ms", "p99 ms", "max ms"],
        [[f["in_flight"], fmt(f["p50"]), fmt(f["p99"]), fmt(f["max"])] for f in flight],
    )
    print()
    for g in goals:
        verdict = "met   " if g["met"] else "MISSED"
        print(f"{verdict} {g['goal']}: {fmt(g['ours'])} ms (limit {fmt(g['limit'])} ms)")
    return {"rates": rates, "in_flight": flight, "goals": goals}


def _goal(goal: str, ours: float | None, limit: float) -> dict[str, Any]:
    return {"goal": goal, "ours": ours, "limit": limit, "met": ours is not None and ours <= limit}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rates", default="20,100", help="starts per second, comma-separated")
    p.add_argument("--seconds", type=float, default=5, help="per measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--inflight", default="0,25,50", help="slow runs in flight, comma-separated")
    p.add_argument("--inflight-rate", type=int, default=20, help="starts/s beside them")
    p.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    p.add_argument("--quick", action="store_true", help="2 s per measurement, one repeat")
    args = p.parse_args()
    if args.quick:
        args.seconds, args.repeats = 2, 1
    args.rates = [int(r) for r in args.rates.split(",")]
    args.inflight = [int(n) for n in args.inflight.split(",") if n]
    return args


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="start-latency-") as tmp:
        try:
            url, port, token = start_processes(Path(tmp), args.database)
            runs = asyncio.run(measure(args, url, port, token))
        finally:
            Proc.stop_all()
    summary_doc = report(args, runs)
    params = {k: v for k, v in vars(args).items() if k != "quick"}
    write_results(
        "start_latency",
        {
            "parameters": {**params, "quick": args.quick, "client": "raw sockets, SSE `start`"},
            "seconds_taken": round(time.monotonic() - started),
            **summary_doc,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
