"""SSE fan-out benchmark: C clients, each following its own run at 20 events/s.

    python bench/fanout.py [--clients 100,250,500,1000,2000] [--seconds 10] [--quick]

What runs (all on loopback, all stopped at the end):

- a real `redis-server` and a real `turnstream serve` (SQLite in a temporary directory);
- a **producer** process (multiprocessing, spawn): it creates and claims one run per client
  with turnstream's own write path (`RunState.create/claim/append/finish`, the Lua scripts) and
  appends one `delta` per run every 50 ms on a fixed schedule. The delta's text is the JSON
  {"sched": scheduled ms, "n": i}. The runs' schedules are staggered evenly over the 50 ms period
  (run j starts at T0 + j·50/C ms), so the load is a steady 20·C events/s, not a burst every
  50 ms. It is a separate process so that its CPU never delays the load generator's clock;
  its own lag (time of the write - scheduled time) is measured and reported;
- the **load generator** (this process, one asyncio loop, uvloop when installed): C raw-socket
  HTTP/1.1 clients (`loop.create_connection` + a hand-written chunked/SSE parser) on
  `GET /api/v1/conversations/{cid}/resume/{sid}`. A client is ready once it has seen the run's
  `start` event; the schedule begins 1 s after the last one is ready. Per event: latency =
  arrival (time.time) - `sched`; lost = scheduled deltas never received; duplicated = a repeated
  `n` or a repeated `seq`; a client stops at `end`;
- the **ceiling**: bench/bare_sse_server.py (Starlette + sse-starlette under uvicorn, as turnstream
  is served, no Redis) streaming the same schedule from memory, measured by the same load
  generator in the same run, C by C, interleaved with turnstream.

The harness only talks to turnstream through its HTTP API and its Redis keys (the producer
uses `RunState`, which is the write path every agent run uses): it does not depend on how the
server reads streams.

A C passes when p99 ≤ 50 ms with 0 lost and 0 duplicated events. Results go to
bench/results/fanout.json; `--profile auto` (the default) records the serve process with py-spy,
if installed, at the smallest C where turnstream fails but the bare server passes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis  # imported here, once: a first import inside a trial would stall the loop

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
RATE_HZ = 20
PERIOD_MS = 1000 / RATE_HZ
P99_LIMIT_MS = 50.0
GOAL_RATIO = 0.8
USER_ID = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"

try:
    import orjson

    loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is optional
    loads = json.loads


def now_ms() -> float:
    return time.time() * 1000.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# /proc readings


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def proc_rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, summed over all cores."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]  # idle + iowait
    total = sum(parts[:8])  # guest time is already in user
    return (total - idle) / CLK_TCK, total / CLK_TCK


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


# ---------------------------------------------------------------------------------------------
# Child processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Proc:
    """A child in its own process group, so that stopping it takes its children too."""

    live: list[Proc] = []

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            args,
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        Proc.live.append(self)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        if not self._log.closed:
            self._log.close()
        if self in Proc.live:
            Proc.live.remove(self)

    def output(self, tail: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    @classmethod
    def stop_all(cls) -> None:
        for p in list(cls.live):
            p.stop()


def start_redis(tmp: Path) -> tuple[Proc, str]:
    port = free_port()
    args = [
        shutil.which("redis-server") or "/usr/bin/redis-server",
        "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
        "--dir", str(tmp), "--maxclients", "10000", "--daemonize", "no",
    ]  # fmt: skip
    proc = Proc("redis", args, tmp / "redis.log", {})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.5) as s:
            s.sendall(b"PING\r\n")
            if s.recv(64).startswith(b"+PONG"):
                return proc, f"redis://{HOST}:{port}/0"
        if not proc.alive():
            break
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not start:\n{proc.output()}")


@dataclass
class Ctx:
    args: argparse.Namespace
    tmp: Path
    redis: Proc
    redis_url: str
    db_url: str
    producer: Producer
    token: str = ""
    cids: list[str] = field(default_factory=list)

    def turnstream_env(self) -> dict[str, str]:
        return {
            "TURNSTREAM_REDIS_URL": self.redis_url,
            "TURNSTREAM_DATABASE_URL": self.db_url,
            "TURNSTREAM_DATA_DIR": str(self.tmp / "data"),
            "PYTHONPATH": str(ROOT),
        }


def start_server(ctx: Ctx, target: str, tag: str) -> tuple[Proc, int]:
    port = free_port()
    if target == "turnstream":
        args = [sys.executable, "-m", "turnstream", "serve", "--port", str(port)]
        args += ["--log-level", "warning"]
        env = ctx.turnstream_env()
    else:
        args = [sys.executable, str(ROOT / "bench" / "bare_sse_server.py"), "--port", str(port)]
        env = {}
    return Proc(target, args, ctx.tmp / f"{target}-{tag}.log", env), port


async def wait_http(proc: Proc, port: int, path: str = "/health", wait_s: float = 60) -> None:
    import aiohttp

    deadline = time.monotonic() + wait_s
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited early:\n{proc.output()}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(f"http://{HOST}:{port}{path}") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready after {wait_s}s:\n{proc.output()}")


# ---------------------------------------------------------------------------------------------
# Producer: a separate process that writes the runs' events into Redis on schedule


def _pct(values: list[float], q: float) -> float | None:
    """The q-quantile (nearest rank) of values that are already sorted."""
    if not values:
        return None
    return values[min(len(values) - 1, int(q * len(values)))]


def _summary(values: list[float]) -> dict[str, float | None]:
    values.sort()
    out = {f"p{k}": _pct(values, q) for k, q in (("50", 0.5), ("99", 0.99))}
    out["max"] = values[-1] if values else None
    return {k: (round(v, 2) if v is not None else None) for k, v in out.items()}


class RespConnection(asyncio.Protocol):
    """One pipelined RESP connection: commands go out at once, replies come back in order.

    Parsing is hiredis' (C). It answers like redis-py with decode_responses=True.
    """

    def __init__(self) -> None:
        import hiredis

        self.reader = hiredis.Reader(encoding="utf-8")
        self.reply_error = hiredis.ReplyError
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            fut = self.waiters.popleft()
            if fut.done():
                continue
            if isinstance(reply, self.reply_error):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(ConnectionError(f"redis connection lost: {exc!r}"))

    def call(self, *args: Any) -> asyncio.Future[Any]:
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        assert self.transport is not None
        self.transport.write(b"".join(out))
        fut = self.loop.create_future()
        self.waiters.append(fut)
        return fut


class FastRedis:
    """Just enough of a Redis client for `RunState`: register_script, then call the scripts.

    RunState's scripts, keys and arguments are used unchanged (EVALSHA); only the client
    library differs: redis-py 8 spends ~170 µs of CPU per append on this machine, which would
    make the producer, not the server, the bottleneck on two cores.
    """

    def __init__(self, conn: RespConnection) -> None:
        self.conn = conn
        self.scripts: list[_FastScript] = []

    @classmethod
    async def connect(cls, url: str) -> FastRedis:
        from urllib.parse import urlparse

        u = urlparse(url)
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(RespConnection, u.hostname, u.port or 6379)
        db = (u.path or "/0").strip("/") or "0"
        if db != "0":
            await conn.call("SELECT", db)
        return cls(conn)

    def register_script(self, text: str) -> _FastScript:
        script = _FastScript(self.conn, text)
        self.scripts.append(script)
        return script

    async def load_scripts(self) -> None:
        for script in self.scripts:
            await self.conn.call("SCRIPT", "LOAD", script.text)

    async def delete(self, *keys: str) -> int:
        return await self.conn.call("DEL", *keys)

    async def aclose(self) -> None:
        if self.conn.transport is not None:
            self.conn.transport.close()


class _FastScript:
    def __init__(self, conn: RespConnection, text: str) -> None:
        import hashlib

        self.conn = conn
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()

    async def __call__(self, keys: Any = (), args: Any = (), client: Any = None) -> Any:
        try:
            return await self.conn.call("EVALSHA", self.sha, len(keys), *keys, *args)
        except self.conn.reply_error as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            await self.conn.call("SCRIPT", "LOAD", self.text)
            return await self.conn.call("EVALSHA", self.sha, len(keys), *keys, *args)


def producer_main(conn: Any, redis_url: str, client: str) -> None:
    """Serve commands from the orchestrator: prepare, run, cleanup, stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator decides when we stop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    from redis.asyncio import Redis

    from turnstream.live.state import RunState

    redis: Any
    if client == "fast":
        redis = loop.run_until_complete(FastRedis.connect(redis_url))
    else:
        # redis-py 8 caps a pool at 100 connections and then raises: a lagging producer may
        # have more appends than that in flight, so lift the cap.
        redis = Redis.from_url(
            redis_url, decode_responses=True, socket_timeout=60, max_connections=100_000
        )
    runs = RunState(redis, maxlen=10_000, ttl_seconds=900)
    if client == "fast":
        loop.run_until_complete(redis.load_scripts())
    handlers = {"prepare": _prepare, "run": _produce, "cleanup": _cleanup, "oneshot": _oneshot}
    try:
        while True:
            cmd, kwargs = conn.recv()
            if cmd == "stop":
                break
            try:
                conn.send(("ok", loop.run_until_complete(handlers[cmd](runs, **kwargs))))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    finally:
        loop.run_until_complete(redis.aclose())
        loop.close()


