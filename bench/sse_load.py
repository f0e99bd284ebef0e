"""SSE load for bench/fanout.py and bench/idle.py: raw-socket clients that time every delta,
and a producer process that writes runs' deltas on a schedule through turnstream's write path.

Clients (`connect_all`, `SSEClient`, `Sink`): one raw-socket HTTP/1.1 client per stream, with
chunked decoding and SSE parsing by hand, so thousands fit in one loop and cost little CPU.
Each is ready at `start` and finished at `end` (or when it fails or is closed). Per `delta`
(whose text is the producer's {"sched": ms, "n": i}) it records into the trial's `Sink`:

- `lat`: arrival - `sched`, the delta's scheduled time: everything, the producer's lateness too;
- `sched`: that scheduled time (to pick a steady window afterwards);
- `lat_ts`, with `Sink(count, ts=True)`: arrival - the event's own `ts`, the time (whole ms,
  so up to 1 ms high) the producer stamped the append with as it sent it (the bare server:
  when it wrote the event), which leaves the producer's lateness out.

A repeated `seq` or `n` is counted as a duplicate (`dup`), not timed again; `: ping` comments
are counted in `Sink.pings`.

Producer (`prepare`, `Producer`): `prepare` creates and claims runs with `RunState` (their
streams hold `queued` and `start`); a `Producer` process then appends one `delta` per run every
50 ms from T0 + the run's offset on, with `RunState.append` (the Lua script every run writes
with), and ends each run with `RunState.finish`. It reports its lag: when Redis acknowledged
each append - its scheduled time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import hiredis
import uvloop
from support import HOST, resp, rounded, summary

from turnstream import events
from turnstream.ids import session_id, uuid7
from turnstream.keys import RunKeys
from turnstream.live.state import RunState
from turnstream.live.status import RunStatus

RATE_HZ = 20
PERIOD_MS = 1000 / RATE_HZ
Spec = tuple[str, str, str, float]  # conversation id, session id, reply id, offset (ms)


def now_ms() -> float:
    return time.time() * 1000.0


def pin(pid: int, cores: set[int] | None) -> None:
    """Every thread of `pid` onto `cores`; threads it starts later inherit them."""
    if not cores:
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), cores)


def resume_path(cid: str, sid: str, cursor: str | None = None) -> str:
    path = f"/api/v1/conversations/{cid}/resume/{quote(sid, safe=':@')}"
    return path if cursor is None else f"{path}?cursor={cursor}"


# ------------------------------------------------------------------------- SSE clients


class Sink:
    """What the clients of one trial report into; `ts`: time deltas from `ts` too."""

    def __init__(self, count: int = 0, *, ts: bool = False) -> None:
        self.count = count  # deltas per client
        self.lat: list[float] = []  # arrival - scheduled time (ms)
        self.sched: list[float] = []  # the scheduled time of each (ms since the epoch)
        self.lat_ts: list[float] | None = [] if ts else None  # arrival - the event's `ts`
        self.pings = 0
        self.ended = 0  # clients that saw `end`
        self.done = 0  # clients finished: `end`, a failure or closed


class SSEClient(asyncio.Protocol):
    """One raw-socket HTTP/1.1 SSE client: chunked decoding and event parsing by hand."""

    def __init__(self, request: bytes, sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        self.request, self.sink = request, sink
        self.transport: asyncio.Transport | None = None
        self.raw = self.sse = b""  # bytes not yet a whole chunk; not yet a whole event
        self.head_done = False
        self.seen_n = bytearray(sink.count)
        self.seen_seq: set[int] = set()
        self.received = self.dup = self.out_of_order = 0
        self.last_n = -1
        self.ended = self.cut = self.finished = False
        self.error: str | None = None
        self.ready: asyncio.Future[bool] = loop.create_future()  # True at `start`
        self.closed: asyncio.Future[bool] = loop.create_future()  # True if it saw `end`

    @property
    def open(self) -> bool:
        """Got `start` and still streaming."""
        return self.ready.done() and self.ready.result() and not self.finished

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now, raw = now_ms(), self.raw + data
        if not self.head_done:
            head, found, rest = raw.partition(b"\r\n\r\n")
            if not found:
                self.raw = raw
                return
            if b"200" not in head[:13] or b"transfer-encoding: chunked" not in head.lower():
                return self.fail(f"not a chunked 200: {head[:200]!r}")
            raw, self.head_done = rest, True
        while (eol := raw.find(b"\r\n")) >= 0:  # chunks: size CRLF data CRLF
            end = eol + 2 + int(raw[:eol], 16)
            if len(raw) < end + 2:
                break
            self.sse += raw[eol + 2 : end]
            raw = raw[end + 2 :]
        self.raw = raw
        *blocks, self.sse = self.sse.replace(b"\r\n", b"\n").split(b"\n\n")
        for block in blocks:
            payload = [line[5:].lstrip(b" ") for line in block.split(b"\n") if line[:5] == b"data:"]
            if payload:
                self._event(json.loads(b"\n".join(payload)), now)
            elif block.startswith(b": ping"):
                self.sink.pings += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended:
            self.fail(f"connection lost before `end`: {exc!r}")

    def _event(self, d: dict[str, Any], now: float) -> None:
        if d["seq"] in self.seen_seq:
            self.dup += 1
            return
        self.seen_seq.add(d["seq"])
        if d["type"] == "delta":
            inner = json.loads(d["text"])
            n = inner["n"]
            if self.seen_n[n]:
                self.dup += 1
                return
            self.seen_n[n] = 1
            self.out_of_order += n != self.last_n + 1
            self.last_n = n
            self.received += 1
            self.sink.lat.append(now - inner["sched"])
            self.sink.sched.append(inner["sched"])
            if self.sink.lat_ts is not None:
                self.sink.lat_ts.append(now - d["ts"])
        elif d["type"] == "start" and not self.ready.done():
            self.ready.set_result(True)
        elif d["type"] == "end":
            self.ended = True
            self.sink.ended += 1
            self.fail(None)
        elif d["type"] == "error" and self.error is None:
            self.error = f"error event: {d}"

    def fail(self, reason: str | None) -> None:
        """Close the stream (at `end`, reason None); the first reason given is kept."""
        self.error = self.error or reason
        if self.transport is not None:
            self.transport.close()
        if not self.ready.done():
            self.ready.set_result(False)
        if not self.finished:
            self.finished = True
            self.sink.done += 1
            self.closed.set_result(self.ended)


async def connect_all(
    port: int, paths: list[str], auth: str, sink: Sink, *, at_once: int = 64, wait: float = 60
) -> list[SSEClient]:
    """A client per path, `at_once` connecting at a time, each until it saw `start` (or
    failed, or `wait` s passed). `auth`: header lines, each ending in CRLF."""
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(at_once)
    head = f"Host: {HOST}:{port}\r\nAccept: text/event-stream\r\n{auth}\r\n"
    clients = [SSEClient(f"GET {path} HTTP/1.1\r\n{head}".encode(), sink) for path in paths]

    async def one(client: SSEClient) -> None:
        async with sem:
            try:
                await loop.create_connection(lambda: client, HOST, port)
                await asyncio.wait_for(asyncio.shield(client.ready), wait)
            except (OSError, TimeoutError) as exc:
                client.fail(f"connect: {exc!r}")

    await asyncio.gather(*(one(c) for c in clients))
    return clients


# ------------------------------------------------------------------------- runs


def new_runs(cids: Sequence[str], user: str) -> list[Spec]:
    """A new run on each conversation; run j's schedule starts j·50/C ms after T0."""
    specs: list[Spec] = []
    for j, cid in enumerate(cids):
        mid = uuid7()
        specs.append((cid, session_id(user, mid), mid, j * PERIOD_MS / len(cids)))
    return specs


