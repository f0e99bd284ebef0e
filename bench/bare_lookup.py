"""The HTTP baseline of `session_lookup.py`: a bare FastAPI app doing the same Redis reads.

    python bench/bare_lookup.py --port 8001 --redis-url redis://127.0.0.1:6379/0

`GET /{cid}/active-session` and `GET /{cid}/task-status` each read what the real routes
start from, GET `chat:active:{cid}` then HGETALL of that run's hash, and answer a JSON
body of the same shape. No auth, no ownership check, no middleware, no response model:
the floor that FastAPI, uvicorn and redis-py set for this request. It runs under the
uvicorn settings `turnstream serve` uses (httptools, the default loop: uvloop when
installed, log level warning, access log off).

Also `seed_app`, the in-process baseline: the lookup of the seed design (KEYS or SCAN).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from turnstream import keys


def bare_app(redis_url: str) -> FastAPI:
    r = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await r.aclose()

    app = FastAPI(lifespan=lifespan)

    async def run_of(cid: str) -> dict[str, Any] | None:
        sid = await r.get(keys.active(cid))
        run: dict[str, Any] = await r.hgetall(keys.run_prefix(cid) + sid) if sid else {}
        return run or None

    @app.get("/{cid}/active-session")
    async def active_session(cid: str) -> JSONResponse:
        run = await run_of(cid)
        if run is None:
            return JSONResponse({"error": "No active session found", "conversationId": cid}, 404)
        return JSONResponse(
            {
                "sessionId": run["session_id"],
                "status": "active" if run["status"] in ("queued", "running") else run["status"],
                "cursor": run.get("last_id", "0-0"),
                "conversationId": cid,
                "startedAt": int(run["created_at"]),
                "lastActivity": int(run.get("last_activity") or run["created_at"]),
            }
        )

    @app.get("/{cid}/task-status")
    async def task_status(cid: str) -> JSONResponse:
        run = await run_of(cid)
        if run is None:
            return JSONResponse({"error": "No background task found", "conversationId": cid}, 404)
        return JSONResponse(
            {
                "isActive": run["status"] in ("queued", "running"),
                "sessionId": run["session_id"],
                "estimatedCompletion": int(run.get("ended_at") or run["created_at"]),
                "conversationId": cid,
            }
        )

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def seed_app(url: str) -> FastAPI:
    """The old seed design's lookup: list the conversation's streams, read the first."""
    r = redis.asyncio.Redis.from_url(url, decode_responses=True, socket_timeout=120)
    app = FastAPI()

    @app.get("/{method}/{cid}/{endpoint}")
    async def lookup(method: str, cid: str, endpoint: str) -> JSONResponse:
        pattern = keys.stream_prefix(cid) + "*"
        if method == "keys":
            found = await r.keys(pattern)
        else:
            found = [k async for k in r.scan_iter(match=pattern, count=1000)]
        if not found:
            return JSONResponse({"error": "not found", "conversationId": cid}, 404)
        sid = found[0][len(keys.stream_prefix(cid)) :]
        newest = await r.xrevrange(found[0], count=1)
        status = await r.get(keys.status_prefix(cid) + sid)
        entry_id = newest[0][0] if newest else "0-0"
        return JSONResponse({"sessionId": sid, "status": status, "cursor": entry_id,
                             "conversationId": cid, "endpoint": endpoint})  # fmt: skip

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--redis-url", required=True)
    a = ap.parse_args()
    uvicorn.run(
        bare_app(a.redis_url),
        host="127.0.0.1",
        port=a.port,
        http="httptools",
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
