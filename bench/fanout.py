"""SSE fan-out: the largest number of clients C, each following its own run at 20 events/s,
that one API process serves with p99 ≤ 50 ms, against a bare SSE server in the same run.

    flock /tmp/bench.lock python bench/fanout.py            # ~10 min: 3 repeats, knee search
    flock /tmp/bench.lock python bench/fanout.py --quick    # ~1.5 min: 1 repeat, C ≤ 200
    python bench/fanout.py --clients 100,200,300 --repeats 1   # a given grid instead

What runs (loopback; stopped at the end):

- a real `redis-server` and `turnstream serve --no-worker` (SQLite in a temporary directory);
- a **producer** process standing in for the workers: it creates and claims one run per client
  through turnstream's own write path (`RunState.create/claim/append/finish`, the Lua scripts)
  and appends one `delta` per run every 50 ms. The delta's text is {"sched": ms, "n": i}. Run j
  starts at T0 + j·50/C ms, so the load is a steady 20·C events/s, not a burst every 50 ms;
- the **load generator** (this process, one uvloop loop): C raw-socket HTTP/1.1 clients on
  `GET /api/v1/conversations/{cid}/resume/{sid}`. Per event: latency = arrival - `sched`;
  lost = scheduled deltas never received; duplicated = a repeated `n` or `seq`. The clients and
  the producer are bench/sse_load.py's, which bench/idle.py uses too;
- the **baseline**: bench/bare_sse_server.py (Starlette + sse-starlette under uvicorn, no Redis)
  streaming the same schedule from memory to the same clients, interleaved with turnstream C by C.

A C passes when p99 ≤ 50 ms with 0 lost, 0 duplicated and no stream still open 10 s after its
schedule. Each repeat searches each side's knee: C = 100, 200, … until a failure, then halves
the bracket in steps of 25 (e.g. 200 pass / 300 fail → 250 → 225 or 275). A side's figure is
the largest C that passed below its first failure; the result is the median of the repeats.
Goal (issue #16 item 5): median turnstream / median bare ≥ 0.8; stretch: beyond the bare server.

**Cores: pinned.** On two shared cores the producer (workers run elsewhere in production)
competed with the server: it lagged 233 ms at C=300 in the unpinned runs. So the server under
test and the load generator share one core, Redis and the producer the other: each side's API
process gets the same one core with the same load generator, and Redis is a separate service, as
in production. The producer's lag (acknowledged - scheduled, p99) is in the table. `--no-pin`
lets every process use every core.

Per trial: CPU as % of one core, memory per connection = (peak RSS - RSS before connecting) / C,
`other` = cores busy outside the benchmark. `--profile C` adds a trial per side at C under py-spy
(optional: `pip install py-spy`), which writes its raw collapsed stacks (for flamegraph.pl or
speedscope) to bench/results/fanout-profile-SIDE-cC.txt. Results: bench/results/fanout.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvloop
from redis.asyncio import Redis
from sse_load import (
    PERIOD_MS,
    RATE_HZ,
    Producer,
    Sink,
    SSEClient,
    connect_all,
    new_runs,
    now_ms,
    pin,
    prepare,
    resume_path,
)
from support import (
    HOST,
    RESULTS,
    ROOT,
    Proc,
    create_token,
    fmt,
    free_port,
    http_ok,
    log,
    machine_busy,
    median,
    print_table,
    proc_cpu_seconds,
    proc_rss_kb,
    ratio,
    rounded,
    serve,
    start_redis,
    summary,
    turnstream_env,
    wait_for,
    write_results,
)  # fmt: skip

from turnstream.live.state import RunState

P99_LIMIT_MS = 50.0
GOAL_RATIO = 0.8
STEP = 25  # the finest grid of the knee search
USER = "bench"
SIDES = ("turnstream", "bare")
Opened = tuple[list[SSEClient], float, "Producer | None"]  # the clients, T0, the producer


# ------------------------------------------------------------------------- one trial


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    cores: dict[str, set[int]]  # "serve": server + load generator; "infra": Redis + producer
    redis: Proc
    redis_url: str
    runs: RunState  # on redis-py: for setting runs up and flushing, outside the window
    env: dict[str, str]
    token: str
    cids: list[str] = field(default_factory=list)


def start_server(b: Bench, side: str, tag: str) -> tuple[Proc, int]:
    if side == "turnstream":
        proc, port = serve(b.tmp, b.env, "--no-worker", name=f"turnstream-{tag}")
    else:
        port = free_port()
        args = [sys.executable, str(ROOT / "bench" / "bare_sse_server.py"), "--port", str(port)]
        proc = Proc(f"bare-{tag}", args, b.tmp / f"bare-{tag}.log")
        wait_for(lambda: http_ok(port), 60, "bare server", proc)
    pin(proc.pid, b.cores.get("serve"))
    return proc, port


async def ensure_conversations(b: Bench, port: int, n: int) -> None:
    """At least `n` conversations of the bench user (made once, kept in SQLite)."""
    auth = {"Authorization": f"Bearer {b.token}"}
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", headers=auth) as http:
        (await http.get("/api/v1/conversations?limit=1")).raise_for_status()  # warm the path
        while len(b.cids) < n:
            posts = [
                http.post("/api/v1/conversations", json={"title": "fanout"})
                for _ in range(min(32, n - len(b.cids)))
            ]
            for r in await asyncio.gather(*posts):
                r.raise_for_status()
                b.cids.append(r.json()["id"])


async def open_turnstream(b: Bench, c: int, port: int, sink: Sink) -> Opened:
    """C started runs, a client on each; the producer's schedule begins 1 s after the last is in."""
    await ensure_conversations(b, port, c)
    specs = new_runs(b.cids[:c], USER)
    await prepare(b.runs, specs, user=USER, lease_s=b.args.seconds + 120)
    producer = Producer(b.redis_url, specs, sink.count, b.cores.get("infra"))
    try:
        paths = [resume_path(cid, sid) for cid, sid, *_ in specs]
        clients = await connect_all(port, paths, f"Authorization: Bearer {b.token}\r\n", sink)
        await producer.ready()
    except BaseException:
        producer.stop()
        raise
    t0 = now_ms() + 1000
    producer.go(t0)
    return clients, t0, producer


