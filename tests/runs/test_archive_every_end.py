"""Every way a run ends leaves its events in SQL exactly as its Redis stream has them.

On SQLite and PostgreSQL (`database_url`): completed, cancelled, failed (the
agent raised) and reaped (its worker stopped renewing its lease).
"""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime

import pytest
from helpers import NoBroker, eventually
from sse import parse_sse

from turnstream import events
from turnstream.keys import RunKeys
from turnstream.live.client import entries
from turnstream.live.status import RunStatus
from turnstream.runs.reaper import reap_once
from turnstream.runs.service import Multitask, start_run
from turnstream.store import archive

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


@pytest.fixture
def open_app(api, database_url):
    """`async with open_app(**overrides) as (http, headers, app)`, on SQLite or PostgreSQL."""
    return functools.partial(api, database_url=database_url)


async def _conversation(http, headers) -> str:
    return (await http.post("/api/v1/conversations", headers=headers)).json()["id"]


async def _post(http, headers, cid, content="hello"):
    return await http.post(
        f"/api/v1/conversations/{cid}/message/?stream=true",
        headers=headers,
        data={"content": content},
    )


async def _archived_equals_stream(rt, k: RunKeys) -> list:
    """Wait for the archive to be whole (its `end` goes in just after the finish); return it."""
    stream = entries(await rt.redis.xrange(k.stream))
    assert stream[-1].is_end and [e.seq for e in stream] == list(range(1, len(stream) + 1))

    async def whole():
        read = await archive.read(rt.sessions, session_id=k.sid, since=LONG_AGO)
        return read if read == stream else None

    return await eventually(whole, timeout=5, what=f"the archive of {k.sid} to equal its stream")


async def test_a_completed_run_is_archived_as_its_stream(open_app):
    async with open_app() as (http, headers, app):
        rt = app.state.runtime
        cid = await _conversation(http, headers)
        live = parse_sse((await _post(http, headers, cid)).text)
        k = RunKeys(cid, live[0].data["sessionId"])
        # Seen `end`: everything before it is in SQL already (written before the finish).
        early = await archive.read(rt.sessions, session_id=k.sid, since=LONG_AGO)
        assert [e.id for e in early] == [e.id for e in live[: len(early)]]
        assert len(early) >= len(live) - 1
        archived = await _archived_equals_stream(rt, k)
    assert [e.id for e in archived] == [e.id for e in live]
    assert [e.data.get("type") for e in live][-1] == "end" == archived[-1].type


async def test_a_cancelled_run_is_archived_as_its_stream(open_app):
    async with open_app(agent="fake_agents:slow") as (http, headers, app):
        rt = app.state.runtime
        cid = await _conversation(http, headers)
        posting = asyncio.create_task(_post(http, headers, cid))

        async def running():
            body = (
                await http.get(f"/api/v1/conversations/{cid}/active-session", headers=headers)
            ).json()
            return body if body.get("status") == "active" and body["cursor"] != "0-0" else None

        sid = (await eventually(running, timeout=10, what="the run to start"))["sessionId"]
        stopped = await http.post(f"/api/v1/conversations/{cid}/stop", headers=headers)
        assert stopped.json()["status"] == "cancelled"
        await posting
        archived = await _archived_equals_stream(rt, RunKeys(cid, sid))
    assert archived[-1].data == {"status": "cancelled", "messageId": archived[-1].data["messageId"]}


async def test_a_failed_run_is_archived_with_its_error_and_end(open_app):
    async with open_app(agent="fake_agents:failing") as (http, headers, app):
        rt = app.state.runtime
        cid = await _conversation(http, headers)
        live = parse_sse((await _post(http, headers, cid)).text)
        archived = await _archived_equals_stream(rt, RunKeys(cid, live[0].data["sessionId"]))
    assert [e.type for e in archived[-2:]] == ["error", "end"]
    assert archived[-2].data["code"] == "agent_error"


async def test_a_reaped_run_is_archived_with_the_reapers_error_and_end(open_app):
    async with open_app() as (http, headers, app):
        rt = app.state.runtime
        cid = await _conversation(http, headers)
        started = await start_run(
            rt, NoBroker(), cid=cid, user_id="alice", content="hi", multitask=Multitask.REJECT
        )
        k = RunKeys(cid, started.session_id)
        assert await rt.runs.claim(k, worker="dead-worker", lease_seconds=0.05)
        await rt.runs.append(k, [events.delta("half a "), events.delta("reply")])

        async def reaped():
            await reap_once(rt)  # the app's own reaper may get there first
            record = await rt.runs.get(k)
            return record.status is RunStatus.ERROR

        await eventually(reaped, timeout=5, what="the reaper to end the run")
        archived = await _archived_equals_stream(rt, k)
    assert [e.type for e in archived] == ["queued", "start", "delta", "delta", "error", "end"]
    assert archived[-2].data["code"] == "worker_lost"
