"""Abuse limits: starting runs is rate limited per user, and so is how many run at once."""

from __future__ import annotations

import asyncio
import time

import pytest
from api_support import client_for, running_app, token_for
from helpers import eventually
from sse import parse_sse


@pytest.fixture
async def limited(settings):
    limits = {"runs_per_minute": 3, "max_active_runs": 1, "agent": "fake_agents:slow"}
    async with running_app(settings.model_copy(update=limits)) as application:
        alice, bob = await token_for(application, "alice"), await token_for(application, "bob")
        async with client_for(application) as http:
            yield http, alice, bob


async def _post(http, headers, cid, content="hi"):
    return await http.post(
        f"/api/v1/conversations/{cid}/message/?stream=true",
        headers=headers,
        data={"content": content},
    )


async def _cid(http, headers):
    return (await http.post("/api/v1/conversations", headers=headers)).json()["id"]


async def test_a_second_active_run_of_one_user_is_429_and_others_are_unaffected(limited):
    http, alice, bob = limited
    first_cid, second_cid = await _cid(http, alice), await _cid(http, alice)
    first = asyncio.create_task(_post(http, alice, first_cid))

    async def first_started() -> bool:
        url = f"/api/v1/conversations/{first_cid}/task-status"
        return (await http.get(url, headers=alice)).status_code == 200

    await eventually(first_started, timeout=10, what="alice's first run to start")
    refused = await _post(http, alice, second_cid)
    assert refused.status_code == 429
    assert refused.json()["error"] == "Too many active runs"
    assert refused.headers["retry-after"] == "5"
    messages = await http.get(f"/api/v1/conversations/{second_cid}/messages", headers=alice)
    assert messages.json()["items"] == []  # nothing stored for the refused message
    assert (await _post(http, bob, await _cid(http, bob))).status_code == 200  # bob is his own
    assert parse_sse((await first).text)[-1].data["status"] == "completed"
    assert (await _post(http, alice, second_cid)).status_code == 200  # the slot is free again


async def test_starting_more_runs_a_minute_than_allowed_is_429_with_retry_after(limited):
    http, alice, _bob = limited
    cid = await _cid(http, alice)
    first_started = time.monotonic()
    for _ in range(3):
        assert (await _post(http, alice, cid)).status_code == 200
    refused = await _post(http, alice, cid)
    since_first = time.monotonic() - first_started
    assert refused.status_code == 429
    assert refused.json()["error"] == "Too many runs started"
    # A sliding minute: the next start is possible once the first one is 60 s old.
    assert 60 - since_first - 1 <= int(refused.headers["retry-after"]) <= 60
    replies = (await http.get(f"/api/v1/conversations/{cid}/messages", headers=alice)).json()
    assert [m["role"] for m in replies["items"]] == ["user", "assistant"] * 3
