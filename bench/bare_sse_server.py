"""The ceiling for bench/fanout.py: a bare SSE server that streams the same schedule from memory.

No Redis, no database, no auth: a Starlette app with sse-starlette, served by uvicorn exactly as
`turnstream serve` is (uvloop + httptools when installed, one process). Each connection gets its
own schedule:

    GET /stream?start=<ms since the epoch>&count=<deltas>&period=<ms>

answers at once with `queued` and `start` (like a freshly claimed turnstream run), then one
`delta` per `period` ms at start + i·period, whose `text` is the JSON {"sched": ms, "n": i},
then `end`. The frames have the shape of turnstream's (SPEC §5): `id`, `event`, and a flat JSON
`data` with `seq`, `type`, `ts` and the event's own fields.

    python bench/bare_sse_server.py --port 8123
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator

import uvicorn
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

PING_SECONDS = 15  # turnstream's default (TURNSTREAM_PING_SECONDS)


def _dumps(data: dict[str, object]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _event(seq: int, etype: str, fields: dict[str, object]) -> ServerSentEvent:
    ts = _now_ms()
    data = _dumps({**fields, "seq": seq, "type": etype, "ts": ts})
    return ServerSentEvent(id=f"{ts}-{seq}", event=etype, data=data)


async def _schedule(
    start_ms: float, count: int, period_ms: float
) -> AsyncIterator[ServerSentEvent]:
    yield _event(1, "queued", {"sessionId": "bare"})
    yield _event(2, "start", {"worker": "bare"})
    loop = asyncio.get_running_loop()
    # Wall-clock schedule mapped once onto the loop's monotonic clock, so nothing drifts.
    mono_start = loop.time() + (start_ms - time.time() * 1000) / 1000
    for n in range(count):
        delay = mono_start + n * period_ms / 1000 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sched = round(start_ms + n * period_ms, 1)
        yield _event(n + 3, "delta", {"text": _dumps({"sched": sched, "n": n})})
    yield _event(count + 3, "end", {"status": "completed", "messageId": "bare"})


async def stream(request: Request) -> Response:
    q = request.query_params
    try:
        start_ms = float(q["start"])
        count = int(q.get("count", "200"))
        period_ms = float(q.get("period", "50"))
    except (KeyError, ValueError):
        return JSONResponse({"error": "start (ms), count and period (ms) are needed"}, 400)
    return EventSourceResponse(
        _schedule(start_ms, count, period_ms),
        ping=PING_SECONDS,
        ping_message_factory=lambda: ServerSentEvent(comment="ping"),
        headers={"X-Accel-Buffering": "no"},
    )


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[Route("/stream", stream), Route("/health", health)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
