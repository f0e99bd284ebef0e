#!/usr/bin/env python
"""Benchmark: the cost of `active-session` and `task-status` as Redis fills up (issue 5).

    python bench/session_lookup.py [--sizes 1000,100000,1000000] [--redis-url URL] [--quick]

For each N in `--sizes` (ascending; each step adds to the previous fill) Redis holds the
keys of N runs of *other* conversations (stream with three events, `task:status`,
`chat:run` hash, `chat:active`, all with a TTL, named by `turnstream.keys`). One real
conversation then gets a completed run through the real app, and both endpoints are
timed under concurrent clients:

  ours      the real app, in process (httpx.ASGITransport) and over HTTP against a
            `python -m turnstream serve` subprocess on the same Redis and SQLite file;
  baseline  the old seed design as a tiny FastAPI app on redis.asyncio: find the run with
            `KEYS chat:stream:{cid}:*` (or a full `SCAN MATCH … COUNT 1000`), then read
            the first match (XREVRANGE COUNT 1 + GET its status); in process, like ours;
  no-sql    the real app with the caller/ownership dependencies overridden, to show how
            much of the latency is the per-request SQL work (token lookup + ownership).

Each figure is the median over `--repeats` repetitions of that repetition's percentile.
Without `--redis-url` a private `redis-server` is started on a free loopback port and
always stopped at the end. Results go to bench/results/session_lookup.json.
"""

# ruff: noqa: E402  (the imports below follow the sys.path line)
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import importlib.metadata
import json
import os
import platform
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench the working tree, installed or not

import hiredis
import httpx
import redis
import redis.asyncio
from fastapi import Depends, FastAPI
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from turnstream.api import deps
from turnstream.api.app import create_app
from turnstream.api.routes import sessions
from turnstream.api.schemas import ActiveSession, TaskStatus
from turnstream.config import Settings
from turnstream.errors import AccessDenied
from turnstream.keys import RunKeys
from turnstream.store import users
from turnstream.store.views import ConversationView

RESULTS = ROOT / "bench" / "results" / "session_lookup.json"
ENDPOINTS = ("active-session", "task-status")
GOALS = {
    "p95_in_process_1e6_ms_max": 3.0,
    "p95_growth_1e6_over_1e3_max": 1.5,
    "speedup_vs_keys_min": 500.0,
    "speedup_vs_scan_min": 2000.0,
}
USER = "bench"
FILLER_TTL_MS = 6 * 3600 * 1000  # long enough that nothing expires during a run
FILL_BATCH_COMMANDS = 10_000


# --------------------------------------------------------------------------- redis-server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready after {timeout:.0f} s")


