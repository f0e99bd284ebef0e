"""GET /metrics, X-Request-Id and JSON log lines, checked as an operator would.

The counters live in the test process's registry, shared by every app a test
starts: each test compares a scrape after with one before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re

import httpx
import pytest
from api_support import client_for, running_app, token_for
from helpers import NoBroker, eventually
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError
from sse import parse_sse

from turnstream import logs, metrics
from turnstream.errors import DatabaseUnavailable, IdentityProviderUnavailable, RedisUnavailable
from turnstream.keys import RunKeys
from turnstream.runs.service import Multitask, start_run

API = "/api/v1"


class Scrape:
    """One /metrics answer, parsed by prometheus-client's own parser."""

    def __init__(self, text: str) -> None:
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> Scrape:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(response.text)


async def _conversation(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    response = await client.post(f"{API}/conversations", headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def _send(client, headers, cid, *, stream: str = "false") -> httpx.Response:
    url = f"{API}/conversations/{cid}/message/?stream={stream}"
    return await client.post(url, headers=headers, data={"content": "hi"})


async def _running_session(client, headers, cid) -> str:
    async def running():
        body = (await client.get(f"{API}/conversations/{cid}/task-status", headers=headers)).json()
        return body.get("sessionId") if body.get("isActive") else None

    return await eventually(running, timeout=10, what="a run of the conversation to be active")


async def test_runs_are_counted_by_status_with_their_durations(settings):
    slow = settings.model_copy(update={"agent": "fake_agents:slow"})
    failing = settings.model_copy(update={"agent": "fake_agents:failing"})
    async with running_app(slow) as app, client_for(app) as client:
        before = await scrape(client)
        headers = await token_for(app, "alice")
        cid = await _conversation(client, headers)
        assert (await _send(client, headers, cid)).status_code == 200  # waits: completed
        cancelled = asyncio.create_task(_send(client, headers, cid))
        await _running_session(client, headers, cid)

        async def first_event_written() -> bool:  # else a stop could come before it
            name = "turnstream_time_to_first_event_seconds_count"
            return (await scrape(client))(name) - before(name) == 2

        await eventually(first_event_written, timeout=10, what="the second run's first event")
        stop = await client.post(f"{API}/conversations/{cid}/stop", headers=headers)
        assert stop.json()["status"] == "cancelled"
        await cancelled
        middle = await scrape(client)
    async with running_app(failing) as app, client_for(app) as client:
        headers = await token_for(app, "alice")
        cid = await _conversation(client, headers)
        events = parse_sse((await _send(client, headers, cid, stream="true")).text)
        assert events[-1].data["status"] == "error"
        after = await scrape(client)

    def delta(name: str, scraped: Scrape, **labels: str) -> float:
        return scraped(name, **labels) - before(name, **labels)

    for status in ("completed", "cancelled"):
        assert delta("turnstream_runs_total", middle, status=status) == 1
        assert delta("turnstream_run_duration_seconds_count", middle, status=status) == 1
    assert delta("turnstream_runs_total", after, status="error") == 1
    assert delta("turnstream_runs_total", after, status="completed") == 1  # no other since
    # The slow agent's 40 words take 2 s: the completed run's duration says so.
    assert delta("turnstream_run_duration_seconds_sum", middle, status="completed") >= 1.9
    assert delta("turnstream_time_to_first_event_seconds_count", after) == 3
    assert delta("turnstream_events_written_total", after, type="delta") >= 3


async def test_resumes_are_counted_by_cursor_kind_and_status(settings):
    """By where they resume from and by status (a 409 for an expired cursor alike)."""
    async with running_app(settings) as app, client_for(app) as client:
        headers = await token_for(app, "alice")
        cid = await _conversation(client, headers)
        sid = (await _send(client, headers, cid)).headers["X-Session-Id"]
        resume = f"{API}/conversations/{cid}/resume/{sid}"
        before = await scrape(client)
        ok = [
            await client.get(f"{resume}?cursor=0-0", headers=headers),
            await client.get(resume, headers=headers),  # no cursor: from the start too
            await client.post(f"{resume}?cursor=0-0", headers=headers),
        ]
        first_id = parse_sse(ok[0].text)[0].id
        ok.append(await client.get(f"{resume}?cursor={first_id}", headers=headers))
        ok.append(await client.get(resume, headers={**headers, "Last-Event-ID": first_id}))
        assert [r.status_code for r in ok] == [200] * 5
        unknown = await client.get(
            f"{API}/conversations/{cid}/resume/conversation:alice:nope", headers=headers
        )
        assert unknown.status_code == 404
        malformed = await client.get(f"{resume}?cursor=yesterday", headers=headers)
        assert malformed.status_code == 400
        after = await scrape(client)

    def delta(scraped: Scrape, cursor: str, status: str) -> float:
        name, labels = "turnstream_resumes_total", {"cursor": cursor, "status": status}
        return scraped(name, **labels) - before(name, **labels)

    assert delta(after, "start", "200") == 3
    assert delta(after, "cursor", "200") == 1
    assert delta(after, "last_event_id", "200") == 1
    assert delta(after, "start", "404") == 1
    assert delta(after, "cursor", "400") == 1


async def test_sse_clients_are_counted_while_they_follow_and_not_after(settings):
    slow = settings.model_copy(update={"agent": "fake_agents:slow"})
    async with running_app(slow) as app, client_for(app) as client:
        headers = await token_for(app, "alice")
        cid = await _conversation(client, headers)
        base = (await scrape(client))("turnstream_sse_clients")
        sender = asyncio.create_task(_send(client, headers, cid, stream="true"))
        sid = await _running_session(client, headers, cid)

        async def followers() -> float:
            return (await scrape(client))("turnstream_sse_clients") - base

        await eventually(lambda: _equals(followers(), 1), timeout=5, what="one SSE client")
        resumer = asyncio.create_task(
            client.get(f"{API}/conversations/{cid}/resume/{sid}", headers=headers)
        )
        await eventually(lambda: _equals(followers(), 2), timeout=5, what="two SSE clients")
        resumer.cancel()  # this client hangs up mid-stream
        with pytest.raises(asyncio.CancelledError):
            await resumer
        await eventually(lambda: _equals(followers(), 1), timeout=5, what="one SSE client left")
        await sender  # the run's end closes the other stream
        assert await followers() == 0


async def _equals(value, expected: float) -> bool:
    return await value == expected


async def _queued_run(app, client, headers) -> RunKeys:
    cid = await _conversation(client, headers)
    rt = app.state.runtime
    started = await start_run(
        rt, NoBroker(), cid=cid, user_id="alice", content="hi", multitask=Multitask.REJECT
    )
    return RunKeys(cid, started.session_id)


async def test_queue_depth_and_age_and_active_runs_come_from_redis(client, app, alice):
    empty = await scrape(client)
    assert empty("turnstream_queued_runs") == 0 and empty("turnstream_active_runs") == 0
    assert empty("turnstream_queue_oldest_age_seconds") == 0
    k = await _queued_run(app, client, alice)
    await asyncio.sleep(0.3)
    queued = await scrape(client)
    assert queued("turnstream_queued_runs") == 1
    assert 0.3 <= queued("turnstream_queue_oldest_age_seconds") < 10
    assert await app.state.runtime.runs.claim(k, worker="w", lease_seconds=60)
    claimed = await scrape(client)
    assert claimed("turnstream_queued_runs") == 0 and claimed("turnstream_active_runs") == 1


async def test_a_reaped_lapsed_lease_is_counted(client, app, alice):
    """The app's own reaper (every second) ends the run whose worker stopped renewing it."""
    before = await scrape(client)
    k = await _queued_run(app, client, alice)
    assert await app.state.runtime.runs.claim(k, worker="dead-worker", lease_seconds=0.05)

    async def reaped() -> bool:
        now = await scrape(client)
        return now("turnstream_reaper_actions_total", action="worker_lost") > before(
            "turnstream_reaper_actions_total", action="worker_lost"
        )

    await eventually(reaped, timeout=5, what="the reaper to end the run")
    after = await scrape(client)
    lost = "turnstream_reaper_actions_total"
    assert after(lost, action="worker_lost") - before(lost, action="worker_lost") == 1
    errors = after("turnstream_runs_total", status="error")
    assert errors - before("turnstream_runs_total", status="error") == 1


async def test_metrics_need_the_token_when_one_is_set(settings):
    guarded = settings.model_copy(update={"metrics_token": "scrape-me"})
    async with running_app(guarded) as app, client_for(app) as client:
        missing = await client.get("/metrics")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert "TURNSTREAM_METRICS_TOKEN" in missing.json()["detail"]
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert right.status_code == 200 and "turnstream_runs_total" in right.text


async def test_without_a_token_only_loopback_clients_get_the_metrics(settings):
    async with running_app(settings) as app:
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as remote:
            refused = await remote.get("/metrics")
            assert refused.status_code == 403
            assert "TURNSTREAM_METRICS_PUBLIC" in refused.json()["detail"]
        async with client_for(app) as local:  # httpx's ASGI client is 127.0.0.1
            assert (await local.get("/metrics")).status_code == 200
    public = settings.model_copy(update={"metrics_public": True})
    async with running_app(public) as app:
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as remote:
            assert (await remote.get("/metrics")).status_code == 200


async def test_the_request_id_is_echoed_or_made(client, alice):
    given = await client.get(f"{API}/conversations", headers={**alice, "X-Request-Id": "abc-123"})
    assert given.headers["X-Request-Id"] == "abc-123"
    made = await client.get(f"{API}/conversations", headers=alice)
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-Id"])
    for unfit in ("has space", "x" * 129, 'quote"d', "new\\line"):
        refused = await client.get("/health", headers={"X-Request-Id": unfit})
        assert re.fullmatch(r"[0-9a-f]{32}", refused.headers["X-Request-Id"]), unfit
    # Every answer carries one: a 401, and the 431 the header limit answers first.
    assert "X-Request-Id" in (await client.get(f"{API}/conversations")).headers
    huge = await client.get("/health", headers={"X-Big": "x" * 20_000, "X-Request-Id": "r1"})
    assert huge.status_code == 431 and huge.headers["X-Request-Id"] == "r1"


async def test_a_runs_json_log_lines_carry_its_ids(settings, caplog):
    failing = settings.model_copy(update={"agent": "fake_agents:failing"})
    caplog.handler.addFilter(logs.ContextFilter())  # as logs.configure does for its handlers
    with caplog.at_level(logging.INFO, logger="turnstream"):
        async with running_app(failing) as app, client_for(app) as client:
            headers = await token_for(app, "alice")
            cid = await _conversation(client, headers)
            response = await _send(client, headers, cid, stream="true")
            sid = response.headers["X-Session-Id"]
    formatter = logs.JsonFormatter()
    lines = [json.loads(formatter.format(record)) for record in caplog.records]
    failed = [line for line in lines if line["message"] == f"run {sid} failed"]
    assert len(failed) == 1, lines
    line = failed[0]
    assert set(line) >= {"ts", "level", "logger", "message", "exc"}
    assert (line["level"], line["logger"]) == ("ERROR", "turnstream.runs")
    assert (line["conversation_id"], line["session_id"], line["user_id"]) == (cid, sid, "alice")
    assert "the model fell over" in line["exc"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])


def test_backend_errors_are_told_apart_by_where_they_come_from():
    assert metrics.backend_of(RedisUnavailable()) == "redis"
    assert metrics.backend_of(RedisConnectionError("refused")) == "redis"
    assert metrics.backend_of(DatabaseUnavailable()) == "database"
    assert metrics.backend_of(OperationalError("SELECT 1", {}, Exception("gone"))) == "database"
    assert metrics.backend_of(IdentityProviderUnavailable()) == "identity_provider"
    assert metrics.backend_of(ValueError("mine")) == "other"
