"""`active-session` and `task-status`: their cost as Redis fills up, and over HTTP.

    python bench/session_lookup.py            # sizes 1000,100000,1000000, 3 repeats
    python bench/session_lookup.py --quick    # sizes 1000,20000, 1 repeat, short wrk runs
    python bench/session_lookup.py --profile /tmp/serve.speedscope.json   # py-spy, optional

For each N in `--sizes` (ascending; each adds to the previous fill) Redis holds the keys of
N finished runs of *other* conversations (stream of three events, `task:status`, the run
hash, `chat:active`; 6 h TTL), written as pre-encoded RESP pipelines. One real
conversation then gets a completed run through the real app, and:

- **ours in process**: `create_app` through `httpx.ASGITransport`, one client, `--requests`
  requests per endpoint and repeat: p50/p95/p99 latency. Goal: p95 <= 1.5 ms at 1,000,000.
- **growth**: p95 at the largest N over p95 at the smallest. Goal: <= 1.5 (flat with N).
- **seed baseline**: the old lookup as a tiny in-process app: `KEYS chat:stream:{cid}:*`
  (or a full `SCAN MATCH`), the first match, XREVRANGE COUNT 1 and GET of its status; one
  client, a ~2.5 s budget per figure. Goals: p50 speedup >= 500x (KEYS), >= 2000x (SCAN).
- **HTTP** (at the largest N): `turnstream serve --no-worker` against `bare_lookup.py`, a
  bare FastAPI app under the same uvicorn settings doing GET `chat:active` + HGETALL of the
  run with no auth, no ownership check, no middleware. Both driven by `wrk` at 16 and 64
  connections for `--seconds`, the two servers interleaved (the order swaps each repeat).
  Goals: req/s >= 0.6x the bare app's at 16 and 64; p99 <= 1.5x the bare app's at 16.

Every figure is the median over `--repeats` of that repeat's figure. Results go to
bench/results/session_lookup.json; `--profile FILE` also records the serve process with
py-spy (`pip install py-spy`, optional) during one more wrk run of task-status at 16
connections (speedscope format for `.json`, collapsed stacks otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import hiredis
import httpx
import redis
from bare_lookup import seed_app
from support import (
    HOST,
    Proc,
    create_token,
    free_port,
    http_ok,
    log,
    median,
    percentile,
    print_table,
    ratio,
    resp,
    serve,
    start_redis,
    turnstream_env,
    wait_for,
    write_results,
    wrk,
)

from turnstream.api.app import create_app
from turnstream.config import Settings
from turnstream.keys import RunKeys

ENDPOINTS = ("active-session", "task-status")
GOALS = {
    "in_process_p95_ms_max": 1.5,
    "p95_growth_max": 1.5,
    "speedup_vs_keys_min": 500.0,
    "speedup_vs_scan_min": 2000.0,
    "http_rps_ratio_min": 0.6,
    "http_p99_ratio_c16_max": 1.5,
}
USER = "bench"
FILLER_TTL_MS = 6 * 3600 * 1000  # nothing expires during a run
BATCH_RUNS = 1000
CID, MID = "@" * 36, "^" * 36  # placeholders of the final width, filled in with %


# --------------------------------------------------------------------------- filling Redis


def run_template() -> tuple[bytes, int]:
    """RESP for one finished run of another conversation, with %(cid)s and %(mid)s holes."""
    k = RunKeys(CID, f"conversation:other:{MID}")
    ts, ttl = "1700000000000", FILLER_TTL_MS
    events = [("queued", {"sessionId": k.sid}), ("start", {}), ("end", {"status": "completed"})]
    run = {"session_id": k.sid, "conversation_id": k.cid, "user_id": "other",
           "message_id": MID, "status": "completed", "created_at": ts, "started_at": ts,
           "ended_at": ts, "last_activity": ts, "last_id": f"{ts}-2", "seq": "3"}  # fmt: skip
    commands = [
        resp(
            "XADD", k.stream, f"{ts}-{i}", "type", t, "seq", i + 1, "ts", ts, "data", json.dumps(d)
        )
        for i, (t, d) in enumerate(events)
    ]
    commands += [
        resp("PEXPIRE", k.stream, ttl),
        resp("SET", k.status, "completed", "PX", ttl),
        resp("HSET", k.run, *[x for kv in run.items() for x in kv]),
        resp("PEXPIRE", k.run, ttl),
        resp("SET", k.active, k.sid, "PX", ttl),
    ]
    template = b"".join(commands).replace(b"%", b"%%")
    template = template.replace(CID.encode(), b"%(cid)s").replace(MID.encode(), b"%(mid)s")
    return template, len(commands)


def fill(url: str, start: int, stop: int) -> float:
    """Add runs start..stop-1 on one raw socket; a thread reads (and checks) the replies."""
    template, per_run = run_template()
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or HOST, parts.port or 6379))
    expected, errors = (stop - start) * per_run, []

    def read_replies() -> None:
        reader, got = hiredis.Reader(), 0
        while got < expected:
            reply = reader.gets()
            if reply is False:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    errors.append("redis closed the connection")
                    return
                reader.feed(chunk)
            else:
                got += 1
                if isinstance(reply, hiredis.ReplyError):
                    errors.append(str(reply))

    t0 = time.perf_counter()
    reader = threading.Thread(target=read_replies, daemon=True)
    reader.start()
    with sock:
        for lo in range(start, stop, BATCH_RUNS):
            ids = ({b"cid": b"00000000-0000-7000-8000-%012x" % i,
                    b"mid": b"00000000-0000-7000-9000-%012x" % i}
                   for i in range(lo, min(stop, lo + BATCH_RUNS)))  # fmt: skip
            sock.sendall(b"".join(template % x for x in ids))
        reader.join(600)
    if errors or reader.is_alive():
        raise RuntimeError(f"fill failed: {errors[:3] or 'no reply in time'}")
    elapsed = time.perf_counter() - t0
    log(f"filled runs {start:,}..{stop:,} in {elapsed:.1f} s")
    return elapsed


# --------------------------------------------------------------------------- in process


async def timed(
    client: httpx.AsyncClient, url: str, count: int, headers: Any = None
) -> list[float]:
    """`count` GETs one after another: each one's latency in ms (each must answer 200)."""
    out = []
    for _ in range(count):
        t0 = time.perf_counter_ns()
        response = await client.get(url, headers=headers)
        out.append((time.perf_counter_ns() - t0) / 1e6)
        if response.status_code != 200:
            raise RuntimeError(f"{url}: {response.status_code} {response.text}")
    return out