async def prepare(
    runs: RunState, specs: list[Spec], *, user: str, lease_s: float, at_once: int = 100
) -> None:
    """Create and claim one run per spec (`at_once` at a time): its stream holds `queued`,
    `start`, and nothing more until the producer writes."""

    async def one(cid: str, sid: str, mid: str, _offset: float) -> None:
        k = RunKeys(cid, sid)
        created, other = await runs.create(
            k, user_id=user, message_id=mid, user_message_id="", message="x",
            enqueue=False, max_active=10**9,
        )  # fmt: skip
        if not created or not await runs.claim(k, worker="bench", lease_seconds=lease_s):
            raise RuntimeError(f"could not start {sid} (active: {other})")

    for i in range(0, len(specs), at_once):
        await asyncio.gather(*(one(*spec) for spec in specs[i : i + at_once]))


# ------------------------------------------------------------------------- producer


class FastRedis(asyncio.Protocol):
    """Just enough of a Redis client for `RunState.append` and `finish`: pipelined RESP on one
    connection, hiredis parsing.

    RunState's scripts, keys and arguments are used unchanged (EVALSHA); only the client
    differs: redis-py spends ~170 µs of CPU per append, which would make the producer, not the
    server, the bottleneck. `finish` also sends a few plain commands (the indexes, the user's
    cap, the durations), some in a pipeline: those are here too.
    """

    def __init__(self) -> None:
        self.reader = hiredis.Reader(encoding="utf-8")
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            fut = self.waiters.popleft()
            if fut.done():  # its caller was cancelled
                continue
            if isinstance(reply, hiredis.ReplyError):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(ConnectionError(f"redis went away: {exc!r}"))

    def call(self, *args: Any) -> asyncio.Future[Any]:
        assert self.transport is not None
        self.transport.write(resp(*args))
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        return fut

    def register_script(self, text: str) -> Callable[..., asyncio.Future[Any]]:
        """Load the script now (replies come in order, so before any call), call it by sha."""
        self.call("SCRIPT", "LOAD", text)
        sha = hashlib.sha1(text.encode()).hexdigest()
        return lambda keys=(), args=(), client=None: self.call(
            "EVALSHA", sha, len(keys), *keys, *args
        )

    def zrem(self, key: str, *members: Any) -> asyncio.Future[Any]:
        return self.call("ZREM", key, *members)

    def lpush(self, key: str, *values: Any) -> asyncio.Future[Any]:
        return self.call("LPUSH", key, *values)

    def ltrim(self, key: str, start: int, end: int) -> asyncio.Future[Any]:
        return self.call("LTRIM", key, start, end)

    def pipeline(self, transaction: bool = False) -> _Pipeline:
        return _Pipeline(self)