def redis_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found:
        return found
    print("redis-server missing: apt-get install -y redis-server", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server"], check=True)
    return shutil.which("redis-server") or "/usr/bin/redis-server"


@contextlib.contextmanager
def private_redis(workdir: Path) -> Iterator[str]:
    """A throwaway redis-server on a free loopback port, without persistence."""
    port = free_port()
    log = (workdir / "redis.log").open("wb")
    proc = subprocess.Popen(
        [
            *(redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "no", "--dir", str(workdir), "--daemonize", "no"),
            *("--loglevel", "warning", "--protected-mode", "no"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        with redis.Redis(port=port, socket_connect_timeout=1) as r:
            wait_until(lambda: bool(r.ping()), 15, "redis-server")
        print(f"started redis-server pid {proc.pid} on {url}", flush=True)
        yield url
    finally:
        stop_process(proc, "redis-server")
        log.close()


def stop_process(proc: subprocess.Popen[bytes], name: str) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    print(f"stopped {name} (pid {proc.pid}, exit {proc.returncode})", flush=True)


# --------------------------------------------------------------------------- filling Redis


def _resp(*args: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


_CID = "@" * 36  # placeholders of the final width, replaced by %(cid)s / %(mid)s
_MID = "^" * 36


def _run_template() -> tuple[bytes, int]:
    """RESP for one finished run of another conversation, as `RunState` would leave it.

    Every id has a fixed width, so the whole run is encoded once and filled in with `%`.
    """
    k = RunKeys(_CID, f"conversation:other:{_MID}")
    ts, ttl = "1700000000000", str(FILLER_TTL_MS)
    ids = [f"{ts}-{i}" for i in range(3)]
    events = [
        ("queued", json.dumps({"sessionId": k.sid})),
        ("start", json.dumps({"worker": "bench-filler"})),
        ("end", json.dumps({"status": "completed", "messageId": _MID})),
    ]
    run = {
        "session_id": k.sid,
        "conversation_id": k.cid,
        "user_id": "other",
        "message_id": _MID,
        "user_message_id": _MID,
        "status": "completed",
        "created_at": ts,
        "started_at": ts,
        "ended_at": ts,
        "last_activity": ts,
        "last_id": ids[-1],
        "seq": "3",
        "worker": "bench-filler",
    }
    commands = [
        _resp("XADD", k.stream, sid, "type", t, "seq", str(i + 1), "ts", ts, "data", d)
        for i, (sid, (t, d)) in enumerate(zip(ids, events, strict=True))
    ]
    commands += [
        _resp("PEXPIRE", k.stream, ttl),
        _resp("SET", k.status, "completed", "PX", ttl),
        _resp("HSET", k.run, *[x for kv in run.items() for x in kv]),
        _resp("PEXPIRE", k.run, ttl),
        _resp("SET", k.active, k.sid, "PX", ttl),
    ]
    template = b"".join(commands).replace(b"%", b"%%")
    template = template.replace(_CID.encode(), b"%(cid)s").replace(_MID.encode(), b"%(mid)s")
    return template, len(commands)


def _filler_ids(i: int) -> dict[bytes, bytes]:
    # uuid-shaped, 36 characters, and never equal to a uuid7 of today
    return {
        b"cid": b"00000000-0000-7000-8000-%012x" % i,
        b"mid": b"00000000-0000-7000-9000-%012x" % i,
    }


def fill(url: str, start: int, stop: int) -> float:
    """Add runs start..stop-1 with raw RESP pipelines of ~10k commands, two batches in flight.

    redis-py's pipeline spends ~35 µs of Python per command here; pre-encoded RESP lets the
    1e6 fill run at the speed of redis-server instead.
    """
    template, per_run = _run_template()
    runs_per_batch = max(1, FILL_BATCH_COMMANDS // per_run)
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if parts.password:
        sock.sendall(_resp("AUTH", parts.password))
        assert sock.recv(1024).startswith(b"+OK")
    db = (parts.path or "/0").strip("/") or "0"
    sock.sendall(_resp("SELECT", db))
    assert sock.recv(1024).startswith(b"+OK")
    sizes: queue.Queue[int | None] = queue.Queue()
    inflight = threading.Semaphore(2)
    errors: list[BaseException | str] = []
    done = [0]

    def read_replies() -> None:
        reader = hiredis.Reader()
        try:
            while (expected := sizes.get()) is not None:
                got = 0
                while got < expected:
                    reply = reader.gets()
                    if reply is False:
                        chunk = sock.recv(1 << 20)
                        if not chunk:
                            raise ConnectionError("redis closed the connection")
                        reader.feed(chunk)
                        continue
                    if isinstance(reply, hiredis.ReplyError) and len(errors) < 5:
                        errors.append(str(reply))
                    got += 1
                done[0] += expected // per_run
                inflight.release()
        except BaseException as exc:  # surfaced by the sender
            errors.append(exc)
            inflight.release()

    reader_thread = threading.Thread(target=read_replies, daemon=True)
    reader_thread.start()
    t0 = last = time.perf_counter()
    total = stop - start
    try:
        for lo in range(start, stop, runs_per_batch):
            hi = min(stop, lo + runs_per_batch)
            batch = b"".join(template % _filler_ids(i) for i in range(lo, hi))
            if not inflight.acquire(timeout=120) or errors:
                raise RuntimeError(f"fill failed: {errors or 'no reply in 120 s'}")
            sizes.put((hi - lo) * per_run)
            sock.sendall(batch)
            now = time.perf_counter()
            if now - last >= 5:
                last = now
                print(
                    f"    filled {done[0] + start:>9,} / {stop:,} runs "
                    f"({done[0] / (now - t0):,.0f} runs/s)",
                    flush=True,
                )
        sizes.put(None)
        reader_thread.join(300)
        if errors or reader_thread.is_alive():
            raise RuntimeError(f"fill failed: {errors or 'reader still busy'}")
    finally:
        sock.close()
    elapsed = time.perf_counter() - t0
    print(f"    filled {stop:>9,} / {stop:,} runs in {elapsed:.1f} s "
          f"({total / elapsed:,.0f} runs/s)", flush=True)  # fmt: skip
    return elapsed


# --------------------------------------------------------------------------- the baseline app


def baseline_app(url: str) -> FastAPI:
    """The old seed design's lookup, endpoint for endpoint: list the conversation's streams
    (KEYS, or a full SCAN), take the first match, read its newest event and its status."""
    r = redis.asyncio.Redis.from_url(url, decode_responses=True, socket_timeout=120)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await r.aclose()

    app = FastAPI(lifespan=lifespan)

    async def find(method: str, cid: str) -> dict[str, Any] | None:
        pattern = f"chat:stream:{cid}:*"
        if method == "keys":
            found = await r.keys(pattern)
        else:
            found = [k async for k in r.scan_iter(match=pattern, count=1000)]
        if not found:
            return None
        stream = found[0]
        sid = stream[len(f"chat:stream:{cid}:") :]
        newest = await r.xrevrange(stream, count=1)
        status = await r.get(RunKeys(cid, sid).status)
        entry_id, entry = newest[0] if newest else ("0-0", {})
        ts = int(entry.get("ts") or entry_id.split("-")[0])
        return {"sid": sid, "status": status, "cursor": entry_id, "ts": ts}

    @app.get("/{method}/{cid}/active-session")
    async def active(method: str, cid: str) -> JSONResponse:
        run = await find(method, cid)
        if run is None:
            body = {"error": "No active session found", "conversationId": cid}
            return JSONResponse(body, status_code=404)
        state = {"queued": "active", "running": "active", "completed": "completed"}
        return JSONResponse(
            {
                "sessionId": run["sid"],
                "status": state.get(run["status"], "idle"),
                "cursor": run["cursor"],
                "conversationId": cid,
                "startedAt": run["ts"],
                "lastActivity": run["ts"],
            }
        )

    @app.get("/{method}/{cid}/task-status")
    async def task(method: str, cid: str) -> JSONResponse:
        run = await find(method, cid)
        if run is None:
            body = {"error": "No background task found", "conversationId": cid}
            return JSONResponse(body, status_code=404)
        return JSONResponse(
            {
                "isActive": run["status"] in ("queued", "running"),
                "sessionId": run["sid"],
                "estimatedCompletion": run["ts"],
                "conversationId": cid,
            }
        )

    return app


# --------------------------------------------------------------------------- measuring


@dataclass
class Sample:
    """One timed batch of requests to one URL."""

    latencies_ms: list[float]
    wall_s: float

    def pct(self, p: int) -> float:
        data = self.latencies_ms
        if len(data) == 1:
            return data[0]
        return statistics.quantiles(data, n=100, method="inclusive")[p - 1]


async def timed_requests(
    client: httpx.AsyncClient,
    url: str,
    headers: dict[str, str],
    *,
    requests: int,
    concurrency: int,
    warmup: int,
    expect: Callable[[httpx.Response], None],
) -> Sample:
    """`requests` GETs from `concurrency` clients at once, after `warmup` untimed ones."""

    async def run(count: int, out: list[float] | None) -> None:
        jobs = iter(range(count))

        async def client_loop() -> None:
            for _ in jobs:
                t0 = time.perf_counter_ns()
                response = await client.get(url, headers=headers)
                elapsed = (time.perf_counter_ns() - t0) / 1e6
                expect(response)
                if out is not None:
                    out.append(elapsed)

        await asyncio.gather(*(client_loop() for _ in range(min(concurrency, count))))

    if warmup:
        await run(warmup, None)
    latencies: list[float] = []
    t0 = time.perf_counter()
    await run(requests, latencies)
    return Sample(latencies, time.perf_counter() - t0)


def expect_ok(cid: str) -> Callable[[httpx.Response], None]:
    def check(response: httpx.Response) -> None:
        if response.status_code != 200:
            raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
        if response.json().get("conversationId") not in (cid, None):
            raise RuntimeError(f"{response.request.url}: wrong body {response.text}")

    return check


@dataclass
class Row:
    """One (N, endpoint, mode) cell of the table, over all repeats."""

    n: int
    endpoint: str
    mode: str
    concurrency: int
    samples: list[Sample] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def med(p: int) -> float:
            return statistics.median(s.pct(p) for s in self.samples)

        return {
            "n": self.n,
            "endpoint": self.endpoint,
            "mode": self.mode,
            "concurrency": self.concurrency,
            "p50_ms": med(50),
            "p95_ms": med(95),
            "p99_ms": med(99),
            "mean_ms": statistics.median(statistics.fmean(s.latencies_ms) for s in self.samples),
            "requests_per_repeat": [len(s.latencies_ms) for s in self.samples],
            "throughput_rps": statistics.median(
                len(s.latencies_ms) / s.wall_s for s in self.samples
            ),
            "repeats": [
                {"p50_ms": s.pct(50), "p95_ms": s.pct(95), "p99_ms": s.pct(99), "wall_s": s.wall_s}
                for s in self.samples
            ],
        }


# --------------------------------------------------------------------------- the turnstream side


@contextlib.asynccontextmanager
async def turnstream_app(settings: Settings) -> AsyncIterator[tuple[FastAPI, dict[str, str]]]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        async with application.state.runtime.sessions() as db:
            token = await users.create_token(db, user_id=USER)
        yield application, {"Authorization": f"Bearer {token}"}


async def real_conversation(http: httpx.AsyncClient, headers: dict[str, str]) -> str:
    """A conversation with one completed run, made through the API."""
    created = await http.post("/api/v1/conversations", headers=headers)
    created.raise_for_status()
    cid = created.json()["id"]
    reply = await http.post(
        f"/api/v1/conversations/{cid}/message/?stream=false",
        headers=headers,
        data={"content": "hello"},
        timeout=60,
    )
    if reply.status_code != 200:
        raise RuntimeError(f"POST message: {reply.status_code} {reply.text}")
    active = await http.get(f"/api/v1/conversations/{cid}/active-session", headers=headers)
    if active.status_code != 200 or active.json()["status"] != "completed":
        raise RuntimeError(f"active-session after the run: {active.status_code} {active.text}")
    return cid


@contextlib.contextmanager
def serve_subprocess(workdir: Path, redis_url: str, database_url: str) -> Iterator[str]:
    """`python -m turnstream serve` on a free port, sharing Redis and the SQLite file."""
    port = free_port()
    env = {
        **os.environ,
        "TURNSTREAM_REDIS_URL": redis_url,
        "TURNSTREAM_DATABASE_URL": database_url,
        "TURNSTREAM_DATA_DIR": str(workdir / "serve-data"),
        "TURNSTREAM_DEMO_WORDS": "5",
        "TURNSTREAM_DEMO_DELAY_MS": "0",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    log_path = workdir / "serve.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "turnstream", "serve", "--port", str(port), "--log-level=warning"],
        env=env,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"turnstream serve exited: {log_path.read_text()[-2000:]}")
            return httpx.get(f"{base}/health", timeout=1).status_code == 200

        wait_until(healthy, 60, "turnstream serve")
        print(f"started turnstream serve pid {proc.pid} on {base}", flush=True)
        yield base
    finally:
        stop_process(proc, "turnstream serve")
        log.close()


# The same two routes minus their SQL work, added to the app under /bench/ at run time (not
# through dependency_overrides: FastAPI re-analyses an override's signature on every request,
# which costs more than the query it replaces). `token-only` still looks the caller's token up
# in SQL but takes the conversation's owner from memory; `no-sql` skips both queries.
_VIEWS: dict[str, ConversationView] = {}


async def _view_no_sql(cid: Annotated[str, PathParam()]) -> ConversationView:
    return _VIEWS[cid]


async def _view_token_only(
    user: deps.CurrentUser, cid: Annotated[str, PathParam()]
) -> ConversationView:
    view = _VIEWS[cid]
    if view.user_id != user.id:
        raise AccessDenied()
    return view


NoSqlView = Annotated[ConversationView, Depends(_view_no_sql)]
TokenOnlyView = Annotated[ConversationView, Depends(_view_token_only)]


async def _active_no_sql(rt: deps.RuntimeDep, conversation: NoSqlView) -> ActiveSession:
    return await sessions.active_session(rt, conversation)


async def _task_no_sql(rt: deps.RuntimeDep, conversation: NoSqlView) -> TaskStatus:
    return await sessions.task_status(rt, conversation)


async def _active_token_only(rt: deps.RuntimeDep, conversation: TokenOnlyView) -> ActiveSession:
    return await sessions.active_session(rt, conversation)


async def _task_token_only(rt: deps.RuntimeDep, conversation: TokenOnlyView) -> TaskStatus:
    return await sessions.task_status(rt, conversation)


async def _noop() -> dict[str, str]:
    return {}


def add_breakdown_routes(application: FastAPI) -> None:
    routes = {
        "no-sql": (_active_no_sql, _task_no_sql),
        "token-only": (_active_token_only, _task_token_only),
    }
    for variant, (active, task) in routes.items():
        prefix = f"/bench/{variant}/conversations/{{cid}}"
        application.add_api_route(f"{prefix}/active-session", active, response_model=ActiveSession)
        application.add_api_route(f"{prefix}/task-status", task, response_model=TaskStatus)
    application.add_api_route("/bench/noop", _noop)


async def time_sql_calls(
    application: FastAPI, cid: str, headers: dict[str, str], count: int
) -> dict[str, Any]:
    """The two queries every request makes, called directly, one at a time: ms per call."""
    rt = application.state.runtime
    token = headers["Authorization"].split(" ", 1)[1]

    async def token_lookup() -> None:
        async with rt.sessions() as db:
            assert await users.user_for_token(db, token=token) is not None

    async def ownership() -> None:
        assert await rt.store.owned(cid=cid, user_id=USER) is not None

    async def redis_pair() -> None:  # what the route itself asks Redis
        sid = await rt.redis.get(RunKeys(cid, "").active)
        assert await rt.runs.get(RunKeys(cid, sid)) is not None

    out = {}
    for name, call in (
        ("token_lookup", token_lookup),
        ("ownership_check", ownership),
        ("redis_get_active_and_hgetall_run", redis_pair),
    ):
        for _ in range(count // 5):
            await call()
        latencies = []
        for _ in range(count):
            t0 = time.perf_counter_ns()
            await call()
            latencies.append((time.perf_counter_ns() - t0) / 1e6)
        sample = Sample(latencies, 0)
        out[name] = {"p50_ms": sample.pct(50), "p95_ms": sample.pct(95), "calls": count}
        print(f"   direct call {name:<33} p50 {sample.pct(50):7.3f}  p95 {sample.pct(95):7.3f} ms",
              flush=True)  # fmt: skip
    return out


# --------------------------------------------------------------------------- the run


@dataclass
class Params:
    sizes: list[int]
    repeats: int
    concurrency: int
    requests: int
    requests_c1: int
    baseline_concurrency: int
    baseline_budget_s: float
    baseline_min_requests: int
    baseline_max_requests: int
    http: bool
    sql_breakdown: bool
    loop: str


def baseline_requests(p: Params, probe_ms: float) -> int:
    """Enough requests for a median within the time budget: at most max, at least min."""
    fit = int(p.baseline_budget_s * 1000 / max(probe_ms, 0.001))
    return max(p.baseline_min_requests, min(p.baseline_max_requests, fit))


async def bench(p: Params, redis_url: str, workdir: Path) -> dict[str, Any]:
    database_url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        data_dir=workdir / "data",
        demo_words=5,
        demo_delay_ms=0,
    )
    sync_redis = redis.Redis.from_url(redis_url, decode_responses=True)
    sync_redis.flushdb()
    server_info = sync_redis.info("server")
    rows: dict[tuple[int, str, str], Row] = {}
    t_start = time.perf_counter()
    sql_calls: dict[str, Any] = {}
    per_size: list[dict[str, Any]] = []

    def row(n: int, endpoint: str, mode: str, concurrency: int) -> Row:
        return rows.setdefault((n, endpoint, mode), Row(n, endpoint, mode, concurrency))

    async with contextlib.AsyncExitStack() as stack:
        application, headers = await stack.enter_async_context(turnstream_app(settings))
        add_breakdown_routes(application)
        ours = await stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=application), base_url="http://ours"
            )
        )
        base_app = baseline_app(redis_url)
        await stack.enter_async_context(base_app.router.lifespan_context(base_app))
        base = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=base_app), base_url="http://base")
        )
        remote = None
        if p.http:
            base_url = stack.enter_context(serve_subprocess(workdir, redis_url, database_url))
            limits = httpx.Limits(max_connections=p.concurrency, max_keepalive_connections=64)
            remote = await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30)
            )

        filled = 0
        for n in p.sizes:
            print(f"\n== N = {n:,} runs of other conversations", flush=True)
            fill_s = await asyncio.to_thread(fill, redis_url, filled, n) if n > filled else 0.0
            filled = max(filled, n)
            cid = await real_conversation(ours, headers)
            view = await application.state.runtime.store.owned(cid=cid, user_id=USER)
            assert view is not None
            info = sync_redis.info("memory")
            dbsize = sync_redis.dbsize()
            print(f"   dbsize {dbsize:,} keys, used_memory {info['used_memory_human']}, "
                  f"real conversation {cid}", flush=True)  # fmt: skip
            ok = expect_ok(cid)
            gc.collect()
            await asyncio.sleep(1)  # let the fill's aftermath (rehashing, writes) settle

            # ours: every figure once per repeat, interleaved so that noise spreads evenly
            real = f"/api/v1/conversations/{cid}/{{endpoint}}"
            specs: list[tuple[str, httpx.AsyncClient, str, int, int]] = [
                ("in-process", ours, real, 1, p.requests_c1),
                ("in-process", ours, real, p.concurrency, p.requests),
            ]
            if remote is not None:
                specs.append(("http", remote, real, p.concurrency, p.requests))
            breakdown = p.sql_breakdown and n == p.sizes[-1]  # it does not vary with N
            if breakdown:
                _VIEWS[cid] = view
                for variant, conc, count in (
                    ("token-only", 1, p.requests_c1),
                    ("no-sql", 1, p.requests_c1),
                    ("no-sql", p.concurrency, p.requests),
                ):
                    url = f"/bench/{variant}/conversations/{cid}/{{endpoint}}"
                    specs.append((variant, ours, url, conc, count))
                specs.append(("framework floor", ours, "/bench/noop", 1, p.requests_c1))
            for rep in range(p.repeats):
                for mode, client, template, conc, count in specs:
                    endpoints = ENDPOINTS if "{endpoint}" in template else ("noop",)
                    for endpoint in endpoints:
                        s = await timed_requests(
                            client, template.format(endpoint=endpoint), headers,
                            requests=count, concurrency=conc,
                            warmup=0 if rep else min(200, max(conc * 4, count // 5)), expect=ok,
                        )  # fmt: skip
                        label = f"{mode} c={conc}"
                        row(n, endpoint, label, conc).samples.append(s)
                        print(f"   rep {rep + 1}/{p.repeats} {label:<21} {endpoint:<15}"
                              f" p50 {s.pct(50):9.3f}  p95 {s.pct(95):9.3f}  "
                              f"p99 {s.pct(99):9.3f} ms  ({len(s.latencies_ms)} req)",
                              flush=True)  # fmt: skip

            # baselines: far slower at large N, so a time budget decides the request count
            for method in ("keys", "scan"):
                for endpoint in ENDPOINTS:
                    url = f"/{method}/{cid}/{endpoint}"
                    probe = await timed_requests(
                        base, url, {}, requests=1, concurrency=1, warmup=0, expect=ok
                    )
                    count = baseline_requests(p, probe.latencies_ms[0])
                    count = max(count, p.baseline_concurrency)
                    label = f"baseline-{method} c={p.baseline_concurrency}"
                    r_ = row(n, endpoint, label, p.baseline_concurrency)
                    # fast ones: split over the repeats; slow ones: one batch, for one median
                    reps = p.repeats if count >= 30 * p.repeats else 1
                    for rep in range(reps):
                        # a slow probe (seconds) counts as the first timed request
                        reuse = reps == 1 and p.baseline_concurrency == 1 and count <= 20
                        s = await timed_requests(
                            base, url, {}, requests=count // reps - reuse,
                            concurrency=p.baseline_concurrency,
                            warmup=0 if rep or reuse else min(20, count // 10), expect=ok,
                        )  # fmt: skip
                        if reuse:
                            s.latencies_ms.insert(0, probe.latencies_ms[0])
                            s.wall_s += probe.wall_s
                        r_.samples.append(s)
                        print(f"   rep {rep + 1}/{reps} {label:<21} {endpoint:<15}"
                              f" p50 {s.pct(50):9.3f}  p95 {s.pct(95):9.3f}  "
                              f"p99 {s.pct(99):9.3f} ms  ({len(s.latencies_ms)} req)",
                              flush=True)  # fmt: skip
            if breakdown:
                sql_calls = await time_sql_calls(application, cid, headers, p.requests_c1)
            print(f"   N = {n:,} done at {time.perf_counter() - t_start:.0f} s", flush=True)
            per_size.append(
                {
                    "n": n,
                    "dbsize": dbsize,
                    "redis_used_memory": info["used_memory"],
                    "fill_seconds": round(fill_s, 2),
                    "conversation_id": cid,
                }
            )

    return {
        "sql_calls": sql_calls,
        "rows": [r.summary() for r in rows.values()],
        "sizes": per_size,
        "redis_version": server_info.get("redis_version"),
    }


# --------------------------------------------------------------------------- report


def find(rows: list[dict[str, Any]], n: int, endpoint: str, mode: str) -> dict[str, Any] | None:
    return next(
        (r for r in rows if r["n"] == n and r["endpoint"] == endpoint and r["mode"] == mode), None
    )


def analyse(result: dict[str, Any], p: Params) -> dict[str, Any]:
    rows = result["rows"]
    lo, hi = min(p.sizes), max(p.sizes)
    c1, cn = "in-process c=1", f"in-process c={p.concurrency}"
    base_c = p.baseline_concurrency
    out: dict[str, Any] = {"ratios": [], "growth": [], "sql_share": [], "goals": {}}
    for n in p.sizes:
        for endpoint in ENDPOINTS:
            # like for like: the baselines ran at baseline_concurrency, so compare with ours there
            ours_same = find(rows, n, endpoint, c1 if base_c == 1 else cn)
            ours_loaded = find(rows, n, endpoint, cn)
            for method in ("keys", "scan"):
                b = find(rows, n, endpoint, f"baseline-{method} c={base_c}")
                if not (b and ours_same and ours_loaded):
                    continue
                out["ratios"].append(
                    {
                        "n": n,
                        "endpoint": endpoint,
                        "baseline": method,
                        "ours_mode": ours_same["mode"],
                        "p50_ratio": b["p50_ms"] / ours_same["p50_ms"],
                        "p95_ratio": b["p95_ms"] / ours_same["p95_ms"],
                        # conservative: the baseline unloaded against ours under load
                        "p50_ratio_vs_ours_loaded": b["p50_ms"] / ours_loaded["p50_ms"],
                        "p95_ratio_vs_ours_loaded": b["p95_ms"] / ours_loaded["p95_ms"],
                    }
                )
            full = find(rows, n, endpoint, c1)
            no_owner = find(rows, n, endpoint, "token-only c=1")
            no_sql = find(rows, n, endpoint, "no-sql c=1")
            floor = find(rows, n, "noop", "framework floor c=1")
            if full and no_owner and no_sql:
                out["sql_share"].append(
                    {
                        "n": n,
                        "endpoint": endpoint,
                        "concurrency": 1,
                        "full_p50_ms": full["p50_ms"],
                        "without_ownership_query_p50_ms": no_owner["p50_ms"],
                        "without_any_sql_p50_ms": no_sql["p50_ms"],
                        "framework_floor_p50_ms": floor["p50_ms"] if floor else None,
                        "sql_share_of_p50": 1 - no_sql["p50_ms"] / full["p50_ms"],
                        "ownership_query_p50_ms": full["p50_ms"] - no_owner["p50_ms"],
                        "token_query_p50_ms": no_owner["p50_ms"] - no_sql["p50_ms"],
                    }
                )
    modes = sorted({r["mode"] for r in rows if r["mode"].startswith(("in-process", "http"))})
    for mode in modes:
        for endpoint in ENDPOINTS:
            a, b = find(rows, lo, endpoint, mode), find(rows, hi, endpoint, mode)
            if a and b:
                out["growth"].append(
                    {
                        "endpoint": endpoint,
                        "mode": mode,
                        "from_n": lo,
                        "to_n": hi,
                        "p95_ratio": b["p95_ms"] / a["p95_ms"],
                        "p50_ratio": b["p50_ms"] / a["p50_ms"],
                    }
                )

    if hi >= 1_000_000 and lo <= 1_000:
        goals = out["goals"]
        for mode in (c1, cn):
            worst = max(find(rows, hi, e, mode)["p95_ms"] for e in ENDPOINTS)  # type: ignore[index]
            goals[f"p95 in-process at {hi:,} ({mode}) <= 3 ms"] = {
                "value_ms": worst,
                "met": worst <= GOALS["p95_in_process_1e6_ms_max"],
            }
        for mode in modes:
            g = [x["p95_ratio"] for x in out["growth"] if x["mode"] == mode]
            goals[f"p95({hi:,}) / p95({lo:,}) <= 1.5 ({mode})"] = {
                "value": max(g),
                "met": max(g) <= GOALS["p95_growth_1e6_over_1e3_max"],
            }
        for method, key in (("keys", "speedup_vs_keys_min"), ("scan", "speedup_vs_scan_min")):
            r = [x for x in out["ratios"] if x["n"] == hi and x["baseline"] == method]
            worst = min(x["p50_ratio"] for x in r)
            goals[f"p50 speedup vs {method.upper()} at {hi:,} >= {GOALS[key]:,.0f}x"] = {
                "value": worst,
                "p95_ratio_min": min(x["p95_ratio"] for x in r),
                "conservative_vs_ours_loaded_p50": min(x["p50_ratio_vs_ours_loaded"] for x in r),
                "met": worst >= GOALS[key],
            }
    # what-if: the same routes with the caller and the owner already known (no SQL)
    nosql = [find(rows, hi, e, "no-sql c=1") for e in ENDPOINTS]
    if all(nosql) and base_c == 1:
        speed = {}
        for method in ("keys", "scan"):
            b = [find(rows, hi, e, f"baseline-{method} c=1") for e in ENDPOINTS]
            if all(b):
                speed[method] = min(
                    x["p50_ms"] / y["p50_ms"] for x, y in zip(b, nosql, strict=True)
                )  # type: ignore[index]
        if len(speed) == 2:
            out["without_sql"] = {
                "n": hi,
                "p95_ms": max(x["p95_ms"] for x in nosql),  # type: ignore[index]
                "speedup_vs_keys_p50": speed["keys"],
                "speedup_vs_scan_p50": speed["scan"],
            }
    return out


def ratio(x: float) -> str:
    return f"{x:>9,.0f}x" if x >= 100 else f"{x:>9.2f}x"


def print_report(result: dict[str, Any], analysis: dict[str, Any]) -> None:
    print("\n" + "=" * 96)
    print(f"{'N':>9}  {'endpoint':<15} {'mode':<24} {'p50 ms':>10} {'p95 ms':>10} "
          f"{'p99 ms':>10} {'requests':>9}")  # fmt: skip
    print("-" * 96)
    for r in sorted(result["rows"], key=lambda r: (r["n"], r["endpoint"], r["mode"])):
        total = sum(r["requests_per_repeat"])
        print(f"{r['n']:>9,}  {r['endpoint']:<15} {r['mode']:<24} {r['p50_ms']:>10.3f} "
              f"{r['p95_ms']:>10.3f} {r['p99_ms']:>10.3f} {total:>9}")  # fmt: skip
    print("\nspeedup = baseline / ours (baselines and ours at the same concurrency; "
          "last column: baseline p50 / ours p50 under load)")  # fmt: skip
    for x in analysis["ratios"]:
        print(f"  N={x['n']:>9,}  {x['endpoint']:<15} vs {x['baseline'].upper():<4}  "
              f"p50 {ratio(x['p50_ratio'])}  p95 {ratio(x['p95_ratio'])}  "
              f"(loaded {ratio(x['p50_ratio_vs_ours_loaded'])})")  # fmt: skip
    print("\ngrowth of ours, p95(largest N) / p95(smallest N)")
    for x in analysis["growth"]:
        print(f"  {x['mode']:<18} {x['endpoint']:<15} p95 x{x['p95_ratio']:.2f}  "
              f"p50 x{x['p50_ratio']:.2f}")  # fmt: skip
    if analysis["sql_share"]:
        print("\nper-request SQL (in-process, c=1, p50): full / without ownership query / "
              "without any SQL / framework floor")  # fmt: skip
        for x in analysis["sql_share"]:
            floor = x["framework_floor_p50_ms"]
            print(f"  N={x['n']:>9,}  {x['endpoint']:<15} {x['full_p50_ms']:.3f} / "
                  f"{x['without_ownership_query_p50_ms']:.3f} / "
                  f"{x['without_any_sql_p50_ms']:.3f} / {floor:.3f} ms  "
                  f"-> SQL is {100 * x['sql_share_of_p50']:.0f}% of p50")  # fmt: skip
    for name, x in result.get("sql_calls", {}).items():
        print(f"  direct call {name:<33} p50 {x['p50_ms']:.3f} ms  p95 {x['p95_ms']:.3f} ms")
    if analysis["goals"]:
        print("\ngoals (issue 5)")
        for name, g in analysis["goals"].items():
            value = g.get("value_ms", g.get("value"))
            extra = f"  (p95 ratio {g['p95_ratio_min']:,.0f}x)" if "p95_ratio_min" in g else ""
            print(f"  [{'MET' if g['met'] else 'NOT MET':>7}] {name}: {value:,.3f}{extra}")
    if analysis.get("without_sql"):
        w = analysis["without_sql"]
        print(f"\nthe same at N={w['n']:,} without the per-request SQL (no-sql c=1): "
              f"p95 {w['p95_ms']:.3f} ms, p50 speedup vs KEYS {w['speedup_vs_keys_p50']:,.0f}x, "
              f"vs SCAN {w['speedup_vs_scan_p50']:,.0f}x")  # fmt: skip


def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("fastapi", "starlette", "httpx", "redis", "hiredis", "uvicorn", "sqlalchemy"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "turnstream"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu": cpu,
        "loadavg_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "turnstream_commit": commit,
        "turnstream_dirty": bool(dirty),
    }


def parse_args(argv: list[str] | None = None) -> tuple[Params, argparse.Namespace]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", help="runs of other conversations (default 1000,100000,1000000)")
    ap.add_argument("--redis-url", help="use this Redis (it gets FLUSHDB!) instead of starting one")
    ap.add_argument("--quick", action="store_true", help="sizes 1000,20000, one repeat")
    ap.add_argument("--repeats", type=int, help="repeats per figure; the median is reported (3)")
    ap.add_argument("--concurrency", type=int, default=16, help="concurrent clients (16)")
    ap.add_argument("--requests", type=int, help="timed requests per figure at --concurrency")
    ap.add_argument("--requests-c1", type=int, help="timed requests per figure at concurrency 1")
    ap.add_argument("--baseline-concurrency", type=int, default=1)
    ap.add_argument("--baseline-budget", type=float, default=2.5, help="seconds per baseline")
    ap.add_argument("--no-http", action="store_true", help="skip the `turnstream serve` part")
    ap.add_argument("--no-sql-breakdown", action="store_true")
    ap.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop of this process; auto = uvloop if installed, as uvicorn",
    )
    ap.add_argument("--output", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    sizes = sorted({int(float(s)) for s in (a.sizes or "").split(",") if s.strip()}) or (
        [1000, 20000] if a.quick else [1000, 100_000, 1_000_000]
    )
    p = Params(
        sizes=sizes,
        repeats=a.repeats or (1 if a.quick else 3),
        concurrency=a.concurrency,
        requests=a.requests or (500 if a.quick else 700),
        requests_c1=a.requests_c1 or (300 if a.quick else 400),
        baseline_concurrency=a.baseline_concurrency,
        baseline_budget_s=a.baseline_budget,
        baseline_min_requests=5,
        baseline_max_requests=(a.requests or (500 if a.quick else 700)) * (a.repeats or 3),
        http=not a.no_http,
        sql_breakdown=not a.no_sql_breakdown,
        loop=a.loop,
    )
    return p, a


def main(argv: list[str] | None = None) -> int:
    p, a = parse_args(argv)
    loop = p.loop
    if loop in ("auto", "uvloop"):
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            loop = "uvloop"
        except ImportError:
            if loop == "uvloop":
                raise
            loop = "asyncio"
    p.loop = loop
    started = time.perf_counter()
    info = machine_info()
    print(f"session_lookup: sizes {p.sizes}, {p.repeats} repeats, concurrency {p.concurrency}, "
          f"loop {loop}, {info['nproc']} CPUs ({info['cpu']})", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="session_lookup_") as tmp:
        workdir = Path(tmp)
        with contextlib.ExitStack() as stack:
            url = a.redis_url or stack.enter_context(private_redis(workdir))
            result = asyncio.run(bench(p, url, workdir))
    analysis = analyse(result, p)
    info["loadavg_end"] = os.getloadavg()
    info["redis_version"] = result.pop("redis_version")
    report = {
        "benchmark": "session_lookup",
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_seconds": round(time.perf_counter() - started, 1),
        "machine": info,
        "parameters": {**asdict(p), "redis": "external" if a.redis_url else "private"},
        "goal_thresholds": GOALS,
        **result,
        **analysis,
    }
    print_report(result, analysis)
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {a.output} ({report['duration_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
