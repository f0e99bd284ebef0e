"""Idle connections: one API process holding N open SSE streams, 1 % of them active.

    python bench/idle.py [--sizes 1000,5000,10000] [--repeats 3] [--quick]

Chat apps keep many tabs open and few replies running. For each N, one process holds
N streams: 99 % follow runs that are live but quiet (pings on, every 15 s as in
production), then the other 1 % connect and follow runs that get 20 events/s each.

- **turnstream**: a real `turnstream serve --no-worker` on a real `redis-server`. Its
  runs are written straight into Redis with `RunState` (the Lua write path every run
  uses); the conversations are inserted into SQLite in one transaction, their owners cached in
  Redis as the API caches them when it creates a conversation. A producer
  process writes the active runs' deltas on a fixed schedule (the same as bench/fanout.py's:
  run j of C starts at T0 + j·50/C ms).
- **baseline**: bench/bare_sse_server.py (sse-starlette under uvicorn, no Redis). Its
  `/stream` route with a schedule that starts hours from now is an idle stream; the
  active ones get the same 20 events/s schedule from memory.

Per N, measured on the server process (the load generator is this process, raw sockets):
memory per stream (RSS with the idle streams open, minus RSS before, over their number),
CPU seconds per second while only the idle streams are open (Redis's CPU beside it for
turnstream), and the active streams' latency (arrival - scheduled time of each delta). Beside
it, the same latency from the event's own `ts` (arrival - `ts`, `active_ts_*`): `ts` is
stamped (in whole ms, so this reads up to 1 ms high) as the producer sends the append, so it
leaves the producer's lateness out and shows what Redis and the API add; on the bare server,
`ts` is when it wrote the event. The clients and the producer are bench/sse_load.py's.

Goals (issue #16, item 2; issue 25): every one of 10,000 streams held by one process, and
opened in <= 1.5 x the bare server's time; memory per stream <= 1.5 x the bare server's;
the active 1 % at p99 <= 50 ms. Figures are medians over
`--repeats`; each repeat runs the bare server and turnstream back to back at each N.
`--quick` (one repeat at 1,000 and 10,000, shorter windows) runs about 4 minutes; the
default about 20. The producer shares the two cores: its own lag (append acknowledged -
scheduled time) is reported beside the latency, as `producer_lag_p99_ms`.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sse_load import (
    PERIOD_MS,
    Producer,
    Sink,
    Spec,
    SSEClient,
    connect_all,
    new_runs,
    now_ms,
    prepare,
    resume_path,
)
from support import (
    Proc,
    create_token,
    free_port,
    http_ok,
    log,
    median,
    print_table,
    proc_cpu_seconds,
    ratio,
    serve,
    start_redis,
    summary,
    turnstream_env,
    wait_for,
    write_results,
)

USER = "bench"
ACTIVE_SHARE = 100  # one stream in a hundred is active
P99_GOAL_MS = 50.0
MEMORY_GOAL = 1.5
OPENING_GOAL = 1.5  # the time to open the streams, over the bare server's (issue 25)
FAR_FUTURE_MS = 10 * 3600 * 1000  # a bare idle stream's schedule starts this far ahead
SETTLE_SECONDS = 3.0
CONNECT_AT_ONCE = 200


# ------------------------------------------------------------------------- client


async def connect(port: int, paths: list[str], headers: str, sink: Sink) -> list[SSEClient]:
    """Open one stream per path, `CONNECT_AT_ONCE` at a time; each waits for `start`."""
    return await connect_all(port, paths, headers, sink, at_once=CONNECT_AT_ONCE, wait=30)


def held(streams: list[SSEClient]) -> int:
    """Streams that got `start` and are still open."""
    return sum(s.open for s in streams)


# ------------------------------------------------------------------------- turnstream's data


async def prepare_data(env: dict[str, str], idle: int, active: int) -> dict[str, list[str]]:
    """`idle` live, quiet runs and `active` spare conversations, all the bench user's."""
    from redis.asyncio import Redis
    from sqlalchemy import insert

    from turnstream import keys
    from turnstream.ids import uuid7
    from turnstream.store.db import create_engine, session_factory
    from turnstream.store.models import Conversation

    cids = [uuid7() for _ in range(idle + active)]
    engine = create_engine(env["TURNSTREAM_DATABASE_URL"])
    async with session_factory(engine)() as db, db.begin():
        rows = [{"id": c, "user_id": USER, "title": "idle", "meta": {}} for c in cids]
        await db.execute(insert(Conversation), rows)
    await engine.dispose()
    # Their owners cached, as ChatStore.create leaves them for a conversation made through
    # the API: a stream's first request finds its owner in Redis, not in SQL.
    redis = Redis.from_url(env["TURNSTREAM_REDIS_URL"])
    async with redis.pipeline(transaction=False) as pipe:
        for cid in cids:
            pipe.set(keys.owner(cid), USER, ex=keys.OWNER_TTL_SECONDS)
        await pipe.execute()
    await redis.aclose()
    specs = new_runs(cids[:idle], USER)
    await start_runs(env["TURNSTREAM_REDIS_URL"], specs)
    return {"idle": [resume_path(c, s, "0-0") for c, s, *_ in specs], "spare": cids[idle:]}