def pcts(latencies: list[float]) -> dict[str, float | None]:
    return {f"p{q}_ms": percentile(latencies, q / 100) for q in (50, 95, 99)}


async def in_process(
    ours: httpx.AsyncClient, seed: httpx.AsyncClient, cid: str, token: str, a: argparse.Namespace
) -> dict[str, Any]:
    """Ours and the seed baseline at one client, for one N: every repeat's percentiles."""
    headers = {"Authorization": f"Bearer {token}"}
    out: dict[str, Any] = {}
    for endpoint in ENDPOINTS:
        url = f"/api/v1/conversations/{cid}/{endpoint}"
        await timed(ours, url, a.requests // 4, headers)  # warm-up
        out[f"ours {endpoint}"] = [pcts(await timed(ours, url, a.requests, headers))
                                   for _ in range(a.repeats)]  # fmt: skip
    for method in ("keys", "scan"):
        for endpoint in ENDPOINTS:
            url = f"/{method}/{cid}/{endpoint}"
            probe = await timed(seed, url, 1)
            count = max(5, min(a.requests * a.repeats, int(2500 / probe[0])))
            reps = a.repeats if count >= 30 * a.repeats else 1
            out[f"{method} {endpoint}"] = [pcts(await timed(seed, url, count // reps))
                                           for _ in range(reps)]  # fmt: skip
    for name, reps in out.items():
        log(f"  {name:<22} p50 {median(r['p50_ms'] for r in reps):10.3f} ms"
            f"  p95 {median(r['p95_ms'] for r in reps):10.3f} ms")  # fmt: skip
    return out


@contextlib.asynccontextmanager
async def apps(workdir: Path, redis_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    """Our app (with its in-process worker, to make the real run) and the seed app."""
    settings = Settings(database_url=f"sqlite+aiosqlite:///{workdir}/turnstream.db",
                        redis_url=redis_url, data_dir=workdir / "data",
                        demo_words=5, demo_delay_ms=0)  # fmt: skip
    ours, seed = create_app(settings), seed_app(redis_url)
    async with (
        ours.router.lifespan_context(ours),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=ours), base_url="http://ours") as a,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=seed), base_url="http://seed") as b,
    ):
        yield a, b


