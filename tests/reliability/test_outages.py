"""Outages answer 503 with a JSON body, never a misleading 4xx or a bare 500."""

from __future__ import annotations

import pytest
from api_support import client_for, running_app, token_for
from helpers import free_port

from turnstream.errors import DatabaseUnavailable
from turnstream.store.db import create_engine


async def test_database_down_gives_503_json(settings):
    down = f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/nothing"
    async with (
        running_app(settings.model_copy(update={"database_url": down})) as application,
        client_for(application) as http,
    ):
        listed = await http.get(
            "/api/v1/conversations", headers={"Authorization": "Bearer ts_whatever"}
        )
        health = await http.get("/health")
    assert listed.status_code == 503
    assert listed.json()["error"] == "Database unavailable"
    assert listed.headers["retry-after"] == "5"
    assert health.status_code == 503
    assert health.json()["database"].startswith("unavailable")


async def test_a_connection_error_outside_the_database_is_no_database_outage(app, monkeypatch):
    """Only the engine reports the database down: a ConnectionResetError of anything
    else (a client hanging up, another service) is not answered 503 "Database unavailable"."""

    async def reset(**_query: object) -> None:
        raise ConnectionResetError(104, "Connection reset by peer")

    headers = await token_for(app, "alice")
    monkeypatch.setattr(app.state.runtime.store, "list_for_user", reset)
    async with client_for(app, raise_app_exceptions=False) as http:
        listed = await http.get("/api/v1/conversations", headers=headers)
    assert listed.status_code == 500
    assert listed.json()["error"] == "Internal server error"  # JSON even for a bug


@pytest.mark.parametrize("outages", [True, False])
async def test_only_an_engine_made_with_outages_reports_them(outages):
    down = f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/nothing"
    engine = create_engine(down, outages=outages)
    try:
        with pytest.raises(DatabaseUnavailable if outages else OSError) as raised:
            async with engine.connect():
                pass
    finally:
        await engine.dispose()
    # The driver's own error stays at hand: chained, or as it was (for the CLI's messages).
    assert isinstance(raised.value.__cause__ if outages else raised.value, ConnectionRefusedError)