def run_state(redis_url: str) -> Any:
    from redis.asyncio import Redis

    from turnstream.live.state import RunState

    redis = Redis.from_url(redis_url, decode_responses=True, max_connections=1000)
    # Kept for hours, leased for hours: neither expiry nor the serve's reaper ends them.
    return RunState(redis, maxlen=10_000, ttl_seconds=6 * 3600)


async def start_runs(redis_url: str, specs: list[Spec]) -> None:
    """Create and claim each run: `queued`, then `start`, then quiet."""
    from turnstream.keys import user_runs

    state = run_state(redis_url)
    for i in range(0, len(specs), 200):
        await prepare(state, specs[i : i + 200], user=USER, lease_s=6 * 3600, at_once=200)
        # The user's cap set holds every run started here: keep it short.
        await state.redis.delete(user_runs(USER))
    await state.redis.aclose()


# ------------------------------------------------------------------------- trials


class Target:
    """One side of the comparison: how to start its server and what its streams follow."""

    def __init__(
        self, name: str, workdir: Path, env: dict[str, str], token: str = "", redis: int = 0
    ) -> None:
        self.name, self.workdir, self.env, self.redis_pid = name, workdir, env, redis
        self.headers = f"Authorization: Bearer {token}\r\n" if token else ""
        self.proc: Proc | None = None
        self.port = 0

    def start(self) -> None:
        if self.name == "turnstream":
            self.proc, self.port = serve(self.workdir, self.env, "--no-worker")
            return
        self.port = free_port()
        args = [sys.executable, "bench/bare_sse_server.py", "--port", str(self.port)]
        self.proc = Proc("bare", args, self.workdir / "bare.log")
        wait_for(lambda: http_ok(self.port), 30, "bare server", self.proc)

    def bare_path(self, start_ms: float, count: int) -> str:
        return f"/stream?start={start_ms:.1f}&count={count}&period={PERIOD_MS:g}"


async def idle_phase(target: Target, paths: list[str], seconds: float) -> tuple[dict, list]:
    """Open the idle streams; the server's memory per stream and CPU while they stay quiet."""
    assert target.proc is not None
    server = target.proc
    rss0 = server.rss_kb()
    sink = Sink()
    started = time.monotonic()
    streams = await connect(target.port, paths, target.headers, sink)
    connect_s = time.monotonic() - started
    await asyncio.sleep(SETTLE_SECONDS)
    rss1 = server.rss_kb()
    redis = target.redis_pid
    cpu0, rcpu0 = server.cpu_seconds(), proc_cpu_seconds(redis)
    await asyncio.sleep(seconds)
    cpu1, rcpu1 = server.cpu_seconds(), proc_cpu_seconds(redis)
    figures = {
        "opened": len(paths),
        "held": held(streams),
        "connect_s": round(connect_s, 1),
        "rss_before_mb": round(rss0 / 1024, 1),
        "rss_after_mb": round(rss1 / 1024, 1),
        "kb_per_stream": round((rss1 - rss0) / max(1, len(paths)), 2),
        "cpu_per_s": round((cpu1 - cpu0) / seconds, 4),
        "redis_cpu_per_s": round((rcpu1 - rcpu0) / seconds, 4) if redis else None,
        "pings_per_stream": round(sink.pings / max(1, len(paths)), 2),
    }
    return figures, streams


async def active_phase(target: Target, spare: list[str], seconds: float) -> dict[str, Any]:
    """The active 1 %: connect, then 20 events/s each for `seconds`; latency per delta."""
    count = int(seconds * 1000 / PERIOD_MS)
    sink = Sink(count, ts=True)
    if target.name == "bare":
        t0 = now_ms() + 2000
        paths = [
            target.bare_path(t0 + j * PERIOD_MS / len(spare), count) for j in range(len(spare))
        ]
        streams = await connect(target.port, paths, target.headers, sink)
        lag = None
    else:
        streams, lag = await _active_turnstream(target, spare, count, sink)
    waits = [asyncio.wait_for(asyncio.shield(s.closed), seconds + 15) for s in streams]
    await asyncio.gather(*waits, return_exceptions=True)
    lost = len(streams) * count - len(sink.lat)
    return {"streams": len(streams), "ended": sink.ended, "lost": lost,
            "latency_ms": summary(sink.lat), "latency_ts_ms": summary(sink.lat_ts or []),
            "producer_lag_ms": lag}  # fmt: skip


