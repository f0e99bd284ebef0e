"""The routes outside /api/v1, without an API token: `/health`, `/metrics`, the chat page (`/`)."""

from __future__ import annotations

from fastapi import APIRouter

from turnstream.api.routes import health, metrics, web

router = APIRouter()
router.include_router(health.router)
router.include_router(metrics.router)  # its own guard: a token, or loopback
router.include_router(web.router)