class _Pipeline:
    """redis-py's pipeline, as far as `finish` uses it: every command is pipelined anyway."""

    def __init__(self, redis: FastRedis) -> None:
        self.redis = redis
        self.sent: list[asyncio.Future[Any]] = []

    async def __aenter__(self) -> _Pipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, name: str) -> Callable[..., _Pipeline]:
        command = getattr(self.redis, name)

        def queue(*args: Any) -> _Pipeline:
            self.sent.append(command(*args))
            return self

        return queue

    async def execute(self) -> list[Any]:
        return list(await asyncio.gather(*self.sent))


def producer_main(conn: Connection, redis_url: str, specs: list[Spec], count: int) -> None:
    """The producer process: connect, say ready, wait for T0, write, report."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the orchestrator decides when we stop
    conn.send(uvloop.run(produce(conn, redis_url, specs, count)))


async def produce(conn: Connection, redis_url: str, specs: list[Spec], count: int) -> dict:
    """One task per run: `count` deltas at T0 + offset + i·50 ms, then `end`."""
    loop = asyncio.get_running_loop()
    url = urlsplit(redis_url)
    _, redis = await loop.create_connection(FastRedis, url.hostname, url.port)
    runs = RunState(redis, maxlen=10_000, ttl_seconds=900)  # type: ignore[arg-type]
    conn.send("ready")
    t0_ms = await asyncio.to_thread(conn.recv)
    mono0 = loop.time() + (t0_ms - now_ms()) / 1000  # the wall schedule on the loop's clock
    lag: list[float] = []  # when Redis acknowledged the append - its scheduled time
    problems: list[str] = []

    async def one(cid: str, sid: str, mid: str, offset: float) -> None:
        k = RunKeys(cid, sid)
        try:
            for n in range(count):
                due = offset + n * PERIOD_MS
                await asyncio.sleep(max(0.0, mono0 + due / 1000 - loop.time()))
                sched = round(t0_ms + due, 1)
                text = json.dumps({"sched": sched, "n": n}, separators=(",", ":"))
                if await runs.append(k, [events.delta(text)]):
                    problems.append(f"{sid}: the append said stop at n={n}")
                    break
                lag.append(now_ms() - sched)
        except Exception as exc:
            problems.append(f"{sid}: {exc!r}")
        try:
            await runs.finish(k, status=RunStatus.COMPLETED, message_id=mid)
        except Exception as exc:
            problems.append(f"{sid}: finish: {exc!r}")

    await asyncio.gather(*(one(*spec) for spec in specs))
    return {"appends": len(lag), "ack_lag_ms": rounded(summary(lag)), "problems": problems[:5]}


class Producer:
    """A producer process for one trial's runs, optionally pinned to `cores`.

    `await ready()` once it is connected, `go(t0_ms)`, then `await result()`: its figures.
    """

    def __init__(
        self, redis_url: str, specs: list[Spec], count: int, cores: set[int] | None = None
    ) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        args = (child, redis_url, specs, count)
        self.proc = ctx.Process(target=producer_main, args=args, daemon=True)
        self.proc.start()
        self.pid = self.proc.pid or 0
        pin(self.pid, cores)

    async def ready(self, within: float = 60) -> None:
        if await self._recv(within) != "ready":
            raise RuntimeError("the producer did not say ready")

    def go(self, t0_ms: float) -> None:
        self.conn.send(t0_ms)

    async def result(self, within: float = 60) -> dict:
        return await self._recv(within)  # type: ignore[no-any-return]

    async def _recv(self, within: float) -> Any:
        def recv() -> Any:
            if not self.conn.poll(within):
                raise RuntimeError(f"no word from the producer in {within:.0f} s")
            return self.conn.recv()

        try:
            return await asyncio.to_thread(recv)
        except EOFError:
            raise RuntimeError(f"the producer exited ({self.proc.exitcode})") from None

    def stop(self) -> None:
        self.proc.kill()
        self.proc.join(5)