async def _active_turnstream(
    target: Target, spare: list[str], count: int, sink: Sink
) -> tuple[list[SSEClient], dict | None]:
    redis_url = target.env["TURNSTREAM_REDIS_URL"]
    specs = new_runs(spare, USER)
    await start_runs(redis_url, specs)
    producer = Producer(redis_url, specs, count)
    try:
        await producer.ready()  # imported and connected
        paths = [resume_path(c, s, "0-0") for c, s, *_ in specs]
        streams = await connect(target.port, paths, target.headers, sink)
        producer.go(now_ms() + 1000)
        result = await producer.result(within=count * PERIOD_MS / 1000 + 60)
    finally:
        producer.stop()
    if result["problems"]:
        log(f"producer problems: {result['problems']}")
    return streams, result["ack_lag_ms"]


async def trial(target: Target, n: int, paths: list[str], spare: list[str], args: Any) -> dict:
    """One server, fresh: N - N/100 idle streams, then N/100 active ones beside them."""
    active = max(1, n // ACTIVE_SHARE)
    target.start()
    try:
        for warm in await connect(target.port, paths[:1], target.headers, Sink()):
            # the first stream pays for lazy imports and the hub's connection
            warm.fail("warm-up done")
        await asyncio.sleep(1)
        idle, streams = await idle_phase(target, paths[: n - active], args.idle_seconds)
        busy = await active_phase(target, spare[:active], args.seconds)
        idle["held_at_end"] = held(streams)
        for s in streams:
            s.fail("closed at the end of the trial")
    finally:
        assert target.proc is not None
        target.proc.stop()
    log(f"{target.name} N={n}: {idle['held']}/{idle['opened']} held, "
        f"{idle['kb_per_stream']} KB/stream, {idle['cpu_per_s']} CPU s/s, active p99 "
        f"{busy['latency_ms']['p99']} ms ({busy['latency_ts_ms']['p99']} from ts)")  # fmt: skip
    return {"target": target.name, "n": n, "idle": idle, "active": busy}


# ------------------------------------------------------------------------- report


def aggregate(trials: list[dict], sizes: list[int]) -> list[dict[str, Any]]:
    """Per N: each side's medians over the repeats, the ratios, and the goals."""
    rows = []
    for n in sizes:
        side = {}
        for name in ("turnstream", "bare"):
            mine = [t for t in trials if t["target"] == name and t["n"] == n]
            side[name] = {
                "held": min(t["idle"]["held"] + t["active"]["ended"] for t in mine),
                "connect_s": median(t["idle"]["connect_s"] for t in mine),
                "kb_per_stream": median(t["idle"]["kb_per_stream"] for t in mine),
                "cpu_per_s": median(t["idle"]["cpu_per_s"] for t in mine),
                "redis_cpu_per_s": median(t["idle"]["redis_cpu_per_s"] for t in mine),
                "active_p50_ms": median(t["active"]["latency_ms"]["p50"] for t in mine),
                "active_p99_ms": median(t["active"]["latency_ms"]["p99"] for t in mine),
                "active_ts_p50_ms": median(t["active"]["latency_ts_ms"]["p50"] for t in mine),
                "active_ts_p99_ms": median(t["active"]["latency_ts_ms"]["p99"] for t in mine),
                "lost": max(t["active"]["lost"] for t in mine),
                "producer_lag_p99_ms": median(
                    (t["active"]["producer_lag_ms"] or {}).get("p99") for t in mine
                ),
            }
        ours, bare = side["turnstream"], side["bare"]
        memory = ratio(ours["kb_per_stream"], bare["kb_per_stream"])
        opening = ratio(ours["connect_s"], bare["connect_s"])
        p99 = ours["active_p99_ms"]
        goals = {
            "all_held": ours["held"] == n,
            "opening_ratio_le_1.5": opening is not None and opening <= OPENING_GOAL,
            "memory_ratio_le_1.5": memory is not None and memory <= MEMORY_GOAL,
            "active_p99_le_50ms": p99 is not None and p99 <= P99_GOAL_MS and ours["lost"] == 0,
        }
        rows.append({"n": n, "turnstream": ours, "bare": bare, "memory_ratio": memory,
                     "opening_ratio": opening,
                     "cpu_ratio": ratio(ours["cpu_per_s"], bare["cpu_per_s"]),
                     "goals": goals})  # fmt: skip
    return rows


def show(rows: list[dict[str, Any]]) -> None:
    def f(v: Any, spec: str = ".1f") -> str:
        return "-" if v is None else format(v, spec)

    table = []
    for r in rows:
        o, b = r["turnstream"], r["bare"]
        table.append([
            r["n"], f"{o['held']} / {b['held']}",
            f"{f(o['connect_s'])} / {f(b['connect_s'])}",
            f"{f(o['kb_per_stream'])} / {f(b['kb_per_stream'])}", f(r["memory_ratio"], ".2f"),
            f"{f(o['cpu_per_s'], '.3f')} / {f(b['cpu_per_s'], '.3f')}",
            f(o["redis_cpu_per_s"], ".3f"),
            f"{f(o['active_p50_ms'])} / {f(o['active_p99_ms'])}",
            f"{f(b['active_p50_ms'])} / {f(b['active_p99_ms'])}",
            f"{f(o['active_ts_p50_ms'])} / {f(o['active_ts_p99_ms'])}",
            f"{f(b['active_ts_p50_ms'])} / {f(b['active_ts_p99_ms'])}",
            "yes" if all(r["goals"].values()) else "NO",
        ])  # fmt: skip
    headers = ["N", "held ours/bare", "opened in s ours/bare", "KB/stream ours/bare", "ratio",
               "CPU s/s ours/bare",
               "redis CPU", "active p50/p99 ours", "active p50/p99 bare", "from ts ours",
               "from ts bare", "goals"]  # fmt: skip
    print_table(headers, table)
    print(
        "active: ms from each delta's scheduled time to its arrival; from ts: from the event's "
        "own `ts` (ours: the producer's append, bare: the server's write) to its arrival"
    )


async def main_async(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    sizes = args.sizes
    biggest = max(sizes)
    redis, redis_url = start_redis(workdir)
    env = turnstream_env(workdir, redis_url)
    token = create_token(env, USER)
    log(f"creating {biggest} idle runs and {biggest // ACTIVE_SHARE} spare conversations")
    data = await prepare_data(env, biggest, max(1, biggest // ACTIVE_SHARE))
    bare_idle = Target("bare", workdir, {}).bare_path(now_ms() + FAR_FUTURE_MS, 1)
    paths = {"turnstream": data["idle"], "bare": [bare_idle] * biggest}
    targets = [Target("bare", workdir, {}), Target("turnstream", workdir, env, token, redis.pid)]
    trials = []
    for repeat in range(args.repeats):
        for n in sizes:
            for target in targets:
                log(f"repeat {repeat + 1}/{args.repeats}: {target.name} at N={n}")
                trials.append(await trial(target, n, paths[target.name], data["spare"], args))
    return {"trials": trials, "summary": aggregate(trials, sizes)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,10000", help="streams per process")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=30, help="idle CPU window")
    parser.add_argument("--seconds", type=float, default=10, help="the active streams' run")
    parser.add_argument("--quick", action="store_true", help="1 repeat at 1,000 and 10,000")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.repeats, args.idle_seconds, args.seconds = "1000,10000", 1, 16, 5
    args.sizes = [int(x) for x in args.sizes.split(",")]
    return args


def main() -> None:
    args = parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the children inherit it
    if hard < max(args.sizes) + 1000:  # sockets per process: ours, and the server's
        sys.exit(f"RLIMIT_NOFILE's hard limit ({hard}) is too low: raise `ulimit -Hn`.")
    try:
        with tempfile.TemporaryDirectory(prefix="idle-") as tmp:
            doc = asyncio.run(main_async(args, Path(tmp)))
    finally:
        Proc.stop_all()
    show(doc["summary"])
    goals = {
        "held_10000": any(r["n"] >= 10_000 and r["goals"]["all_held"] for r in doc["summary"]),
        "memory_ratio_le_1.5": all(r["goals"]["memory_ratio_le_1.5"] for r in doc["summary"]),
        "opening_10000_ratio_le_1.5": all(
            r["goals"]["opening_ratio_le_1.5"] for r in doc["summary"] if r["n"] >= 10_000
        ),
        "active_p99_le_50ms": all(r["goals"]["active_p99_le_50ms"] for r in doc["summary"]),
    }
    print("goals:", ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in goals.items()))
    settings = {k: getattr(args, k) for k in ("sizes", "repeats", "idle_seconds", "seconds")}
    write_results("idle", {"command": " ".join(["python", *sys.argv]), "settings": settings,
                           "goals": goals, **doc})  # fmt: skip


if __name__ == "__main__":
    main()