async def _gather_batched(coros: list[Any], size: int = 200) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(coros), size):
        out += await asyncio.gather(*coros[i : i + size])
    return out


async def _prepare(runs: Any, specs: list[tuple[str, str, str, float]], lease_s: float) -> int:
    """Create and claim one run per spec (cid, sid, message id, offset ms)."""
    from turnstream.keys import RunKeys

    async def one(cid: str, sid: str, mid: str) -> None:
        k = RunKeys(cid, sid)
        created, other = await runs.create(
            k,
            user_id=USER_ID,
            message_id=mid,
            user_message_id="",
            message="x",
            enqueue=False,
            max_active=1_000_000,
        )
        if not created:
            raise RuntimeError(f"conversation {cid} still has an active run {other}")
        if not await runs.claim(k, worker="bench-producer", lease_seconds=lease_s):
            raise RuntimeError(f"could not claim {sid}")

    await _gather_batched([one(cid, sid, mid) for cid, sid, mid, _ in specs])
    return len(specs)


async def _produce(
    runs: Any, specs: list[tuple[str, str, str, float]], t0_ms: float, count: int
) -> dict[str, Any]:
    """One task per run: `count` deltas at t0 + offset + i·50 ms, then `end`."""
    from turnstream import events
    from turnstream.keys import RunKeys
    from turnstream.live.status import RunStatus

    loop = asyncio.get_running_loop()
    mono0 = loop.time() + (t0_ms - now_ms()) / 1000  # wall schedule -> loop clock, once
    issue_lag: list[float] = []  # when the append was sent - scheduled time
    ack_lag: list[float] = []  # when Redis answered - scheduled time
    problems: list[str] = []
    cpu0 = os.times()

    async def one(cid: str, sid: str, mid: str, offset: float) -> None:
        k = RunKeys(cid, sid)
        try:
            for n in range(count):
                due = offset + n * PERIOD_MS
                delay = mono0 + due / 1000 - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                sched = round(t0_ms + due, 1)
                text = json.dumps({"sched": sched, "n": n}, separators=(",", ":"))
                sent = now_ms()
                stop = await runs.append(k, [events.delta(text)])
                acked = now_ms()
                issue_lag.append(sent - sched)
                ack_lag.append(acked - sched)
                if stop:
                    problems.append(f"{sid}: append said stop/ended at n={n}")
                    break
        except Exception as exc:
            problems.append(f"{sid}: {exc!r}")
        finally:
            await runs.finish(k, status=RunStatus.COMPLETED, message_id=mid)

    await asyncio.gather(*(one(*spec) for spec in specs))
    cpu1 = os.times()
    return {
        "appends": len(ack_lag),
        "issue_lag_ms": _summary(issue_lag),
        "ack_lag_ms": _summary(ack_lag),
        "cpu_s": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 3),
        "problems": problems[:20],
        "problem_count": len(problems),
    }


async def _oneshot(runs: Any, spec: tuple[str, str, str, float]) -> None:
    """A complete run (start, one delta, end) to follow once before a trial."""
    from turnstream import events
    from turnstream.keys import RunKeys
    from turnstream.live.status import RunStatus

    cid, sid, mid, _ = spec
    await _prepare(runs, [spec], lease_s=60)
    await runs.append(RunKeys(cid, sid), [events.delta('{"sched":0,"n":0}')])
    await runs.finish(RunKeys(cid, sid), status=RunStatus.COMPLETED, message_id=mid)


async def _cleanup(runs: Any, specs: list[tuple[str, str, str, float]]) -> int:
    from turnstream.keys import RunKeys

    async def one(cid: str, sid: str) -> None:
        k = RunKeys(cid, sid)
        await runs.redis.delete(k.stream, k.run, k.status, k.cancel, k.active)

    await _gather_batched([one(cid, sid) for cid, sid, _mid, _off in specs])
    return len(specs)


