"""Worker throughput: the rate of short demo runs one `turnstream worker` keeps up with.

    python bench/worker_throughput.py [--steps 25,50,...] [--seconds 8] [--repeats 3] [--quick]

Production shape on one machine, as in start_latency.py: a real `redis-server`, PostgreSQL
(fsync off, as in the tests), `turnstream serve --no-worker` and exactly ONE
`turnstream worker` process (taskiq's supervisor and its one child) on the Redis Streams
queue, with turnstream's defaults (100 runs at once, ack when executed). The agent is
`demo` with a 5-word reply and no delay between words (TURNSTREAM_DEMO_WORDS=5,
TURNSTREAM_DEMO_DELAY_MS=0); the per-user limits are raised so that none refuses, and
TURNSTREAM_CLAIM_SECONDS to 600 s so that runs waiting in a backlog are not handed out
a second time (the queue depth stays the number of runs waiting).

- **ours**: open loop (each start sent on a fixed schedule, not after the previous one).
  A start is `POST …/message/?stream=true` over a fresh loopback connection, closed as
  soon as the response's headers arrive: the run has been stored and queued by then
  (its id is in `X-Session-Id`), and nothing reads its events, so only the worker works
  on it after that. Each start goes to a conversation with no run going; a pool of
  conversations is created before the first ramp (outside any measurement) and a
  conversation goes back to the pool when its run has ended, so a conversation holds a
  few short turns by the end. A run has ended when its `task:status` key says
  `completed`, `error` or `cancelled` (read with MGET about every second, and at each
  step's end).
- **bare** (the baseline, same run): a trivial task (one Redis INCR) on the same broker
  class and settings (`turnstream.runs.broker.stream_broker`) in its own `taskiq worker`
  process with the same ack type and concurrency; this process kicks it (`kiq`) on the
  same schedule; it has ended when its INCR is counted.

A ramp is a series of steps of `--seconds` each at increasing target rates, the schedule
running on from one step into the next without a pause. At each step's end: starts sent/s,
runs started/s (ours: the API answered 200; bare: `kiq` returned), runs ended/s, the queue
depth (the consumer group's `lag` + `pending` from XINFO GROUPS: waiting plus in flight),
the CPU of each process with its children (/proc: the worker is taskiq's supervisor and
its child; PostgreSQL its backends) per second and per run ended, the machine's busy
share, and Redis's commands per run (INFO commandstats: every client's, scripts' own
calls included). A step passes when sent/s ≥ 0.95 x target (the client kept up, no start
refused), started/s ≥ 0.95 x sent/s (the API kept up), ended/s ≥ 0.95 x started/s and the
depth grew by at most max(25, a quarter second of starts); a failing step names the checks
it failed (client, api, worker). The knee is the highest passing step; the ramp stops once
`--beyond` steps have run after a failing one with none passing (a knee at the ramp's
last step means it never saw the queue grow: at least that). A ramp's backlog drains
before the next ramp. After a 2 s warm-up of each side, each repeat ramps both sides, the
order alternating; the knees' medians over `--repeats` are compared.

Goal: ours' median knee ≥ 150 runs/s; the ratio of the knees (ours / bare) is reported.
On these two shared cores the API, PostgreSQL and Redis share the machine with the worker:
the `api` check says when starting runs, not running them, held a step back.
Prints a table per ramp and a summary; writes bench/results/worker_throughput.json.
Takes about 8 minutes (`--quick`: 4 s steps, one repeat, about 1.5).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from support import (
    HOST,
    Proc,
    bare_taskiq_worker,
    create_conversations,
    create_token,
    fmt,
    log,
    machine_busy,
    median,
    print_table,
    proc_cpu_seconds,
    ratio,
    serve,
    start_postgres,
    start_redis,
    taskiq_listening,
    turnstream,
    turnstream_env,
    wait_for,
    write_results,
)
from taskiq import AsyncBroker, AsyncTaskiqDecoratedTask, Context, TaskiqDepends

from turnstream.keys import RunKeys
from turnstream.runs.broker import stream_broker

CONCURRENCY = "100"  # runs (and bare tasks) at once per worker: turnstream's default
OURS_QUEUE, OURS_GROUP = "turnstream:runs", "turnstream-workers"  # Settings.queue_name
BARE_QUEUE, BARE_GROUP = "bench:wt:bare", "bench"
BARE_DONE = "bench:wt:bare:done"
ENDED = {"completed", "error", "cancelled"}
GOAL = 150  # runs/s
PASS_SHARE = 0.95
GROWTH_FLOOR, GROWTH_SECONDS = 25, 0.25  # the depth may grow by max(25, 0.25 s of starts)
DRAIN_LIMIT = 300  # seconds a ramp's backlog may take to drain

# ------------------------------------------------------------- what the bare worker imports


async def bare_task(context: Context = TaskiqDepends()) -> None:
    """The baseline's whole task: count itself."""
    async with Redis(connection_pool=context.broker.connection_pool) as redis:
        await redis.incr(BARE_DONE)