async def real_conversation(ours: httpx.AsyncClient, token: str) -> str:
    """A conversation with one completed run, made through the API."""
    headers = {"Authorization": f"Bearer {token}"}
    created = await ours.post("/api/v1/conversations", headers=headers)
    cid: str = created.raise_for_status().json()["id"]
    reply = await ours.post(f"/api/v1/conversations/{cid}/message/?stream=false",
                            headers=headers, data={"content": "hello"}, timeout=60)  # fmt: skip
    reply.raise_for_status()
    return cid


# --------------------------------------------------------------------------- over HTTP


@dataclass
class Server:
    proc: Proc
    port: int
    prefix: str  # the path before /{endpoint}, with {cid}
    headers: dict[str, str]

    def url(self, cid: str, endpoint: str) -> str:
        return f"http://{HOST}:{self.port}{self.prefix.format(cid=cid)}/{endpoint}"


def http_servers(workdir: Path, redis_url: str, token: str) -> dict[str, Server]:
    """`turnstream serve --no-worker` (on our Redis and SQLite file) and the bare app."""
    proc, port = serve(workdir, turnstream_env(workdir, redis_url), "--no-worker")
    ours = Server(proc, port, "/api/v1/conversations/{cid}", {"Authorization": f"Bearer {token}"})
    bare_port = free_port()
    args = [sys.executable, str(Path(__file__).parent / "bare_lookup.py")]
    bare = Proc("bare", [*args, "--port", str(bare_port), "--redis-url", redis_url],
                workdir / "bare.log")  # fmt: skip
    wait_for(lambda: http_ok(bare_port), 30, "bare app", bare)
    return {"ours": ours, "bare": Server(bare, bare_port, "/{cid}", {})}


def over_http(servers: dict[str, Server], cid: str, a: argparse.Namespace) -> dict[str, Any]:
    """wrk against both servers, interleaved: `"{server} {endpoint} c={n}"` -> each repeat."""
    out: dict[str, list[dict[str, float]]] = {}
    for s in servers.values():  # warm-up: imports, pools, caches
        wrk(s.url(cid, "task-status"), connections=16, seconds=1, headers=s.headers)
    for rep in range(a.repeats):
        order = list(servers) if rep % 2 == 0 else list(reversed(servers))
        for connections in a.connections:
            for endpoint in ENDPOINTS:
                for name in order:
                    s = servers[name]
                    got = wrk(s.url(cid, endpoint), connections=connections,
                              seconds=a.seconds, headers=s.headers)  # fmt: skip
                    if got["non_2xx"]:
                        raise RuntimeError(f"{name} {endpoint}: {got['non_2xx']:.0f} non-2xx")
                    out.setdefault(f"{name} {endpoint} c={connections}", []).append(got)
                    log(f"  rep {rep + 1} {name:<4} {endpoint:<14} c={connections:<3} "
                        f"{got['rps']:8.0f} req/s  p50 {got['p50_ms']:6.2f}  "
                        f"p99 {got['p99_ms']:6.2f} ms")  # fmt: skip
    return out


def profile(ours: Server, cid: str, path: Path) -> None:
    """py-spy on the serve process while wrk drives task-status at 16 connections."""
    fmt = "speedscope" if path.suffix == ".json" else "raw"
    spy = subprocess.Popen(["py-spy", "record", "-p", str(ours.proc.pid), "-o", str(path),
                            "-f", fmt, "-r", "200", "-d", "12", "--nonblocking"])  # fmt: skip
    time.sleep(1)
    wrk(ours.url(cid, "task-status"), connections=16, seconds=10, headers=ours.headers)
    spy.wait(30)
    log(f"profile: {path}")


# --------------------------------------------------------------------------- report


def med(reps: list[dict[str, Any]], key: str) -> float | None:
    return median(r[key] for r in reps)


