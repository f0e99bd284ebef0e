"""Outages answer 503 with a JSON body, never a misleading 4xx or a bare 500."""

from __future__ import annotations

import httpx
from helpers import free_port

from turnstream.api.app import create_app


async def test_database_down_gives_503_json(settings):
    down = f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/nothing"
    application = create_app(settings.model_copy(update={"database_url": down}))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            listed = await http.get(
                "/api/v1/conversations", headers={"Authorization": "Bearer ts_whatever"}
            )
            health = await http.get("/health")
    assert listed.status_code == 503
    assert listed.json()["error"] == "Database unavailable"
    assert listed.headers["retry-after"] == "5"
    assert health.status_code == 503
    assert health.json()["database"].startswith("unavailable")