def bare(redis_url: str) -> tuple[AsyncBroker, AsyncTaskiqDecoratedTask[Any, Any]]:
    """The baseline's broker, with turnstream's class and settings, and its one task."""
    broker = stream_broker(redis_url, BARE_QUEUE, group=BARE_GROUP)
    return broker, broker.register_task(bare_task, task_name="bench.wt.bare")


# `python -m taskiq worker worker_throughput:bare_broker` imports this one.
bare_broker, _ = bare(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))

# ------------------------------------------------------------- /proc


def tree_cpu_seconds(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds of each root pid and its live descendants (by parent pid, since
    taskiq's worker and PostgreSQL's backends run as children; postgres leaves the
    process group)."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    parents[int(entry.name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    children: dict[int, list[int]] = collections.defaultdict(list)
    for pid, ppid in parents.items():
        children[ppid].append(pid)
    out = {}
    for name, root in roots.items():
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            total += proc_cpu_seconds(pid)
            todo += children.get(pid, [])
        out[name] = total
    return out


# ------------------------------------------------------------- the two sides


async def post_start(port: int, token: str, cid: str) -> tuple[int, str | None]:
    """POST a message with `stream=true` and hang up at the headers: (status, session id)."""
    body = b'{"content": "hi"}'
    head = (
        f"POST /api/v1/conversations/{cid}/message/?stream=true HTTP/1.1\r\n"
        f"Host: {HOST}:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(head.encode() + body)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = await reader.read(65536)
            if not chunk:
                break
            buf += chunk
    finally:
        writer.close()
    status_line, *lines = buf.split(b"\r\n\r\n", 1)[0].decode(errors="replace").split("\r\n")
    status = int(status_line.split()[1]) if status_line.startswith("HTTP/") else 0
    headers = dict(line.lower().split(": ", 1) for line in lines if ": " in line)
    return status, headers.get("x-session-id")


class Side:
    """One side's load and counters; `fire` starts one run, `refresh` counts the ended."""

    name, queue, group = "", "", ""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.fired = self.started = self.ended = 0
        self.refused: collections.Counter[str] = collections.Counter()

    async def fire(self) -> None:
        raise NotImplementedError

    async def refresh(self) -> None:
        raise NotImplementedError

    def busy(self) -> bool:
        """Runs this process knows of that have not ended."""
        return False


class Ours(Side):
    name, queue, group = "ours", OURS_QUEUE, OURS_GROUP

    def __init__(self, redis: Redis, port: int, token: str, cids: list[str]) -> None:
        super().__init__(redis)
        self.port, self.token = port, token
        self.free = collections.deque(cids)
        self.outstanding: dict[str, str] = {}  # task:status key -> its conversation
        self.statuses: collections.Counter[str] = collections.Counter()
        self.lock = asyncio.Lock()

    async def fire(self) -> None:
        self.fired += 1
        if not self.free:
            self.refused["no free conversation"] += 1
            return
        cid = self.free.popleft()
        try:
            status, sid = await post_start(self.port, self.token, cid)
            why = f"HTTP {status}" if status else "no response"
        except OSError as exc:
            status, sid, why = 0, None, type(exc).__name__
        if status != 200 or sid is None:
            self.refused[why] += 1
            self.free.append(cid)
            return
        self.started += 1
        self.outstanding[RunKeys(cid, sid).status] = cid

    async def refresh(self) -> None:
        async with self.lock:
            pending = list(self.outstanding)
            for i in range(0, len(pending), 2000):
                chunk = pending[i : i + 2000]
                for key, status in zip(chunk, await self.redis.mget(chunk), strict=True):
                    if status in ENDED:
                        self.free.append(self.outstanding.pop(key))
                        self.statuses[status] += 1
                        self.ended += 1

    def busy(self) -> bool:
        return bool(self.outstanding)


class Bare(Side):
    name, queue, group = "bare", BARE_QUEUE, BARE_GROUP

    def __init__(self, redis: Redis, task: AsyncTaskiqDecoratedTask[Any, Any]) -> None:
        super().__init__(redis)
        self.task = task

    async def fire(self) -> None:
        self.fired += 1
        try:
            await self.task.kiq()
        except Exception as exc:  # counted as refused: the step fails
            self.refused[type(exc).__name__] += 1
            return
        self.started += 1

    async def refresh(self) -> None:
        self.ended = int(await self.redis.get(BARE_DONE) or 0)


# ------------------------------------------------------------- the ramp


class Bench:
    """The ramps: the Redis client that reads the queues, the processes whose CPU counts."""

    def __init__(self, redis: Redis, groups: dict[str, int], sides: dict[str, Side]) -> None:
        self.redis, self.groups, self.sides = redis, groups, sides

    async def depth(self, side: Side) -> dict[str, int]:
        """The side's queue: waiting (`lag`) + delivered but not acked (`pending`)."""
        for g in await self.redis.xinfo_groups(side.queue):
            if g["name"] == side.group:
                lag = g.get("lag")
                if lag is None:  # Redis cannot tell: nothing is ever trimmed, so count
                    lag = await self.redis.xlen(side.queue) - (g.get("entries-read") or 0)
                pending = int(g["pending"])
                return {"depth": int(lag) + pending, "pending": pending,
                        "acked": int(g.get("entries-read") or 0) - pending}  # fmt: skip
        raise RuntimeError(f"no consumer group {side.group} on {side.queue}")

    async def snapshot(self, side: Side) -> dict[str, Any]:
        await side.refresh()
        queue = await self.depth(side)
        stats = await self.redis.info("commandstats")
        busy, total = machine_busy()
        return {
            "t": time.monotonic(),
            "fired": side.fired,
            "started": side.started,
            "ended": side.ended,
            "refused": sum(side.refused.values()),
            **queue,
            "cpu": tree_cpu_seconds(self.groups) | {"bench": proc_cpu_seconds(os.getpid())},
            "busy": busy,
            "total": total,
            "redis_calls": {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()},
        }

    async def ramp(
        self, side: Side, steps: list[int], seconds: float, beyond: int
    ) -> dict[str, Any]:
        """One ramp: a row per step, the depth every second, and the knee."""
        loop = asyncio.get_running_loop()
        rows: list[dict[str, Any]] = []
        series: list[tuple[float, int]] = []
        inflight: set[asyncio.Task[None]] = set()
        first = prev = await self.snapshot(side)
        began = prev["t"]

        async def watch() -> None:  # frees conversations, records the depth
            while True:
                await asyncio.sleep(1)
                await side.refresh()
                series.append(
                    (round(time.monotonic() - began, 2), (await self.depth(side))["depth"])
                )

        watcher = asyncio.create_task(watch())
        failing = 0
        t0 = loop.time() + 0.05
        try:
            for rate in steps:
                late = 0.0
                for i in range(int(rate * seconds)):
                    due = t0 + i / rate
                    if (wait := due - loop.time()) > 0:
                        await asyncio.sleep(wait)
                    late = max(late, loop.time() - due)
                    task = asyncio.create_task(side.fire())
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                t0 += seconds
                if (wait := t0 - loop.time()) > 0:
                    await asyncio.sleep(wait)
                snap = await self.snapshot(side)
                rows.append(step_figures(rate, prev, snap, late, len(inflight)))
                prev = snap
                failing = 0 if rows[-1]["passed"] else failing + 1
                if failing > beyond:
                    break
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await asyncio.gather(*inflight, return_exceptions=True)
        passed = [r["rate"] for r in rows if r["passed"]]
        knee = max(passed) if passed else None
        ended = max(prev["ended"] - first["ended"], 1)
        calls = {k: (v - first["redis_calls"].get(k, 0)) / ended
                 for k, v in prev["redis_calls"].items()}  # fmt: skip
        return {
            "rows": rows,
            "knee": knee,
            "knee_is_last_step": knee is not None and knee == steps[-1],
            "depth_series": series,
            # Every client's commands (API, worker, this process), scripts' own calls too
            "redis_calls_per_run": dict(sorted(calls.items(), key=lambda kv: -kv[1])[:15]),
            "drain_seconds": await self.drain(side),
        }

    async def drain(self, side: Side) -> float:
        """Wait until the side's queue is empty and its runs ended; seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < DRAIN_LIMIT:
            await side.refresh()
            if (await self.depth(side))["depth"] == 0 and not side.busy():
                return round(time.monotonic() - started, 1)
            await asyncio.sleep(0.25)
        raise RuntimeError(f"{side.name}: queue not drained after {DRAIN_LIMIT} s")


def step_figures(
    rate: int, prev: dict[str, Any], snap: dict[str, Any], late: float, open_starts: int
) -> dict[str, Any]:
    """One step's figures from the snapshots at its start and end, and whether it passed."""
    dt = snap["t"] - prev["t"]
    d = {k: snap[k] - prev[k] for k in ("fired", "started", "ended", "refused", "acked")}
    cpu = {k: snap["cpu"][k] - prev["cpu"][k] for k in snap["cpu"]}
    busy, total = snap["busy"] - prev["busy"], snap["total"] - prev["total"]
    calls = sum(snap["redis_calls"].values()) - sum(prev["redis_calls"].values())
    row: dict[str, Any] = {
        "rate": rate,
        "seconds": round(dt, 3),
        "sent_per_s": d["fired"] / dt,
        "started_per_s": d["started"] / dt,
        "ended_per_s": d["ended"] / dt,
        "acked_per_s": d["acked"] / dt,
        "refused": d["refused"],
        "depth_start": prev["depth"],
        "depth_end": snap["depth"],
        "client_late_ms": late * 1000,
        "starts_open_at_end": open_starts,
        "cpu_percent": {k: 100 * v / dt for k, v in cpu.items()},
        "cpu_ms_per_run": {
            k: 1000 * v / d["ended"] if d["ended"] else None for k, v in cpu.items()
        },
        "machine_busy_percent": 100 * busy / max(total, 1e-9),
        "redis_calls_per_run": calls / d["ended"] if d["ended"] else None,
    }
    growth = row["depth_end"] - row["depth_start"]
    checks = {  # those that fail name what held the step back
        "client": row["sent_per_s"] >= PASS_SHARE * rate and d["refused"] == 0,
        "api": row["started_per_s"] >= PASS_SHARE * row["sent_per_s"],
        "worker": row["ended_per_s"] >= PASS_SHARE * row["started_per_s"]
        and growth <= max(GROWTH_FLOOR, GROWTH_SECONDS * rate),
    }
    row["passed"] = all(checks.values())
    row["held_back_by"] = "+".join(k for k, ok in checks.items() if not ok) or None
    return row


# ------------------------------------------------------------- processes


def start_processes(work: Path) -> tuple[str, int, str, dict[str, int]]:
    """Redis, PostgreSQL, `serve --no-worker`, one `turnstream worker`, the bare worker."""
    redis, url = start_redis(work)
    env = turnstream_env(
        work,
        url,
        agent="demo",
        demo_words="5",
        demo_delay_ms="0",
        runs_per_minute="100000000",
        max_active_runs="1000000",
        claim_seconds="600",
        worker_concurrency=CONCURRENCY,
    )
    env["BENCH_REDIS_URL"] = url
    env["TURNSTREAM_DATABASE_URL"] = start_postgres(work)
    postgres = Proc.live[-1]
    migrate = turnstream(work, env, "migrate", name="migrate")
    if migrate.proc.wait(120) != 0:
        raise RuntimeError(f"migrate failed:\n{migrate.output()}")
    token = create_token(env)
    api, port = serve(work, env, "--no-worker")
    worker = turnstream(work, env, "worker", name="worker")
    bare_worker = bare_taskiq_worker(work, env, "worker_throughput:bare_broker", CONCURRENCY)
    for proc in (worker, bare_worker):
        wait_for(taskiq_listening(proc), 60, proc.name, proc)
    groups = {"worker": worker.pid, "bare_worker": bare_worker.pid, "api": api.pid,
              "redis": redis.pid, "postgres": postgres.pid}  # fmt: skip
    return url, port, token, groups


async def measure(args: argparse.Namespace, url: str, port: int, token: str,
                  groups: dict[str, int]) -> dict[str, Any]:  # fmt: skip
    """Every ramp of every repeat: {"ours": [ramp, ...], "bare": [...]}."""
    log(f"creating {args.conversations} conversations")
    began = time.monotonic()
    cids = await create_conversations(port, token, args.conversations)
    log(f"created them in {time.monotonic() - began:.1f} s")
    redis = Redis.from_url(url, decode_responses=True)
    broker, task = bare(url)
    await broker.startup()
    bench = Bench(
        redis, groups, {"ours": Ours(redis, port, token, cids), "bare": Bare(redis, task)}
    )
    ramps: dict[str, list[dict[str, Any]]] = {"ours": [], "bare": []}
    try:
        log("warm-up: 2 s at 20/s on each side")
        for side in bench.sides.values():
            await bench.ramp(side, [20], 2, 0)
        for r in range(args.repeats):
            order = ("bare", "ours") if r % 2 == 0 else ("ours", "bare")
            for name in order:
                log(f"repeat {r + 1}: {name} ramp")
                result = await bench.ramp(bench.sides[name], args.steps, args.seconds, args.beyond)
                ramps[name].append(result)
                print_ramp(f"repeat {r + 1}, {name}", result)
        ours = bench.sides["ours"]
        assert isinstance(ours, Ours)
        statuses = dict(ours.statuses)
    finally:
        await broker.shutdown()
        await redis.aclose()
    return {"ramps": ramps, "ours_statuses": statuses}


# ------------------------------------------------------------- report

COLUMNS = ("target/s", "sent/s", "started/s", "ended/s", "depth start", "depth end",
           "worker CPU %", "worker ms/run", "api CPU %", "machine %", "verdict")  # fmt: skip


def print_ramp(title: str, ramp: dict[str, Any]) -> None:
    worker = "worker" if title.endswith("ours") else "bare_worker"
    print(f"\n{title}: knee {fmt(ramp['knee'], 'd')} /s, drained in {ramp['drain_seconds']} s")
    rows = [
        [r["rate"], fmt(r["sent_per_s"]), fmt(r["started_per_s"]), fmt(r["ended_per_s"]),
         r["depth_start"], r["depth_end"], fmt(r["cpu_percent"][worker], ".0f"),
         fmt(r["cpu_ms_per_run"][worker], ".2f"), fmt(r["cpu_percent"]["api"], ".0f"),
         fmt(r["machine_busy_percent"], ".0f"),
         "pass" if r["passed"] else f"fail ({r['held_back_by']})"]
        for r in ramp["rows"]
    ]  # fmt: skip
    print_table(COLUMNS, rows)
    print(flush=True)


def at_knee(ramps: list[dict[str, Any]], worker: str) -> dict[str, float | None]:
    """Medians over the ramps of the knee step's CPU per run, per process."""
    steps = [next(r for r in ramp["rows"] if r["rate"] == ramp["knee"]) for ramp in ramps
             if ramp["knee"] is not None]  # fmt: skip
    names = {"worker": worker, "api": "api", "redis": "redis", "postgres": "postgres",
             "bench": "bench"}  # fmt: skip
    out = {
        f"{name}_cpu_ms_per_run": median(s["cpu_ms_per_run"][group] for s in steps)
        for name, group in names.items()
    }
    out["worker_cpu_percent"] = median(s["cpu_percent"][worker] for s in steps)
    out["redis_calls_per_run"] = median(s["redis_calls_per_run"] for s in steps)
    return out


def report(runs: dict[str, Any]) -> dict[str, Any]:
    ramps = runs["ramps"]
    knees = {side: [r["knee"] for r in ramps[side]] for side in ("ours", "bare")}
    med = {side: median(k) for side, k in knees.items()}
    capped = {side: any(r["knee_is_last_step"] for r in ramps[side]) for side in ramps}
    figures = {"ours": at_knee(ramps["ours"], "worker"),
               "bare": at_knee(ramps["bare"], "bare_worker")}  # fmt: skip
    knee_ratio = ratio(med["ours"], med["bare"])
    goals = [
        {
            "goal": f"median knee ≥ {GOAL} runs/s on one worker process",
            "ours": med["ours"],
            "limit": GOAL,
            "met": med["ours"] is not None and med["ours"] >= GOAL,
        }
    ]
    print_table(
        ("side", "knees /s", "median knee /s", "worker CPU % at knee", "worker ms/run",
         "redis calls/run", "api ms/run", "postgres ms/run"),
        [[side, " ".join(fmt(k, "d") for k in knees[side]) + (" (ramp's top)" if capped[side]
          else ""), fmt(med[side], ".0f"), fmt(f["worker_cpu_percent"], ".0f"),
          fmt(f["worker_cpu_ms_per_run"], ".2f"),
          fmt(f["redis_calls_per_run"]), fmt(f["api_cpu_ms_per_run"], ".2f"),
          fmt(f["postgres_cpu_ms_per_run"], ".2f")]
         for side, f in figures.items()],
    )  # fmt: skip
    print(f"\nratio of knees, ours / bare: {fmt(knee_ratio, '.2f')}")
    for g in goals:
        verdict = "met   " if g["met"] else "MISSED"
        print(f"{verdict} {g['goal']}: {fmt(g['ours'], '.0f')} runs/s")
    print(f"ours: final statuses of the runs: {runs['ours_statuses']}")
    return {"knees": knees, "median_knee": med, "knee_is_ramp_top": capped,
            "ratio_ours_to_bare": knee_ratio, "at_knee": figures, "goals": goals}  # fmt: skip


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", default="25,50,75,100,150,200,300,450,650,900",
                   help="target starts per second, comma-separated, increasing")  # fmt: skip
    p.add_argument("--seconds", type=float, default=8, help="per step")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--beyond", type=int, default=2, help="steps run past a failing one")
    p.add_argument("--conversations", type=int, default=4000, help="the pool of ours")
    p.add_argument("--quick", action="store_true", help="fewer, 4 s steps, one repeat")
    args = p.parse_args()
    if args.quick:
        args.steps, args.seconds, args.repeats = "25,50,100,150,200,300,450,650,900", 4, 1
        args.beyond, args.conversations = 1, 2500
    args.steps = [int(r) for r in str(args.steps).split(",")]
    return args


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="worker-throughput-") as tmp:
        try:
            url, port, token, groups = start_processes(Path(tmp))
            runs = asyncio.run(measure(args, url, port, token, groups))
        finally:
            Proc.stop_all()
    summary_doc = report(runs)
    params = {k: v for k, v in vars(args).items() if k != "quick"}
    write_results(
        "worker_throughput",
        {
            "parameters": {
                **params,
                "quick": args.quick,
                "concurrency": int(CONCURRENCY),
                "agent": "demo, 5 words, no delay",
                "pass_share": PASS_SHARE,
                "depth_growth_bound": f"max({GROWTH_FLOOR}, {GROWTH_SECONDS} s x rate)",
                "client": "raw sockets, hang up at the response headers",
            },
            "seconds_taken": round(time.monotonic() - started),
            **summary_doc,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