def goal(value: float | None, limit: float, at_least: bool = False) -> dict[str, Any]:
    met = value is not None and (value >= limit if at_least else value <= limit)
    return {"value": value, "goal": f"{'>=' if at_least else '<='} {limit:g}", "met": met}


def analyse(sizes: list[dict[str, Any]], http: dict[str, Any]) -> dict[str, Any]:
    """Medians, the ratios against the baselines of the same run, and the goals."""
    keys = ("p50_ms", "p95_ms", "p99_ms")
    lookups = [
        {"n": s["n"], "what": name, **{k: med(reps, k) for k in keys}}
        for s in sizes
        for name, reps in s["in_process"].items()
    ]

    def at(n: int, what: str, key: str) -> float | None:
        return next(r[key] for r in lookups if r["n"] == n and r["what"] == what)

    lo, hi = sizes[0]["n"], sizes[-1]["n"]
    speedups = [{"n": s["n"], "endpoint": e, "vs": m,
                 "p50": ratio(at(s["n"], f"{m} {e}", "p50_ms"), at(s["n"], f"ours {e}", "p50_ms")),
                 "p95": ratio(at(s["n"], f"{m} {e}", "p95_ms"), at(s["n"], f"ours {e}", "p95_ms"))}
                for s in sizes for m in ("keys", "scan") for e in ENDPOINTS]  # fmt: skip
    growth = {
        e: ratio(at(hi, f"ours {e}", "p95_ms"), at(lo, f"ours {e}", "p95_ms")) for e in ENDPOINTS
    }
    web = []
    for key in sorted({k.split(" ", 1)[1] for k in http}):
        ours, bare = http[f"ours {key}"], http[f"bare {key}"]
        row: dict[str, Any] = {"what": key}
        for side, reps in (("ours", ours), ("bare", bare)):
            row.update({f"{side} {k}": med(reps, k) for k in ("rps", "p50_ms", "p99_ms")})
        row["rps ratio"] = ratio(row["ours rps"], row["bare rps"])
        row["p99 ratio"] = ratio(row["ours p99_ms"], row["bare p99_ms"])
        web.append(row)
    worst = {
        m: min(x["p50"] for x in speedups if x["n"] == hi and x["vs"] == m)
        for m in ("keys", "scan")
    }
    goals = {
        f"in-process p95 at {hi:,} (worst endpoint), ms": goal(
            max(at(hi, f"ours {e}", "p95_ms") for e in ENDPOINTS), GOALS["in_process_p95_ms_max"]),
        f"p95 growth {lo:,} -> {hi:,}": goal(max(growth.values()), GOALS["p95_growth_max"]),
        f"p50 speedup vs KEYS at {hi:,}": goal(worst["keys"], GOALS["speedup_vs_keys_min"], True),
        f"p50 speedup vs SCAN at {hi:,}": goal(worst["scan"], GOALS["speedup_vs_scan_min"], True),
    }  # fmt: skip
    for c in sorted({int(r["what"].rsplit("=", 1)[1]) for r in web}):
        rps = min(r["rps ratio"] for r in web if r["what"].endswith(f"c={c}"))
        goals[f"HTTP req/s ours / bare at c={c} (worst endpoint)"] = goal(
            rps, GOALS["http_rps_ratio_min"], True)  # fmt: skip
        if c == 16:
            p99 = max(r["p99 ratio"] for r in web if r["what"].endswith("c=16"))
            goals["HTTP p99 ours / bare at c=16 (worst endpoint)"] = goal(
                p99, GOALS["http_p99_ratio_c16_max"])  # fmt: skip
    return {
        "lookups": lookups,
        "speedups": speedups,
        "growth_p95": growth,
        "http": web,
        "goals": goals,
    }


