"""The routes outside /api/v1, which need no credential: `/health` and the chat page (`/`)."""

from __future__ import annotations

from fastapi import APIRouter

from turnstream.api.routes import health, web

router = APIRouter()
router.include_router(health.router)
router.include_router(web.router)