class Producer:
    def __init__(self, redis_url: str, client: str) -> None:
        mpc = mp.get_context("spawn")
        self.conn, child = mpc.Pipe()
        self.proc = mpc.Process(target=producer_main, args=(child, redis_url, client), daemon=True)
        self.proc.start()
        self.pid = self.proc.pid

    def send(self, cmd: str, **kwargs: Any) -> None:
        self.conn.send((cmd, kwargs))

    async def result(self) -> Any:
        status, value = await asyncio.to_thread(self.conn.recv)
        if status != "ok":
            raise RuntimeError(f"producer failed:\n{value}")
        return value

    async def call(self, cmd: str, **kwargs: Any) -> Any:
        self.send(cmd, **kwargs)
        return await self.result()

    def stop(self) -> None:
        if self.proc.is_alive():
            with contextlib.suppress(OSError, BrokenPipeError):
                self.send("stop")
            self.proc.join(10)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join(5)


# ---------------------------------------------------------------------------------------------
# Load generator: raw-socket SSE clients


class Sink:
    """What all clients of one trial report into."""

    def __init__(self) -> None:
        self.lat: list[float] = []  # arrival - scheduled time (ms)
        self.lat_ts: list[float] = []  # arrival - the event's `ts` (when it was written)
        self.received = 0
        self.done = 0
        self.ready = 0
        self.last_arrival = 0.0
        # The worst latency per 100 ms of the schedule: shows when (and how often) stalls come.
        self.t0 = 0.0
        self.worst: list[float] = []

    def start(self, t0: float, seconds: float) -> None:
        self.t0 = t0
        self.worst = [0.0] * (int(seconds * 10) + 1)


