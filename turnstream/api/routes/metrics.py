"""`GET /metrics`: Prometheus' text format (turnstream/metrics.py), outside /api/v1.

Who may read it: with TURNSTREAM_METRICS_TOKEN set, whoever sends it as a
bearer token (401 otherwise); without one, only clients on the loopback
interface (403 otherwise), unless TURNSTREAM_METRICS_PUBLIC is set. Loopback
by default because a fresh `serve` has no token to require, and the numbers
(how many runs, how busy, which errors) are the operator's, not the users'.
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from redis.exceptions import RedisError

from turnstream import keys, metrics
from turnstream.api.deps import RuntimeDep
from turnstream.clock import now_ms
from turnstream.config import Settings
from turnstream.keys import RunField
from turnstream.live.client import maybe_text
from turnstream.runtime import Runtime

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def get_metrics(request: Request, rt: RuntimeDep) -> Response:
    refused = refusal(rt.settings, request)
    if refused is not None:
        return refused
    body = metrics.exposition(await read_live(rt))
    return Response(body, media_type=metrics.CONTENT_TYPE)


def refusal(settings: Settings, request: Request) -> JSONResponse | None:
    """The 401 or 403 this request gets, if it may not read the metrics."""
    token = settings.metrics_token
    if token is not None:
        given = request.headers.get("authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return None
        return JSONResponse(
            {"detail": "Send TURNSTREAM_METRICS_TOKEN as a bearer token to read the metrics."},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    if settings.metrics_public or is_loopback(request.client.host if request.client else None):
        return None
    detail = (
        "The metrics are served to loopback clients only. Set TURNSTREAM_METRICS_TOKEN "
        "(and scrape with it as a bearer token), or TURNSTREAM_METRICS_PUBLIC=1."
    )
    return JSONResponse({"detail": detail}, status_code=403)


def is_loopback(host: str | None) -> bool:
    """Whether the peer is on this machine (None: a Unix socket)."""
    if host is None:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def read_live(rt: Runtime) -> metrics.Live | None:
    """Runs running and queued, from Redis's indexes (one read a shard); None if Redis
    cannot say. The indexes may hold a few entries of runs that just moved on."""
    try:
        active = await rt.runs.indexes.count(keys.leases)
        queued = await rt.runs.indexes.count(keys.queued)
        head = await rt.runs.indexes.due(keys.queued, before=None, limit=1)
        age = 0.0
        if head:
            k = head[0][0]
            created = maybe_text(await rt.redis.hget(k.run, RunField.CREATED_AT))
            if created:
                age = max(0.0, (now_ms() - int(created)) / 1000)
    except RedisError as exc:
        metrics.backend_error(exc)
        return None
    return metrics.Live(
        active_runs=int(active), queued_runs=int(queued), queue_head_age_seconds=age
    )