async def open_bare(b: Bench, c: int, port: int, sink: Sink) -> Opened:
    """The same schedule, carried in each client's URL: T0 leaves time for all to connect."""
    t0 = now_ms() + 1500 + 3 * c
    paths = [
        f"/stream?start={t0 + j * PERIOD_MS / c:.1f}&count={sink.count}&period={PERIOD_MS:g}"
        for j in range(c)
    ]
    return await connect_all(port, paths, "", sink), t0, None


def snapshot(pids: dict[str, int]) -> dict[str, float]:
    snap = {name: proc_cpu_seconds(pid) for name, pid in pids.items()}
    snap["busy"] = machine_busy()[0]
    snap["wall"] = time.monotonic()
    return snap


async def window(
    b: Bench, server: Proc, pids: dict[str, int], sink: Sink, c: int, t0: float
) -> dict:
    """From T0 until every client saw `end` (or the deadline): CPU, peak RSS, loop stalls."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, (t0 - now_ms()) / 1000))
    s0 = snapshot(pids)
    deadline = t0 + (b.args.seconds + b.args.grace) * 1000
    rss_peak, stall = 0, 0.0
    while sink.done < c and now_ms() < deadline:
        before = loop.time()
        await asyncio.sleep(0.1)
        stall = max(stall, (loop.time() - before - 0.1) * 1000)  # the load generator's own
        rss_peak = max(rss_peak, proc_rss_kb(server.pid))
    s1 = snapshot(pids)
    return {"s0": s0, "s1": s1, "t0": t0, "rss_peak": rss_peak, "loadgen_stall_ms": stall}


async def run_trial(b: Bench, side: str, c: int, tag: str, profile: bool = False) -> dict:
    """One side at C clients, on a fresh server; Redis is flushed afterwards."""
    server, port = start_server(b, side, tag)
    sink = Sink(round(b.args.seconds * RATE_HZ))
    clients: list[SSEClient] = []
    producer = None
    try:
        await asyncio.sleep(0.5)
        rss0 = proc_rss_kb(server.pid)
        opener = open_turnstream if side == "turnstream" else open_bare
        clients, t0, producer = await opener(b, c, port, sink)
        pids = {"server": server.pid, "redis": b.redis.pid, "loadgen": os.getpid()}
        if producer is not None:
            pids["producer"] = producer.pid
        spy = start_py_spy(b, server.pid, f"{side}-c{c}") if profile else None
        win = await window(b, server, pids, sink, c, t0)
        win["server_alive"] = server.alive()
        win["producer"] = await producer.result() if producer else None
        if spy is not None:
            spy.proc.wait(30)
            win["profile"] = f"bench/results/fanout-profile-{side}-c{c}.txt"
    finally:
        for client in clients:
            if not client.finished:  # still streaming at the deadline: late, not (yet) lost
                client.cut = True
                client.fail("cut at the deadline, still streaming")
        if producer is not None:
            producer.stop()
        server.stop()
        await b.runs.redis.flushall()
    return figures(side, c, clients, sink, win, rss0)


def figures(side: str, c: int, clients: list[SSEClient], sink: Sink, win: dict, rss0: int) -> dict:
    s0, s1 = win["s0"], win["s1"]
    wall = s1["wall"] - s0["wall"]
    procs = [name for name in s0 if name not in ("busy", "wall")]
    cpu = {name: round(100 * (s1[name] - s0[name]) / wall, 1) for name in procs}
    other = (s1["busy"] - s0["busy"]) / wall - sum(cpu.values()) / 100
    lost = sum(sink.count - cl.received for cl in clients if not cl.cut)
    undelivered = sum(sink.count - cl.received for cl in clients if cl.cut)
    dup = sum(cl.dup for cl in clients)
    lat = rounded(summary(sink.lat))
    steady = (win["t0"] + 1000, win["t0"] + (sink.count / RATE_HZ - 1) * 1000)
    pairs = zip(sink.sched, sink.lat, strict=True)
    lat_steady = rounded(summary(x for s, x in pairs if steady[0] <= s < steady[1]))
    p99 = lat["p99"]
    ok = p99 is not None and p99 <= P99_LIMIT_MS and lost == undelivered == dup == 0
    producer = win["producer"] or {}
    return {
        "side": side,
        "clients": c,
        "pass": ok and win["server_alive"],
        "latency_ms": lat,
        "latency_steady_ms": lat_steady,  # without the first and last second (set-up, teardown)
        "expected": c * sink.count,
        "received": len(sink.lat),
        "lost": lost,
        "undelivered_at_deadline": undelivered,
        "duplicated": dup,
        "out_of_order": sum(cl.out_of_order for cl in clients),
        "client_errors": dict(Counter(cl.error.split(":")[0] for cl in clients if cl.error)),
        "cpu_pct": cpu,
        "other_busy_cores": round(other, 2),
        "rss_per_conn_kb": round((win["rss_peak"] - rss0) / c, 1),
        "loadgen_stall_ms": round(win["loadgen_stall_ms"], 1),
        "producer_lag_ms": producer.get("ack_lag_ms"),
        "producer_problems": producer.get("problems"),
        "server_alive": win["server_alive"],
        **({"profile": win["profile"]} if "profile" in win else {}),
    }


def failed_trial(side: str, c: int, error: str) -> dict:
    """A trial that could not be measured (a server that never came up, say): a failure."""
    return {"side": side, "clients": c, "pass": False, "error": error, "latency_ms": {}}


def start_py_spy(b: Bench, pid: int, name: str) -> Proc | None:
    """py-spy's own raw output (collapsed stacks) of the window, on the infra core."""
    exe = shutil.which("py-spy")
    if exe is None:
        log("py-spy is not installed (pip install py-spy): no profile")
        return None
    out = RESULTS / f"fanout-profile-{name}.txt"
    seconds = str(int(b.args.seconds) + 2)
    args = [exe, "record", "-p", str(pid), "-d", seconds, "-f", "raw", "-o", str(out)]
    spy = Proc("py-spy", [*args, "--nonblocking"], b.tmp / "py-spy.log")
    pin(spy.pid, b.cores.get("infra"))
    return spy