class SSEClient(asyncio.Protocol):
    def __init__(self, request: bytes, expected: int, sink: Sink) -> None:
        self.request = request
        self.expected = expected
        self.sink = sink
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.headers_done = False
        self.status = 0
        self.chunked = False
        self.raw = b""
        self.chunk_left = 0
        self.skip = 0
        self.sse = b""
        self.seen_n = bytearray(expected)
        self.seen_seq: set[int] = set()
        self.received = 0
        self.dup_n = 0
        self.dup_seq = 0
        self.out_of_order = 0
        self.last_n = -1
        self.first_latency: float | None = None
        self.cut = False  # closed by the harness at the deadline
        self.is_ready = False
        self.ended = False
        self.finished = False
        self.error: str | None = None
        self.ready_fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.done_fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time() * 1000.0
        if not self.headers_done:
            self.head += data
            i = self.head.find(b"\r\n\r\n")
            if i < 0:
                return
            lines = self.head[:i].split(b"\r\n")
            data, self.head = self.head[i + 4 :], b""
            self.headers_done = True
            self.status = int(lines[0].split()[1])
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
                    self.chunked = True
            if self.status != 200:
                self.fail(f"HTTP {self.status}: {data[:200]!r}")
                return
        if self.chunked:
            data = self._dechunk(data)
        if data:
            self._feed(data, now)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended:
            self.fail(f"connection lost before `end`: {exc!r}")
        self._finish()

    # -- parsing
    def _dechunk(self, data: bytes) -> bytes:
        raw = self.raw + data if self.raw else data
        out = []
        pos, size = 0, len(raw)
        while pos < size:
            if self.chunk_left:
                take = min(self.chunk_left, size - pos)
                out.append(raw[pos : pos + take])
                pos += take
                self.chunk_left -= take
                if not self.chunk_left:
                    self.skip = 2
            elif self.skip:
                take = min(self.skip, size - pos)
                pos += take
                self.skip -= take
            else:
                j = raw.find(b"\r\n", pos)
                if j < 0:
                    break
                length = int(raw[pos:j].split(b";", 1)[0], 16)
                pos = j + 2
                if length == 0:
                    pos = size
                    break
                self.chunk_left = length
        self.raw = raw[pos:]
        return b"".join(out)

    def _feed(self, data: bytes, now: float) -> None:
        buf = self.sse + data
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        blocks = buf.split(b"\n\n")
        self.sse = blocks.pop()
        for block in blocks:
            payload = [
                line[6:] if line.startswith(b"data: ") else line[5:]
                for line in block.split(b"\n")
                if line.startswith(b"data:")
            ]
            if payload:  # else a comment (": ping") or an empty block
                self._event(loads(b"\n".join(payload)), now)

    def _event(self, d: dict[str, Any], now: float) -> None:
        seq = d.get("seq")
        if seq in self.seen_seq:
            self.dup_seq += 1
        else:
            self.seen_seq.add(seq)
        etype = d.get("type")
        if etype == "delta":
            inner = loads(d["text"])
            n = inner["n"]
            if 0 <= n < self.expected:
                if self.seen_n[n]:
                    self.dup_n += 1
                    return
                self.seen_n[n] = 1
            if n != self.last_n + 1:
                self.out_of_order += 1
            self.last_n = n
            self.received += 1
            sink = self.sink
            sink.received += 1
            sched = inner["sched"]
            latency = now - sched
            if n == 0:
                self.first_latency = latency
            sink.lat.append(latency)
            slot = int((sched - sink.t0) / 100)
            if 0 <= slot < len(sink.worst) and latency > sink.worst[slot]:
                sink.worst[slot] = latency
            sink.lat_ts.append(now - d["ts"])
            sink.last_arrival = now
        elif etype == "start":
            self.is_ready = True
            self.sink.ready += 1
            if not self.ready_fut.done():
                self.ready_fut.set_result(True)
        elif etype == "end":
            self.ended = True
            if self.transport is not None:
                self.transport.close()
            self._finish()
        elif etype == "error" and self.error is None:
            self.error = f"error event: {d}"

    def fail(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
        if self.transport is not None:
            self.transport.close()
        self._finish()

    def _finish(self) -> None:
        if not self.ready_fut.done():
            self.ready_fut.set_result(False)
        if not self.finished:
            self.finished = True
            self.sink.done += 1
            self.done_fut.set_result(self.ended)


async def connect_all(
    port: int,
    paths: list[str],
    headers: str,
    expected: int,
    sink: Sink,
    wait_s: float,
    concurrency: int,
) -> list[SSEClient]:
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(concurrency)
    clients: list[SSEClient] = []
    for path in paths:
        req = (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAccept: text/event-stream\r\n"
            f"Cache-Control: no-cache\r\n{headers}\r\n"
        ).encode()
        clients.append(SSEClient(req, expected, sink))

    async def one(c: SSEClient) -> None:
        async with sem:
            try:
                await loop.create_connection(lambda: c, HOST, port)
                await asyncio.wait_for(asyncio.shield(c.ready_fut), wait_s)
            except (OSError, TimeoutError) as exc:
                c.fail(f"connect: {exc!r}")

    await asyncio.gather(*(one(c) for c in clients))
    return clients


async def loop_lag_probe(stop: asyncio.Event, out: list[float]) -> None:
    """How late this loop wakes up: if the load generator itself saturates, it shows here."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(0.01)
        out.append((loop.time() - t - 0.01) * 1000)


# ---------------------------------------------------------------------------------------------
# One trial


async def wait_for_quiet(label: str, max_wait: float, limit: float = 0.3) -> tuple[float, float]:
    """Wait (up to max_wait s) until the machine has been nearly idle for a second.

    Between trials nothing of ours runs, so what is busy belongs to others (tests, other
    benchmarks on the same 2 cores). Returns (seconds waited, cores busy in the last second).
    """
    t0 = time.monotonic()
    said = 0.0
    while True:
        b0, _ = machine_cpu()
        await asyncio.sleep(1)
        busy = machine_cpu()[0] - b0
        waited = time.monotonic() - t0
        if busy < limit or waited >= max_wait:
            if busy >= limit:
                log(f"{label} machine still busy ({busy:.2f} cores): going ahead anyway")
            return round(waited - 1, 1), round(busy, 2)
        if waited - said >= 10 or said == 0:
            said = waited
            log(f"{label} waiting for the machine to calm down ({busy:.2f} cores busy elsewhere)")


def redis_commandstats(url: str) -> dict[str, dict[str, float]]:
    """INFO commandstats: calls and µs spent per command, so far."""
    with redis.Redis.from_url(url, socket_timeout=5) as r:
        return {k.removeprefix("cmdstat_"): v for k, v in r.info("commandstats").items()}


def _commandstats_delta(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], wall: float
) -> dict[str, dict[str, float]]:
    """Per command during the window: calls/s and µs of Redis time per call."""
    out = {}
    for name, a in after.items():
        b = before.get(name, {})
        calls = a.get("calls", 0) - b.get("calls", 0)
        usec = a.get("usec", 0) - b.get("usec", 0)
        if calls > 0:
            out[name] = {
                "calls_per_s": round(calls / wall, 1),
                "usec_per_call": round(usec / calls, 2),
                "redis_cpu_pct": round(100 * usec / 1e6 / wall, 1),
            }
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["redis_cpu_pct"]))


def _snapshot(pids: dict[str, int]) -> dict[str, float]:
    snap = {name: proc_cpu_seconds(pid) for name, pid in pids.items()}
    snap["machine_busy"], snap["machine_total"] = machine_cpu()
    snap["wall"] = time.monotonic()
    return snap


async def run_trial(ctx: Ctx, target: str, clients_n: int, *, profile: bool = False) -> dict:
    args = ctx.args
    count = round(args.seconds * RATE_HZ)
    tag = f"c{clients_n}{'-profile' if profile else ''}"
    label = f"{target:<10} C={clients_n:<5}"
    quiet_wait_s, busy_before = await wait_for_quiet(label, args.quiet_wait)
    server, port = start_server(ctx, target, tag)
    sink = Sink()
    clients: list[SSEClient] = []
    specs: list[tuple[str, str, str, float]] = []
    producing = False
    spy: subprocess.Popen | None = None
    try:
        await wait_http(server, port)
        if target == "turnstream":  # warm the auth + database path once
            await warm_up(port, ctx.token)
            if args.warm_follow:
                await warm_follow(ctx, port)
        await asyncio.sleep(0.5)
        rss0 = proc_rss_kb(server.pid)
        offsets = [j * PERIOD_MS / clients_n for j in range(clients_n)]
        connect_timeout = 60 + clients_n * 0.05
        t_connect = time.monotonic()
        if target == "turnstream":
            from turnstream.ids import session_id, uuid7

            for j in range(clients_n):
                mid = uuid7()
                specs.append((ctx.cids[j], session_id(USER_ID, mid), mid, offsets[j]))
            lease = args.seconds + 120  # outlives the run: the reaper must not end it
            await ctx.producer.call("prepare", specs=specs, lease_s=lease)
            paths = [
                f"/api/v1/conversations/{cid}/resume/{quote(sid, safe=':@')}"
                for cid, sid, _, _ in specs
            ]
            headers = f"Authorization: Bearer {ctx.token}\r\n"
            clients = await connect_all(
                port, paths, headers, count, sink, connect_timeout, args.connect_concurrency
            )
            t0 = now_ms() + 1000
            sink.start(t0, args.seconds)
            ctx.producer.send("run", specs=specs, t0_ms=t0, count=count)
            producing = True
        else:
            t0 = now_ms() + 1500 + 3 * clients_n
            sink.start(t0, args.seconds)
            paths = [
                f"/stream?start={t0 + off:.1f}&count={count}&period={PERIOD_MS:g}"
                for off in offsets
            ]
            clients = await connect_all(
                port, paths, "", count, sink, connect_timeout, args.connect_concurrency
            )
        connect_s = time.monotonic() - t_connect
        ready = sum(c.is_ready for c in clients)
        late_start = now_ms() > t0
        rss_connected = proc_rss_kb(server.pid)
        log(
            f"{label} {ready}/{clients_n} clients ready in {connect_s:.1f}s"
            + (" (after the schedule's start!)" if late_start else "")
        )

        # -- the measured window: from T0 until every client saw `end` (or the deadline).
        # Whatever could stall this loop (a thread, a fork) happens before T0.
        pids = {"server": server.pid, "redis": ctx.redis.pid, "loadgen": os.getpid()}
        if target == "turnstream":
            pids["producer"] = ctx.producer.pid
        if profile:
            spy = start_py_spy(ctx, server.pid, target, clients_n)
        stats0 = await asyncio.to_thread(redis_commandstats, ctx.redis_url)
        await asyncio.sleep(max(0.0, (t0 - now_ms()) / 1000))
        s0 = _snapshot(pids)
        stop_probe = asyncio.Event()
        lags: list[float] = []
        probe = asyncio.create_task(loop_lag_probe(stop_probe, lags))
        deadline = t0 + args.seconds * 1000 + args.grace * 1000
        rss_peak = rss_connected
        next_report = time.monotonic() + 5
        while sink.done < clients_n and now_ms() < deadline:
            await asyncio.sleep(0.25)
            rss_peak = max(rss_peak, proc_rss_kb(server.pid))
            if time.monotonic() >= next_report:
                next_report += 5
                elapsed = (now_ms() - t0) / 1000
                due = clients_n * min(count, max(0, int(elapsed * RATE_HZ)))
                log(
                    f"{label} +{elapsed:4.1f}s received {sink.received}/{due} due "
                    f"({clients_n * count} in all), {sink.done} clients done"
                )
        s1 = _snapshot(pids)
        stats1 = await asyncio.to_thread(redis_commandstats, ctx.redis_url)
        stop_probe.set()
        await probe
        server_alive = server.alive()
        producer_result = await ctx.producer.result() if producing else None
        producing = False
    finally:
        for c in clients:
            if not c.finished:  # still streaming at the deadline: late, not (yet) lost
                c.cut = True
                c.fail("cut at the deadline, still streaming")
            if c.transport is not None and not c.transport.is_closing():
                c.transport.close()
        if producing:  # an exception mid-trial: still collect the producer's answer
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ctx.producer.result(), args.seconds + 60)
        server.stop()
        if spy is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(30)
        if specs:
            await ctx.producer.call("cleanup", specs=specs)

    wall = s1["wall"] - s0["wall"]

    def cpu_pct(name: str) -> float | None:
        return round(100 * (s1[name] - s0[name]) / wall, 1) if name in s0 else None

    busy_cores = (s1["machine_busy"] - s0["machine_busy"]) / wall
    ours = sum(s1[n] - s0[n] for n in pids) / wall
    expected = clients_n * count
    received = sum(c.received for c in clients)
    dup = sum(c.dup_n + c.dup_seq for c in clients)
    errors = Counter(c.error.split(":")[0] for c in clients if c.error)
    samples = [c.error for c in clients if c.error][:5]
    lat = _summary_full(sink.lat)
    lat_ts = _summary_full(sink.lat_ts)
    span_s = max(args.seconds, (sink.last_arrival - t0) / 1000) if sink.received else args.seconds
    # Lost: never delivered on a stream that ended by itself (`end`, an error, a close).
    # Undelivered: still to come on a stream the harness cut at the deadline (late).
    lost = sum(count - c.received for c in clients if not c.cut)
    undelivered = sum(count - c.received for c in clients if c.cut)
    passed = (
        lat["p99"] is not None
        and lat["p99"] <= P99_LIMIT_MS
        and lost == 0
        and undelivered == 0
        and dup == 0
        and server_alive
    )
    lag_sorted = sorted(lags)
    other = busy_cores - ours
    result = {
        "target": target,
        "clients": clients_n,
        "seconds": args.seconds,
        "events_per_client": count,
        "pass": passed,
        "latency_ms": lat,
        "latency_from_ts_ms": lat_ts,
        "worst_latency_per_100ms": [round(x, 1) for x in sink.worst],
        "first_event_latency_ms": _summary_full(
            [c.first_latency for c in clients if c.first_latency is not None]
        ),
        "expected": expected,
        "received": received,
        "lost": lost,
        "undelivered_at_deadline": undelivered,
        "clients_cut_at_deadline": sum(c.cut for c in clients),
        "duplicated": dup,
        "duplicated_n": sum(c.dup_n for c in clients),
        "duplicated_seq": sum(c.dup_seq for c in clients),
        "out_of_order": sum(c.out_of_order for c in clients),
        "clients_ready": sum(c.is_ready for c in clients),
        "clients_ended": sum(c.ended for c in clients),
        "client_errors": dict(errors),
        "client_error_samples": samples,
        "events_per_s": round(received / span_s, 1),
        "events_per_s_scheduled": clients_n * RATE_HZ,
        "connect_s": round(connect_s, 2),
        "late_start": late_start,
        "window_s": round(wall, 2),
        "quiet_wait_s": quiet_wait_s,
        "busy_cores_before": busy_before,
        "server_cpu_pct": cpu_pct("server"),
        "redis_cpu_pct": cpu_pct("redis"),
        "producer_cpu_pct": cpu_pct("producer"),
        "loadgen_cpu_pct": cpu_pct("loadgen"),
        "machine_busy_cores": round(busy_cores, 2),
        "other_busy_cores": round(other, 2),
        # More than a quarter of a core busy elsewhere: the figures are disturbed.
        "contended": other > 0.25,
        # The same verdict on arrival - `ts` (when the producer sent the append): without
        # the producer's own lag.
        "pass_from_ts": (
            lat_ts["p99"] is not None and lat_ts["p99"] <= P99_LIMIT_MS and lost == 0 and dup == 0
        ),
        "loadgen_loop_lag_ms": {"p99": _pct(lag_sorted, 0.99), "max": _pct(lag_sorted, 1.0)},
        "server_rss_mb": {
            "idle": round(rss0 / 1024, 1),
            "connected": round(rss_connected / 1024, 1),
            "peak": round(rss_peak / 1024, 1),
        },
        "rss_per_conn_kb": round((rss_peak - rss0) / clients_n, 1),
        # CPU time per event delivered in the window, per process (µs).
        "cpu_us_per_event": {
            name: round((s1[name] - s0[name]) * 1e6 / received, 1) if received else None
            for name in pids
        },
        "server_alive": server_alive,
        "producer": producer_result,
        "redis_commands": _commandstats_delta(stats0, stats1, s1["wall"] - s0["wall"]),
        "loadavg_after": loadavg(),
        "git_head": git_state(),
    }
    if not server_alive:
        result["server_output"] = server.output()
    if errors or not server_alive:  # keep the server's log next to the results
        kept = RESULTS / "logs" / f"{target}-{tag}.log"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(server.log_path, kept)
        result["server_log"] = str(kept.relative_to(ROOT))
    return result


def failed_trial(target: str, clients_n: int, seconds: float, error: str) -> dict[str, Any]:
    """A trial that could not be measured at all (a server that never came up, say)."""
    expected = clients_n * round(seconds * RATE_HZ)
    none = {"p50": None, "p90": None, "p99": None, "p999": None, "max": None}
    return {
        "target": target,
        "clients": clients_n,
        "pass": False,
        "error": error,
        "latency_ms": none,
        "expected": expected,
        "received": 0,
        "lost": expected,
        "undelivered_at_deadline": 0,
        "duplicated": 0,
        "events_per_s": 0.0,
        "server_cpu_pct": None,
        "redis_cpu_pct": None,
        "loadgen_cpu_pct": None,
        "rss_per_conn_kb": 0.0,
        "other_busy_cores": 0.0,
        "producer": None,
    }


def _summary_full(values: list[float]) -> dict[str, float | None]:
    values.sort()
    out = {
        "p50": _pct(values, 0.5),
        "p90": _pct(values, 0.9),
        "p99": _pct(values, 0.99),
        "p999": _pct(values, 0.999),
        "max": values[-1] if values else None,
    }
    return {k: (round(v, 2) if v is not None else None) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# Profiling with py-spy


def start_py_spy(ctx: Ctx, pid: int, target: str, clients_n: int) -> subprocess.Popen | None:
    exe = shutil.which("py-spy")
    if exe is None:
        log("py-spy is not installed: no profile")
        return None
    out = RESULTS / f"profile-{target}-c{clients_n}.txt"
    duration = str(int(ctx.args.seconds) + 1)  # it starts just before T0
    args = [exe, "record", "-p", str(pid), "-d", duration, "-r", "100"]
    args += ["-f", "raw", "-o", str(out), "--nonblocking"]
    log(f"py-spy recording {target} (pid {pid}) into {out.relative_to(ROOT)}")
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


_PACKAGES = {
    "redis": "redis-py (client)",
    "sse_starlette": "sse-starlette",
    "uvicorn": "uvicorn (HTTP, transport)",
    "starlette": "starlette/fastapi",
    "fastapi": "starlette/fastapi",
    "anyio": "anyio",
    "turnstream": "turnstream",
    "json": "json",
    "asyncio": "asyncio",
}


def _package(frame: str) -> str:
    """py-spy frames look like "function (redis/asyncio/connection.py:1329)"."""
    where = frame.rpartition(" (")[2]
    return _PACKAGES.get(where.split("/", 1)[0], "other")


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any] | None:
    """Self and inclusive time per function, and self time per package, from py-spy raw output."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    self_t: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    bucket: Counter[str] = Counter()
    activity: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        names = [_frame_name(f) for f in frames]
        self_t[names[-1]] += count
        for name in set(names):
            incl[name] += count
        bucket[_package(frames[-1])] += count
        activity[_activity(stack)] += count

    def share(c: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in c.most_common(top)]

    # The frames of the start-up chain (runpy, typer, uvicorn.run, the event loop) are in
    # nearly every sample and say nothing: leave them out of the inclusive list.
    incl = Counter({k: v for k, v in incl.items() if not _is_bootstrap(k)})

    return {
        "samples": total,
        "by_activity_pct": share(activity),
        "self_pct": share(self_t),
        "inclusive_pct": share(incl),
        "self_by_package_pct": share(bucket),
    }


_BOOTSTRAP = (
    "<frozen runpy>", "typer/", "_click/", "turnstream/__main__.py", "turnstream/cli/",
    "uvicorn/main.py", "uvicorn/_compat.py", "uvicorn/server.py", "asyncio/runners.py",
    "asyncio/base_events.py", "bare_sse_server.py)",
)  # fmt: skip
_ACTIVITIES = (  # first match wins; py-spy --nonblocking stacks may be cut short at the top
    ("pub/sub receive: redis-py parse + StreamHub._listen fan-out",
     ("StreamHub._listen", "PubSub.", "pubsub_push", "from_notice")),
    ("SSE write: sse-starlette -> starlette -> uvicorn send",
     ("_send_with_timeout", "RequestResponseCycle.send", "_exception_handler.py", "errors.py")),
    ("per-follower: queue wake-up, dedupe, SSE encode (StreamHub.follow, _events, _schedule)",
     ("StreamHub.follow", "api/sse.py", "ServerSentEvent.encode", "_stream_response",
      "_schedule (bare", "_event (bare", "_dumps (bare", "queues.py")),
    ("other Redis calls (XRANGE, GET, ...)", ("redis/",)),
    ("event loop in C (uvloop: epoll, socket I/O, timers)", ("Runner.run",)),
)  # fmt: skip


def _is_bootstrap(name: str) -> bool:
    return name.startswith(("Runner.run", "run (uvicorn", "Server.")) or any(
        b in name for b in _BOOTSTRAP
    )


def _activity(stack: str) -> str:
    if stack.rpartition(";")[2].startswith("Runner.run"):  # the leaf: uvloop's own C code
        return _ACTIVITIES[-1][0]
    for label, needles in _ACTIVITIES:
        if any(n in stack for n in needles):
            return label
    return "other"


def _frame_name(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (pkg/file.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(where).parts
    return f"{name} ({'/'.join(parts[-2:])})" if parts else name


# ---------------------------------------------------------------------------------------------
# Setup, table, JSON


async def make_token(db_url: str) -> str:
    from turnstream.store import users
    from turnstream.store.db import create_engine, session_factory

    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as db:
            return await users.create_token(db, user_id=USER_ID)
    finally:
        await engine.dispose()


async def warm_up(port: int, token: str) -> None:
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        for _ in range(3):
            async with http.get(f"http://{HOST}:{port}/api/v1/conversations?limit=1") as r:
                await r.read()


async def warm_follow(ctx: Ctx, port: int) -> None:
    """Follow one finished run before the trial, so that the server's stream reader is set up.

    Without it, the first burst of followers after a start meets a turnstream bug (see the
    report): concurrent first subscriptions each open a pub/sub connection, all but one are
    orphaned, and those followers wait 10 s for a confirmation that never comes.
    """
    from turnstream.ids import session_id, uuid7

    mid = uuid7()
    spec = (ctx.cids[-1], session_id(USER_ID, mid), mid, 0.0)
    await ctx.producer.call("oneshot", spec=spec)
    path = f"/api/v1/conversations/{spec[0]}/resume/{quote(spec[1], safe=':@')}"
    sink = Sink()
    auth = f"Authorization: Bearer {ctx.token}\r\n"
    [client] = await connect_all(port, [path], auth, 1, sink, 15, 1)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(client.done_fut), 15)
    if client.transport is not None:
        client.transport.close()
    await ctx.producer.call("cleanup", specs=[spec])
    if not client.ended:
        log(f"warm-up follow did not end cleanly: {client.error}")


async def create_conversations(port: int, token: str, n: int) -> list[str]:
    import aiohttp

    sem = asyncio.Semaphore(16)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:

        async def one(i: int) -> str:
            async with (
                sem,
                http.post(
                    f"http://{HOST}:{port}/api/v1/conversations", json={"title": f"fanout {i}"}
                ) as r,
            ):
                if r.status != 201:
                    raise RuntimeError(f"POST /conversations: {r.status} {await r.text()}")
                return (await r.json())["id"]

        return await asyncio.gather(*(one(i) for i in range(n)))


def git_state() -> str:
    """HEAD of the repository, with "+dirty" when turnstream/ has uncommitted changes."""
    try:
        run = {"cwd": ROOT, "capture_output": True, "text": True, "check": True}
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], **run).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "turnstream"], **run).stdout
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + ("+dirty" if dirty.strip() else "")


