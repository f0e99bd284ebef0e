"""Idle connections: one API process holding N open SSE streams, 1 % of them active.

    python bench/idle.py [--sizes 1000,5000,10000] [--repeats 3] [--quick]

Chat apps keep many tabs open and few replies running. For each N, one process holds
N streams: 99 % follow runs that are live but quiet (pings on, every 15 s as in
production), then the other 1 % connect and follow runs that get 20 events/s each.

- **turnstream**: a real `turnstream serve --no-worker` on a real `redis-server`. Its
  runs are written straight into Redis with `RunState` (the Lua write path every run
  uses); the conversations are inserted into SQLite in one transaction. A producer
  process writes the active runs' deltas on a fixed schedule.
- **baseline**: bench/bare_sse_server.py (sse-starlette under uvicorn, no Redis). Its
  `/stream` route with a schedule that starts hours from now is an idle stream; the
  active ones get the same 20 events/s schedule from memory.

Per N, measured on the server process (the load generator is this process, raw sockets):
memory per stream (RSS with the idle streams open, minus RSS before, over their number),
CPU seconds per second while only the idle streams are open (Redis's CPU beside it for
turnstream), and the active streams' latency (arrival - scheduled time of each delta).

Goals (issue #16, item 2): every one of 10,000 streams held by one process; memory per
stream <= 1.5 x the bare server's; the active 1 % at p99 <= 50 ms. Figures are medians over
`--repeats`; each repeat runs the bare server and turnstream back to back at each N.
`--quick` (one repeat at 1,000 and 10,000, shorter windows) runs about 4 minutes; the
default about 20. The producer shares the two cores: its own lag (append acknowledged -
scheduled time) is reported beside the latency, as `producer_lag_p99_ms`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from support import (
    HOST,
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
PERIOD_MS = 50  # 20 events/s per active stream
ACTIVE_SHARE = 100  # one stream in a hundred is active
P99_GOAL_MS = 50.0
MEMORY_GOAL = 1.5
FAR_FUTURE_MS = 10 * 3600 * 1000  # a bare idle stream's schedule starts this far ahead
SETTLE_SECONDS = 3.0
CONNECT_AT_ONCE = 200


def now_ms() -> float:
    return time.time() * 1000


# ------------------------------------------------------------------------- client


class Sink:
    """What the clients of one phase report into."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.pings = 0
        self.ended = 0