# ------------------------------------------------------------------------- the knee search


def bracket(tested: dict[int, bool]) -> tuple[int, int | None]:
    """(the largest C passing below the first failure, or 0; the smallest failing C or None)."""
    hi = min((c for c, ok in tested.items() if not ok), default=None)
    lo = max((c for c, ok in tested.items() if ok and (hi is None or c < hi)), default=0)
    return lo, hi


def next_c(tested: dict[int, bool], args: argparse.Namespace) -> int | None:
    """The next C to try: the given list in order; else coarse steps, then halving to STEP."""
    if args.clients:
        return next((c for c in args.clients if c not in tested), None)
    lo, hi = bracket(tested)
    if hi is None:
        return lo + args.coarse if lo + args.coarse <= args.max_clients else None
    if hi - lo <= STEP:
        return None
    return lo + max(1, round((hi - lo) / 2 / STEP)) * STEP


async def one_repeat(b: Bench, repeat: int, trials: list[dict]) -> dict[str, int]:
    """Both sides' knees, their trials interleaved (the side going first alternates)."""
    tested: dict[str, dict[int, bool]] = {side: {} for side in SIDES}
    order = list(SIDES) if repeat % 2 else list(reversed(SIDES))
    while todo := [(s, c) for s in order if (c := next_c(tested[s], b.args)) is not None]:
        order.reverse()
        for side, c in todo:
            try:
                r = await run_trial(b, side, c, f"r{repeat}-c{c}")
            except Exception:
                log(f"{side} C={c} trial failed:\n{traceback.format_exc()}")
                r = failed_trial(side, c, traceback.format_exc())
            r["repeat"] = repeat
            trials.append(r)
            tested[side][c] = r["pass"]
            lat = r["latency_ms"]
            log(
                f"repeat {repeat} {side:<10} C={c:<4} p50 {fmt(lat.get('p50'))} ms, p99 "
                f"{fmt(lat.get('p99'))} ms, lost {r.get('lost', '-')}, dup "
                f"{r.get('duplicated', '-')} -> {'pass' if r['pass'] else 'FAIL'}"
            )
    return {side: bracket(tested[side])[0] for side in SIDES}