def report(analysis: dict[str, Any]) -> None:
    f = "{:,.3f}".format
    print("\nin process, one client (median over repeats)")
    print_table(["N", "what", "p50 ms", "p95 ms", "p99 ms"],
                [(f"{r['n']:,}", r["what"], f(r["p50_ms"]), f(r["p95_ms"]), f(r["p99_ms"]))
                 for r in analysis["lookups"]])  # fmt: skip
    print("\nspeedup over the seed design (baseline / ours)")
    print_table(["N", "endpoint", "vs", "p50", "p95"],
                [(f"{x['n']:,}", x["endpoint"], x["vs"].upper(), f"{x['p50']:,.0f}x",
                  f"{x['p95']:,.0f}x") for x in analysis["speedups"]])  # fmt: skip
    if analysis["http"]:
        print("\nover HTTP with wrk: turnstream serve against the bare FastAPI app")
        print_table(["endpoint, connections", "ours req/s", "bare req/s", "ratio",
                     "ours p50/p99 ms", "bare p50/p99 ms", "p99 ratio"],
                    [(r["what"], f"{r['ours rps']:,.0f}", f"{r['bare rps']:,.0f}",
                      f"{r['rps ratio']:.2f}", f"{r['ours p50_ms']:.1f} / {r['ours p99_ms']:.1f}",
                      f"{r['bare p50_ms']:.1f} / {r['bare p99_ms']:.1f}", f"{r['p99 ratio']:.2f}")
                     for r in analysis["http"]])  # fmt: skip
    print("\ngoals (issue 16, item 1; issue 5)")
    print_table(["goal", "value", "target", "met"],
                [(name, f"{g['value']:,.3f}", g["goal"], "yes" if g["met"] else "NO")
                 for name, g in analysis["goals"].items()])  # fmt: skip


# --------------------------------------------------------------------------- the run


async def measure(a: argparse.Namespace, workdir: Path, redis_url: str) -> dict[str, Any]:
    env = turnstream_env(workdir, redis_url)
    token = create_token(env, USER)  # migrates the SQLite file both apps share
    sizes: list[dict[str, Any]] = []
    http: dict[str, Any] = {}
    sync = redis.Redis.from_url(redis_url)
    async with apps(workdir, redis_url) as (ours, seed):
        filled = 0
        for n in a.sizes:
            fill_s = await asyncio.to_thread(fill, redis_url, filled, n)
            filled = n
            cid = await real_conversation(ours, token)
            log(f"N = {n:,}: {sync.dbsize():,} keys, conversation {cid}")
            numbers = await in_process(ours, seed, cid, token, a)
            sizes.append({"n": n, "dbsize": sync.dbsize(), "fill_s": round(fill_s, 1),
                          "used_memory": sync.info("memory")["used_memory"],
                          "in_process": numbers})  # fmt: skip
        if a.seconds > 0:
            servers = http_servers(workdir, redis_url, token)
            http = await asyncio.to_thread(over_http, servers, cid, a)
            if a.profile:
                profile(servers["ours"], cid, a.profile)
    return {"sizes": sizes, "http_repeats": http}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", help="runs of other conversations (1000,100000,1000000)")
    ap.add_argument("--quick", action="store_true", help="sizes 1000,20000, 1 repeat, 3 s wrk")
    ap.add_argument("--repeats", type=int, help="repeats per figure, the median reported (3)")
    ap.add_argument("--requests", type=int, default=400, help="in-process requests per repeat")
    ap.add_argument("--seconds", type=int, help="each wrk run; 0 skips HTTP (5)")
    ap.add_argument("--connections", default="16,64", help="wrk connections (16,64)")
    ap.add_argument("--profile", type=Path, help="py-spy the serve process into this file")
    a = ap.parse_args()
    default_sizes = "1000,20000" if a.quick else "1000,100000,1000000"
    a.sizes = sorted({int(float(x)) for x in (a.sizes or default_sizes).split(",")})
    a.repeats = a.repeats or (1 if a.quick else 3)
    a.seconds = a.seconds if a.seconds is not None else (3 if a.quick else 5)
    a.connections = [int(x) for x in a.connections.split(",")]
    return a


def main() -> None:
    a = parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="session_lookup_") as tmp:
        workdir = Path(tmp)
        try:
            _redis, url = start_redis(workdir)
            result = asyncio.run(measure(a, workdir, url))
        finally:
            Proc.stop_all()
    analysis = analyse(result["sizes"], result["http_repeats"])
    report(analysis)
    params = {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()}
    write_results("session_lookup", {"parameters": params, "goals_set": GOALS,
                                     "seconds": round(time.perf_counter() - started),
                                     **analysis, **result})  # fmt: skip
    log(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