def machine_info() -> dict[str, Any]:
    from importlib import metadata

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    versions = {}
    for pkg in ("uvicorn", "uvloop", "httptools", "sse-starlette", "starlette", "fastapi",
                "redis", "hiredis", "orjson"):  # fmt: skip
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[pkg] = metadata.version(pkg)
    redis_version = subprocess.run(
        [shutil.which("redis-server") or "/usr/bin/redis-server", "--version"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    git = {}
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        run = {"cwd": ROOT, "capture_output": True, "text": True, "check": True}
        git["head"] = subprocess.run(["git", "rev-parse", "HEAD"], **run).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "turnstream"], **run).stdout
        git["turnstream_dirty"] = status.splitlines()
    return {
        "platform": platform.platform(),
        "note": "2 shared cores: other work (tests, other benchmarks) may run at the same "
        "time; each trial reports the cores busy outside the benchmark (other_busy_cores).",
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gb": round(mem_kb / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "loadavg_start": loadavg(),
        "versions": versions,
        "redis_server": redis_version,
        "git": git,
    }


def fmt(v: Any, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def print_table(trials: list[dict]) -> None:
    cols = (
        f"{'target':<10} {'C':>5} {'p50':>7} {'p99':>8} {'max':>8} {'ev/s':>8} {'expected':>9} "
        f"{'received':>9} {'lost':>6} {'cut':>6} {'dup':>4} {'srvCPU%':>7} {'KB/conn':>7} "
        f"{'redis%':>6} {'prodLag99':>9} {'gen%':>5} {'other':>5}  pass"
    )
    print(cols)
    print("-" * len(cols))
    for t in trials:
        prod = t.get("producer") or {}
        lag = (prod.get("ack_lag_ms") or {}).get("p99")
        print(
            f"{t['target']:<10} {t['clients']:>5} {fmt(t['latency_ms']['p50'], '.1f'):>7} "
            f"{fmt(t['latency_ms']['p99'], '.1f'):>8} {fmt(t['latency_ms']['max'], '.0f'):>8} "
            f"{t['events_per_s']:>8.0f} {t['expected']:>9} {t['received']:>9} {t['lost']:>6} "
            f"{t['undelivered_at_deadline']:>6} "
            f"{t['duplicated']:>4} {fmt(t['server_cpu_pct'], '.0f'):>7} "
            f"{t['rss_per_conn_kb']:>7.1f} {fmt(t['redis_cpu_pct'], '.0f'):>6} "
            f"{fmt(lag, '.1f'):>9} {fmt(t['loadgen_cpu_pct'], '.0f'):>5} "
            f"{t['other_busy_cores']:>5.2f}{'*' if t.get('contended') else ' '} "
            f"{'PASS' if t['pass'] else 'fail'}"
        )
    print(
        "p50/p99/max: ms from scheduled time to arrival; lost: never delivered on a stream "
        "that ended; cut: still undelivered when the harness gave up (schedule end + grace); "
        "srvCPU%/redis%/gen%: % of one core "
        "(server, redis-server, load generator); prodLag99: p99 ms from scheduled time until the "
        "producer's append was acknowledged; other: cores busy with processes outside the "
        "benchmark (* = over 0.25: the trial shared the machine)."
    )


def summarize(trials: list[dict], clients: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for target in ("turnstream", "bare"):
        by_c = {t["clients"]: t["pass"] for t in trials if t["target"] == target}
        passing = [c for c in clients if by_c.get(c)]
        contiguous = 0
        for c in clients:
            if not by_c.get(c):
                break
            contiguous = c
        out[target] = {
            "largest_passing_clients": max(passing) if passing else 0,
            "largest_all_passing_up_to": contiguous,
            "passes_every_tested_c": bool(clients) and len(passing) == len(clients),
        }
    ts, bare = (out[t]["largest_passing_clients"] for t in ("turnstream", "bare"))
    out["ratio"] = round(ts / bare, 3) if bare else None
    out["goal_ratio"] = GOAL_RATIO
    out["goal_met"] = out["ratio"] is not None and out["ratio"] >= GOAL_RATIO
    out["note"] = (
        "the bare server passed every tested C: its real ceiling may be higher, so the ratio "
        "is an upper bound"
        if out["bare"]["passes_every_tested_c"]
        else "ratio of the largest passing C"
    )
    return out


# ---------------------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace, tmp: Path) -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    clients = args.clients
    info = machine_info()
    log(
        f"machine: {info['cores']} cores ({info['cpu']}), load average {info['loadavg_start']}; "
        f"clients {clients}, {args.seconds:g} s at {RATE_HZ} events/s each"
    )
    redis, redis_url = start_redis(tmp)
    log(f"redis-server pid {redis.pid} at {redis_url}")
    producer = Producer(redis_url, args.producer)
    log(f"producer process pid {producer.pid} (multiprocessing, spawn; {args.producer} client)")
    db_url = f"sqlite+aiosqlite:///{tmp / 'turnstream.db'}"
    ctx = Ctx(args, tmp, redis, redis_url, db_url, producer)
    try:
        server, port = start_server(ctx, "turnstream", "setup")
        try:
            await wait_http(server, port)
            ctx.token = await make_token(db_url)
            # One more than the largest C: the spare one is for warm_follow.
            ctx.cids = await create_conversations(port, ctx.token, max(clients) + 1)
        finally:
            server.stop()
        log(f"{len(ctx.cids)} conversations and a token for user {USER_ID!r} created")

        trials: list[dict] = []
        profiles: dict[str, Any] = {}
        t_start = time.monotonic()
        out = Path(args.output)
        loop_kind = type(asyncio.get_running_loop()).__module__.split(".")[0]

        def document(complete: bool) -> dict[str, Any]:
            summary = summarize(trials, clients)
            summary["git_heads"] = sorted({t.get("git_head", "?") for t in trials})
            return {
                "benchmark": "fanout",
                "complete": complete,
                "machine": {
                    **info,
                    "loadavg_end": loadavg(),
                    "git_end": git_state(),  # others edit turnstream/ meanwhile
                },
                "parameters": {
                    "clients": clients,
                    "seconds": args.seconds,
                    "rate_hz": RATE_HZ,
                    "p99_limit_ms": P99_LIMIT_MS,
                    "grace_s": args.grace,
                    "quiet_wait_s": args.quiet_wait,
                    "connect_concurrency": args.connect_concurrency,
                    "warm_follow": args.warm_follow,
                    "stagger": "run j starts at T0 + j*50/C ms",
                    "producer": "separate process (multiprocessing spawn), one task per run, "
                    "RunState.append every 50 ms on a fixed schedule",
                    "producer_client": args.producer,
                    "load_generator": f"this process; raw asyncio sockets on a {loop_kind} loop",
                    "turnstream": "python -m turnstream serve --log-level warning, "
                    "restarted per trial",
                    "bare": "bench/bare_sse_server.py (uvicorn), restarted per trial",
                },
                "trials": trials,
                "summary": summary,
                "profiles": profiles,
                "duration_s": round(time.monotonic() - t_start, 1),
            }

        for c in clients:
            for target in args.targets:
                log(f"{target:<10} C={c:<5} starting")
                try:
                    r = await run_trial(ctx, target, c)
                except Exception:
                    log(f"{target:<10} C={c:<5} trial failed:\n{traceback.format_exc()}")
                    r = failed_trial(target, c, args.seconds, traceback.format_exc())
                trials.append(r)
                log(
                    f"{target:<10} C={c:<5} p50 {fmt(r['latency_ms']['p50'], '.1f')} ms, "
                    f"p99 {fmt(r['latency_ms']['p99'], '.1f')} ms, received {r['received']}/"
                    f"{r['expected']}, lost {r['lost']}, dup {r['duplicated']}, server CPU "
                    f"{r['server_cpu_pct']}% -> {'PASS' if r['pass'] else 'fail'}"
                )
                await asyncio.to_thread(write_json, out, document(complete=False))

        profile_c = pick_profile_c(args.profile, trials, clients)
        if profile_c is not None and shutil.which("py-spy"):
            for target in args.targets:
                log(f"{target:<10} C={profile_c:<5} profiling run (not part of the table)")
                try:
                    r = await run_trial(ctx, target, profile_c, profile=True)
                except Exception:
                    log(f"profiling run failed:\n{traceback.format_exc()}")
                    continue
                profiles[target] = profile_entry(target, profile_c, r)
        elif profile_c is not None:
            log("py-spy is not installed (pip install py-spy): no profile")

        doc = document(complete=True)
        await asyncio.to_thread(write_json, out, doc)
        print_report(doc)
        print(f"\nresults: {out}")
        return 0
    finally:
        producer.stop()
        redis.stop()


def profile_entry(target: str, clients_n: int, r: dict[str, Any]) -> dict[str, Any]:
    path = RESULTS / f"profile-{target}-c{clients_n}.txt"
    prof = summarize_profile(path)
    entry: dict[str, Any] = {
        "clients": clients_n,
        "raw": str(path.relative_to(ROOT)),
        "trial": {k: r[k] for k in ("latency_ms", "received", "server_cpu_pct", "pass")},
        "summary": prof,
    }
    if prof and r["received"]:
        # py-spy samples at 100 Hz: one sample is ~10 ms of the server's CPU.
        per_event = prof["samples"] * 10_000 / r["received"]
        entry["cpu_us_per_event"] = round(per_event, 1)
        entry["cpu_us_per_event_by_activity"] = [
            (name, round(per_event * pct / 100, 1)) for name, pct in prof["by_activity_pct"]
        ]
    return entry


def print_report(doc: dict[str, Any]) -> None:
    summary = doc["summary"]
    print()
    print_table(doc["trials"])
    print()
    for target in ("turnstream", "bare"):
        s = summary[target]
        print(
            f"{target:<10} largest passing C: {s['largest_passing_clients']} "
            f"(every C up to {s['largest_all_passing_up_to']} passed)"
        )
    print(
        f"ratio turnstream/bare: {summary['ratio']} (goal ≥ {GOAL_RATIO}: "
        f"{'met' if summary['goal_met'] else 'NOT met'}; {summary['note']})"
    )
    if len(summary["git_heads"]) > 1:
        print(f"WARNING: turnstream changed during the benchmark: {summary['git_heads']}")
    for target, p in doc["profiles"].items():
        if p["summary"]:
            print(
                f"\npy-spy {target} C={p['clients']} ({p['summary']['samples']} samples, "
                f"~{p.get('cpu_us_per_event', '?')} µs of server CPU per event delivered):"
            )
            for name, us in p.get("cpu_us_per_event_by_activity", []):
                print(f"  {us:7.1f} µs/event  {name}")
            for name, pct in p["summary"]["self_by_package_pct"]:
                print(f"  {pct:5.1f}% self in {name}")


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def pick_profile_c(choice: str, trials: list[dict], clients: list[int]) -> int | None:
    if choice == "none":
        return None
    if choice != "auto":
        return int(choice)
    passed = {(t["target"], t["clients"]): t["pass"] for t in trials}
    for c in clients:
        if not passed.get(("turnstream", c)) and passed.get(("bare", c)):
            return c
    for c in clients:  # else the first C where turnstream fails at all
        if not passed.get(("turnstream", c)):
            return c
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", default="100,250,500,1000,2000", help="comma-separated C values")
    p.add_argument("--seconds", type=float, default=10, help="length of each run's schedule")
    p.add_argument("--quick", action="store_true", help="clients 50,100 and 5 s")
    p.add_argument(
        "--connect-concurrency",
        type=int,
        default=64,
        help="clients connecting at once (each waits for its `start` event)",
    )
    p.add_argument(
        "--producer",
        choices=("fast", "redis-py"),
        default="fast",
        help="the producer's Redis client under RunState: a pipelined hiredis connection "
        "(fast) or redis-py",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="before each trial, wait up to this many s for the machine to be idle "
        "(default 120, --quick 20)",
    )
    p.add_argument("--targets", default="turnstream,bare", help="turnstream, bare or both")
    p.add_argument(
        "--no-warm-follow",
        dest="warm_follow",
        action="store_false",
        help="skip following one finished run before each turnstream trial (shows the "
        "first-burst subscription bug)",
    )
    p.add_argument("--grace", type=float, default=30, help="s to wait past the schedule's end")
    p.add_argument("--profile", default="auto", help="auto | none | a C to profile with py-spy")
    p.add_argument("--output", default=str(RESULTS / "fanout.json"))
    args = p.parse_args(argv)
    if args.quick:
        args.clients, args.seconds = "50,100", 5.0
    if args.quiet_wait is None:
        args.quiet_wait = 20.0 if args.quick else 120.0
    args.clients = sorted({int(x) for x in args.clients.split(",") if x.strip()})
    args.targets = [t for t in ("turnstream", "bare") if t in args.targets.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="turnstream-fanout-"))
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        return runner(main_async(args, tmp))
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        Proc.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