# ------------------------------------------------------------------------- report


def settle(largest: list[dict[str, int]], args: argparse.Namespace) -> dict[str, Any]:
    """Per side the largest passing C of each repeat and their median; the ratio; the goals."""
    per_side = {side: [r[side] for r in largest] for side in SIDES}
    medians = {side: median(v) for side, v in per_side.items()}
    r = ratio(medians["turnstream"], medians["bare"])
    r = None if r is None else round(r, 3)
    cap = None if args.clients else args.max_clients
    return {
        "largest_passing_c": per_side,
        "median_largest_passing_c": medians,
        "ratio_of_medians": r,
        "ceiling_not_found": {s: cap is not None and cap in per_side[s] for s in SIDES},
        "goals": [
            {"goal": f"median turnstream / median bare ≥ {GOAL_RATIO}", "figure": r,
             "met": r is not None and r >= GOAL_RATIO},
            {"goal": "stretch: beyond the bare server (ratio ≥ 1)", "figure": r,
             "met": r is not None and r >= 1},
        ],
    }  # fmt: skip


def print_trials(trials: list[dict]) -> None:
    rows = []
    for t in sorted(trials, key=lambda t: (t["repeat"], t["clients"], t["side"])):
        lat, cpu = t["latency_ms"], t.get("cpu_pct", {})
        lag = (t.get("producer_lag_ms") or {}).get("p99")
        rows.append([
            t["repeat"], t["side"], t["clients"], fmt(lat.get("p50")), fmt(lat.get("p99")),
            fmt(t.get("latency_steady_ms", {}).get("p99")),
            t.get("lost", "-"), t.get("duplicated", "-"), fmt(cpu.get("server"), ".0f"),
            fmt(cpu.get("redis"), ".0f"), fmt(cpu.get("loadgen"), ".0f"),
            fmt(cpu.get("producer"), ".0f"), fmt(lag), fmt(t.get("rss_per_conn_kb")),
            fmt(t.get("other_busy_cores"), ".2f"), "pass" if t["pass"] else "FAIL",
        ])  # fmt: skip
    heads = ["rep", "side", "C", "p50", "p99", "p99 steady", "lost", "dup", "srv%", "redis%",
             "gen%", "prod%", "prodLag99", "KB/conn", "other", ""]  # fmt: skip
    print_table(heads, rows)
    print("ms from scheduled to arrival; CPU in % of one core; prodLag99: the producer's, in ms")