class Stream(asyncio.Protocol):
    """One raw-socket SSE client: ready at `start`, done at `end`; deltas timed.

    Lines are read as they come; chunk-size lines never start with `data:` or `:`.
    """

    def __init__(self, request: bytes, sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        self.request, self.sink = request, sink
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[bool] = loop.create_future()
        self.done: asyncio.Future[bool] = loop.create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        arrived = now_ms()
        lines = (self.buffer + data).split(b"\n")
        self.buffer = lines.pop()
        for line in lines:
            if line.startswith(b"data:"):
                self._event(json.loads(line[5:]), arrived)
            elif line.startswith(b": ping"):
                self.sink.pings += 1
            elif line.startswith(b"HTTP/1.1 ") and not line.startswith(b"HTTP/1.1 200"):
                self.close(False)

    def _event(self, data: dict[str, Any], arrived: float) -> None:
        kind = data.get("type")
        if kind == "delta":
            self.sink.latencies.append(arrived - json.loads(data["text"])["sched"])
        elif kind == "start" and not self.ready.done():
            self.ready.set_result(True)
        elif kind == "end":
            self.sink.ended += 1
            self.close(True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(False)

    def close(self, ended: bool) -> None:
        for future in (self.ready, self.done):
            if not future.done():
                future.set_result(ended)
        if self.transport is not None:
            self.transport.close()


async def connect(port: int, paths: list[str], headers: str, sink: Sink) -> list[Stream]:
    """Open one stream per path, `CONNECT_AT_ONCE` at a time; each waits for `start`."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)

    async def one(path: str) -> Stream:
        request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{headers}\r\n".encode()
        stream = Stream(request, sink)
        async with gate:
            try:
                await loop.create_connection(lambda: stream, HOST, port)
                await asyncio.wait_for(asyncio.shield(stream.ready), 30)
            except (OSError, TimeoutError):
                stream.close(False)
        return stream

    return list(await asyncio.gather(*(one(p) for p in paths)))


def held(streams: list[Stream]) -> int:
    """Streams that got `start` and are still open."""
    return sum(s.ready.done() and s.ready.result() and not s.done.done() for s in streams)


# ------------------------------------------------------------------------- turnstream's data


async def prepare(env: dict[str, str], idle: int, active: int) -> dict[str, list[str]]:
    """`idle` live, quiet runs and `active` spare conversations, all the bench user's."""
    from sqlalchemy import insert

    from turnstream.ids import session_id, uuid7
    from turnstream.store.db import create_engine, session_factory
    from turnstream.store.models import Conversation

    cids = [uuid7() for _ in range(idle + active)]
    engine = create_engine(env["TURNSTREAM_DATABASE_URL"])
    async with session_factory(engine)() as db, db.begin():
        rows = [{"id": c, "user_id": USER, "title": "idle", "meta": {}} for c in cids]
        await db.execute(insert(Conversation), rows)
    await engine.dispose()
    sids = [session_id(USER, uuid7()) for _ in range(idle)]
    await start_runs(env["TURNSTREAM_REDIS_URL"], list(zip(cids, sids, strict=False)))
    return {"idle": [path(c, s) for c, s in zip(cids, sids, strict=False)], "spare": cids[idle:]}


def path(cid: str, sid: str) -> str:
    return f"/api/v1/conversations/{cid}/resume/{quote(sid, safe=':@')}?cursor=0-0"


def run_state(redis_url: str) -> Any:
    from redis.asyncio import Redis

    from turnstream.live.state import RunState

    redis = Redis.from_url(redis_url, decode_responses=True, max_connections=1000)
    # Kept for hours, leased for hours: neither expiry nor the serve's reaper ends them.
    return RunState(redis, maxlen=10_000, ttl_seconds=6 * 3600)


async def start_runs(redis_url: str, runs: list[tuple[str, str]]) -> None:
    """Create and claim each (cid, sid) run: `queued`, then `start`, then quiet."""
    from turnstream.keys import RunKeys, user_runs

    state = run_state(redis_url)

    async def one(cid: str, sid: str) -> None:
        k = RunKeys(cid, sid)
        await state.create(k, user_id=USER, message_id=sid[-36:], user_message_id="",
                           message="x", enqueue=False, max_active=10**9)  # fmt: skip
        await state.claim(k, worker="bench", lease_seconds=6 * 3600)

    for i in range(0, len(runs), 200):
        await asyncio.gather(*(one(c, s) for c, s in runs[i : i + 200]))
        # The user's cap set holds every run started here: keep it short.
        await state.redis.delete(user_runs(USER))
    await state.redis.aclose()


def produce(conn: Any, redis_url: str) -> None:
    """The producer process: given runs and a schedule, append deltas on it, then end them."""
    asyncio.run(_produce(conn, redis_url))


async def _produce(conn: Any, redis_url: str) -> None:
    from turnstream import events
    from turnstream.keys import RunKeys
    from turnstream.live.status import RunStatus

    state = run_state(redis_url)
    conn.send("ready")
    runs, t0, count = conn.recv()
    loop = asyncio.get_running_loop()
    mono0 = loop.time() + (t0 - now_ms()) / 1000
    lags: list[float] = []

    async def one(j: int, cid: str, sid: str) -> None:
        k, offset = RunKeys(cid, sid), j * PERIOD_MS / len(runs)
        for n in range(count):
            due = offset + n * PERIOD_MS
            await asyncio.sleep(max(0.0, mono0 + due / 1000 - loop.time()))
            text = json.dumps({"sched": t0 + due, "n": n})
            await state.append(k, [events.delta(text)])
            lags.append(now_ms() - t0 - due)
        await state.finish(k, status=RunStatus.COMPLETED, message_id=sid[-36:])

    await asyncio.gather(*(one(j, c, s) for j, (c, s) in enumerate(runs)))
    await state.redis.aclose()
    conn.send(summary(lags))


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
        return f"/stream?start={start_ms:.1f}&count={count}&period={PERIOD_MS}"


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
    sink = Sink()
    if target.name == "bare":
        t0 = now_ms() + 2000
        paths = [
            target.bare_path(t0 + j * PERIOD_MS / len(spare), count) for j in range(len(spare))
        ]
        streams = await connect(target.port, paths, target.headers, sink)
        lag = None
    else:
        streams, lag = await _active_turnstream(target, spare, count, sink)
    waits = [asyncio.wait_for(asyncio.shield(s.done), seconds + 15) for s in streams]
    await asyncio.gather(*waits, return_exceptions=True)
    lost = len(streams) * count - len(sink.latencies)
    return {"streams": len(streams), "ended": sink.ended, "lost": lost,
            "latency_ms": summary(sink.latencies), "producer_lag_ms": lag}  # fmt: skip


async def _active_turnstream(
    target: Target, spare: list[str], count: int, sink: Sink
) -> tuple[list[Stream], dict | None]:
    from turnstream.ids import session_id, uuid7

    redis_url = target.env["TURNSTREAM_REDIS_URL"]
    runs = [(cid, session_id(USER, uuid7())) for cid in spare]
    await start_runs(redis_url, runs)
    ours, theirs = mp.get_context("spawn").Pipe()
    producer = mp.get_context("spawn").Process(target=produce, args=(theirs, redis_url))
    producer.start()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, ours.recv)  # "ready": imported and connected
    streams = await connect(target.port, [path(c, s) for c, s in runs], target.headers, sink)
    ours.send((runs, now_ms() + 1000, count))
    lag = await loop.run_in_executor(None, ours.recv)
    producer.join(10)
    return streams, lag


async def trial(target: Target, n: int, paths: list[str], spare: list[str], args: Any) -> dict:
    """One server, fresh: N - N/100 idle streams, then N/100 active ones beside them."""
    active = max(1, n // ACTIVE_SHARE)
    target.start()
    try:
        for warm in await connect(target.port, paths[:1], target.headers, Sink()):
            warm.close(False)  # the first stream pays for lazy imports and the hub's connection
        await asyncio.sleep(1)
        idle, streams = await idle_phase(target, paths[: n - active], args.idle_seconds)
        busy = await active_phase(target, spare[:active], args.seconds)
        idle["held_at_end"] = held(streams)
        for s in streams:
            s.close(False)
    finally:
        assert target.proc is not None
        target.proc.stop()
    log(f"{target.name} N={n}: {idle['held']}/{idle['opened']} held, "
        f"{idle['kb_per_stream']} KB/stream, {idle['cpu_per_s']} CPU s/s, "
        f"active p99 {busy['latency_ms']['p99']} ms")  # fmt: skip
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
                "kb_per_stream": median(t["idle"]["kb_per_stream"] for t in mine),
                "cpu_per_s": median(t["idle"]["cpu_per_s"] for t in mine),
                "redis_cpu_per_s": median(t["idle"]["redis_cpu_per_s"] for t in mine),
                "active_p50_ms": median(t["active"]["latency_ms"]["p50"] for t in mine),
                "active_p99_ms": median(t["active"]["latency_ms"]["p99"] for t in mine),
                "lost": max(t["active"]["lost"] for t in mine),
                "producer_lag_p99_ms": median(
                    (t["active"]["producer_lag_ms"] or {}).get("p99") for t in mine
                ),
            }
        ours, bare = side["turnstream"], side["bare"]
        memory = ratio(ours["kb_per_stream"], bare["kb_per_stream"])
        p99 = ours["active_p99_ms"]
        goals = {
            "all_held": ours["held"] == n,
            "memory_ratio_le_1.5": memory is not None and memory <= MEMORY_GOAL,
            "active_p99_le_50ms": p99 is not None and p99 <= P99_GOAL_MS and ours["lost"] == 0,
        }
        rows.append({"n": n, "turnstream": ours, "bare": bare, "memory_ratio": memory,
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
            f"{f(o['kb_per_stream'])} / {f(b['kb_per_stream'])}", f(r["memory_ratio"], ".2f"),
            f"{f(o['cpu_per_s'], '.3f')} / {f(b['cpu_per_s'], '.3f')}",
            f(o["redis_cpu_per_s"], ".3f"),
            f"{f(o['active_p50_ms'])} / {f(o['active_p99_ms'])}",
            f"{f(b['active_p50_ms'])} / {f(b['active_p99_ms'])}",
            "yes" if all(r["goals"].values()) else "NO",
        ])  # fmt: skip
    headers = ["N", "held ours/bare", "KB/stream ours/bare", "ratio", "CPU s/s ours/bare",
               "redis CPU", "active p50/p99 ours", "active p50/p99 bare", "goals"]  # fmt: skip
    print_table(headers, table)


async def main_async(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    sizes = args.sizes
    biggest = max(sizes)
    redis, redis_url = start_redis(workdir)
    env = turnstream_env(workdir, redis_url)
    token = create_token(env, USER)
    log(f"creating {biggest} idle runs and {biggest // ACTIVE_SHARE} spare conversations")
    data = await prepare(env, biggest, max(1, biggest // ACTIVE_SHARE))
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
        "active_p99_le_50ms": all(r["goals"]["active_p99_le_50ms"] for r in doc["summary"]),
    }
    print("goals:", ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in goals.items()))
    settings = {k: getattr(args, k) for k in ("sizes", "repeats", "idle_seconds", "seconds")}
    write_results("idle", {"command": " ".join(["python", *sys.argv]), "settings": settings,
                           "goals": goals, **doc})  # fmt: skip


if __name__ == "__main__":
    main()
