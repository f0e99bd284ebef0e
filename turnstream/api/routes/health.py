"""`GET /health`: liveness, and whether Redis and the database answer."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from turnstream.api.deps import RuntimeDep
from turnstream.errors import DatabaseUnavailable

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    redis: str  # "ok", or "unavailable: <why>"
    database: str


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "Redis or the database does not answer"}},
)
async def health(rt: RuntimeDep) -> JSONResponse:
    checks = {"redis": "ok", "database": "ok"}
    try:
        await rt.redis.ping()
    except RedisError as exc:
        checks["redis"] = f"unavailable: {exc}"
    try:
        async with rt.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (DatabaseUnavailable, SQLAlchemyError, OSError) as exc:
        cause = exc.__cause__ if isinstance(exc, DatabaseUnavailable) else exc
        checks["database"] = f"unavailable: {type(cause or exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    body = {"status": "ok" if ready else "degraded", **checks}
    return JSONResponse(body, status_code=200 if ready else 503)