def print_summary(s: dict[str, Any]) -> None:
    rows = [
        [side, *s["largest_passing_c"][side], fmt(s["median_largest_passing_c"][side], "g")]
        for side in SIDES
    ]
    repeats = len(s["largest_passing_c"]["turnstream"])
    print_table(["largest passing C", *(f"repeat {i + 1}" for i in range(repeats)), "median"], rows)
    for goal in s["goals"]:
        print(
            f"{goal['goal']}: {fmt(goal['figure'], '.2f')} ({'met' if goal['met'] else 'NOT met'})"
        )
    for side, hit in s["ceiling_not_found"].items():
        if hit:
            print(f"{side} passed up to --max-clients: its real ceiling is higher")


# ------------------------------------------------------------------------- main


async def setup(args: argparse.Namespace, tmp: Path) -> Bench:
    """Cores, Redis (pinned) and a token; this process moves onto the server's core."""
    cores: dict[str, set[int]] = {}
    available = sorted(os.sched_getaffinity(0))
    if args.pin and len(available) >= 2:
        cores = {"infra": {available[0]}, "serve": {available[1]}}
        pin(os.getpid(), cores["serve"])
    redis, redis_url = start_redis(tmp)
    pin(redis.pid, cores.get("infra"))
    runs = RunState(Redis.from_url(redis_url), maxlen=10_000, ttl_seconds=900)
    env = turnstream_env(tmp, redis_url)
    token = await asyncio.to_thread(create_token, env, USER)
    log(f"cores {cores or 'not pinned'}; redis {redis_url}")
    return Bench(args, tmp, cores, redis, redis_url, runs, env, token)


async def main_async(args: argparse.Namespace, tmp: Path) -> None:
    started = time.monotonic()
    b = await setup(args, tmp)
    trials: list[dict] = []
    profiles: dict[str, Any] = {}
    largest = [await one_repeat(b, repeat, trials) for repeat in range(1, args.repeats + 1)]
    for side in SIDES if args.profile else ():
        r = await run_trial(b, side, args.profile, f"profile-c{args.profile}", profile=True)
        profiles[side] = {k: r.get(k) for k in ("clients", "latency_ms", "cpu_pct", "profile")}
    await b.runs.redis.aclose()
    result = settle(largest, args)
    print()
    print_trials(trials)
    print()
    print_summary(result)
    params = {k: v for k, v in vars(args).items() if k != "output"}
    write_results(args.output, {
        "benchmark": "fanout",
        "parameters": {**params, "rate_hz": RATE_HZ, "p99_limit_ms": P99_LIMIT_MS, "step": STEP},
        "cores": {k: sorted(v) for k, v in b.cores.items()} or "not pinned",
        "summary": result,
        "trials": trials,
        "profiles": profiles,
        "duration_s": round(time.monotonic() - started),
    })  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10, help="length of each run's schedule")
    p.add_argument("--coarse", type=int, default=100, help="the search's first steps of C")
    p.add_argument("--max-clients", type=int, default=1000, help="the search stops there")
    p.add_argument("--clients", help="a comma-separated list of C instead of the search")
    p.add_argument("--grace", type=float, default=10, help="s to wait past the schedule's end")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin processes")
    p.add_argument("--profile", type=int, help="one more trial per side at this C, with py-spy")
    p.add_argument("--output", default="fanout", help="bench/results/OUTPUT.json")
    p.add_argument("--quick", action="store_true", help="1 repeat, 5 s runs, C ≤ 200")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.seconds, args.max_clients = 1, 5.0, 200
        args.output = "fanout-quick" if args.output == "fanout" else args.output
    if args.clients:
        args.clients = sorted({int(c) for c in args.clients.split(",")})
    return args


def main() -> None:
    args = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="turnstream-fanout-"))
    try:
        uvloop.run(main_async(args, tmp))
    finally:
        Proc.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
