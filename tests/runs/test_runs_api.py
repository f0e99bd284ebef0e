"""Runs through the in-process API: multitask, stop, idempotency, cursors, regenerate."""

from __future__ import annotations

import asyncio

import pytest
from api_support import client_for, running_app, token_for
from helpers import eventually
from redis.asyncio import Redis
from sse import parse_sse

from turnstream.keys import RunField, RunKeys

pytestmark = pytest.mark.on_cluster_too  # and once more on a Redis Cluster (conftest.py)


@pytest.fixture
async def slow_app(settings):
    """Replies long enough (20 words, 50 ms apart: ~1 s) to act while they run."""
    async with running_app(
        settings.model_copy(update={"demo_words": 20, "demo_delay_ms": 50})
    ) as application:
        yield application


@pytest.fixture
async def slow_client(slow_app):
    async with client_for(slow_app) as http:
        yield http


async def _conversation(http, headers) -> str:
    return (await http.post("/api/v1/conversations", headers=headers)).json()["id"]


async def _post(http, headers, cid, content, **params):
    query = "&".join(f"{k}={v}" for k, v in {"stream": "true", **params}.items())
    return await http.post(
        f"/api/v1/conversations/{cid}/message/?{query}", headers=headers, data={"content": content}
    )


async def _until_running(http, app, headers, cid, *, min_seq: int = 4) -> dict:
    """Wait until the newest run has written at least `min_seq` events; its active-session."""
    redis: Redis = app.state.runtime.redis

    async def running() -> dict | None:
        body = (
            await http.get(f"/api/v1/conversations/{cid}/active-session", headers=headers)
        ).json()
        if body.get("status") == "active":
            seq = await redis.hget(RunKeys(cid, body["sessionId"]).run, RunField.SEQ)
            if int(seq or 0) >= min_seq:
                return body
        return None

    return await eventually(running, timeout=10, what=f"the run in {cid} to write {min_seq} events")


async def _messages(http, headers, cid) -> list[dict]:
    return (await http.get(f"/api/v1/conversations/{cid}/messages", headers=headers)).json()[
        "items"
    ]


def _ends(events):
    return [e for e in events if e.event == "end"]


async def test_stream_carries_spec_framing_and_ends_once(client, make_token):
    headers = await make_token("alice")
    cid = await _conversation(client, headers)
    response = await _post(client, headers, cid, "hello")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-accel-buffering"] == "no"
    sid = response.headers["x-session-id"]
    assert sid.startswith("conversation:alice:")
    events = parse_sse(response.text)
    assert [e.event for e in events[:2]] == ["queued", "start"]
    assert [e.data["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all(e.data["type"] == e.event and isinstance(e.data["ts"], int) for e in events)
    ends = _ends(events)
    assert len(ends) == 1 and events[-1].event == "end"
    reply = next(m for m in await _messages(client, headers, cid) if m["role"] == "assistant")
    assert ends[0].data == {**ends[0].data, "status": "completed", "messageId": reply["id"]}
    text = "".join(e.data["text"] for e in events if e.event == "delta")
    assert text == reply["content"] and len(text.split()) == 8


async def test_resume_after_a_cursor_yields_exactly_the_later_events(client, make_token):
    headers = await make_token("alice")
    cid = await _conversation(client, headers)
    full = parse_sse((await _post(client, headers, cid, "hello")).text)
    sid = full[0].data["sessionId"]
    for k in (0, 3, len(full) - 2):
        url = f"/api/v1/conversations/{cid}/resume/{sid}?cursor={full[k].id}"
        assert parse_sse((await client.get(url, headers=headers)).text) == full[k + 1 :]
    by_header = await client.post(
        f"/api/v1/conversations/{cid}/resume/{sid}",
        headers={**headers, "Last-Event-ID": full[2].id},
    )
    assert parse_sse(by_header.text) == full[3:]
    past_end = await client.get(
        f"/api/v1/conversations/{cid}/resume/{sid}?cursor={full[-1].id}", headers=headers
    )
    assert parse_sse(past_end.text) == []


@pytest.mark.parametrize(
    "cursor", ["abc", "1-2-3", "-1", "1-", "99999999999999999999999-0", "18446744073709551616-0"]
)
async def test_malformed_cursor_is_400(client, make_token, cursor):
    headers = await make_token("alice")
    cid = await _conversation(client, headers)
    sid = parse_sse((await _post(client, headers, cid, "hi")).text)[0].data["sessionId"]
    response = await client.get(
        f"/api/v1/conversations/{cid}/resume/{sid}", params={"cursor": cursor}, headers=headers
    )
    assert response.status_code == 400
    assert response.json()["error"] == "Invalid cursor"


async def test_unknown_session_is_404_with_the_spec_body(client, make_token):
    headers = await make_token("alice")
    cid = await _conversation(client, headers)
    response = await client.get(
        f"/api/v1/conversations/{cid}/resume/conversation:alice:nope", headers=headers
    )
    assert response.status_code == 404
    assert response.json() == {"error": "Session not found or expired", "conversationId": cid}


async def test_cursor_older_than_the_trimmed_stream_is_409_with_a_resync_point(settings):
    # 25 ms between words: past the 20 ms write coalescing, so each word is its own event.
    # Without an archive (retention 0): an ended run with one is replayed from it instead
    # (tests/runs/test_archive_api.py, which also has the 409 of a running run).
    update = {"stream_maxlen": 4, "demo_delay_ms": 25, "archive_retention": 0}
    trimming = settings.model_copy(update=update)
    async with running_app(trimming) as application:
        async with client_for(application) as client:
            headers = await token_for(application, "alice")
            cid = await _conversation(client, headers)
            live = parse_sse((await _post(client, headers, cid, "hello")).text)
            sid = live[0].data["sessionId"]
            assert [e.data["seq"] for e in live] == list(range(1, len(live) + 1))
            assert len(live) >= 10
            response = await client.get(
                f"/api/v1/conversations/{cid}/resume/{sid}", headers=headers
            )
            assert response.status_code == 409
            body = response.json()
            assert body["error"] == "Cursor expired" and body["sessionId"] == sid
            resync = body["resync"]["cursor"]
            rest = parse_sse(
                (
                    await client.get(
                        f"/api/v1/conversations/{cid}/resume/{sid}?cursor={resync}", headers=headers
                    )
                ).text
            )
            assert 4 <= len(rest) <= 5 and rest == live[-len(rest) :]
            assert live[-len(rest) - 1].id == resync  # exactly the newest trimmed entry
            ok = await client.get(
                f"/api/v1/conversations/{cid}/resume/{sid}?cursor={live[-3].id}", headers=headers
            )
            assert parse_sse(ok.text) == live[-2:]


async def test_second_message_is_rejected_while_a_run_is_active(slow_app, slow_client):
    headers = await token_for(slow_app, "alice")
    cid = await _conversation(slow_client, headers)
    first = asyncio.create_task(_post(slow_client, headers, cid, "one"))
    active = await _until_running(slow_client, slow_app, headers, cid)
    second = await _post(slow_client, headers, cid, "two")
    assert second.status_code == 409
    assert second.json()["sessionId"] == active["sessionId"]
    first_events = parse_sse((await first).text)
    assert [e.data for e in first_events if e.event == "error"] == []
    assert _ends(first_events)[0].data["status"] == "completed"
    assert [
        m["content"] for m in await _messages(slow_client, headers, cid) if m["role"] == "user"
    ] == ["one"]


async def test_interrupt_cancels_the_active_run_then_starts(slow_app, slow_client):
    headers = await token_for(slow_app, "alice")
    cid = await _conversation(slow_client, headers)
    first = asyncio.create_task(_post(slow_client, headers, cid, "one"))
    await _until_running(slow_client, slow_app, headers, cid)
    second = await _post(slow_client, headers, cid, "two", multitask="interrupt")
    assert second.status_code == 200
    assert _ends(parse_sse((await first).text))[0].data["status"] == "cancelled"
    assert _ends(parse_sse(second.text))[0].data["status"] == "completed"
    messages = await _messages(slow_client, headers, cid)
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"),
        ("assistant", "cancelled"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]


async def test_enqueue_starts_after_the_active_run_ends(slow_app, slow_client):
    headers = await token_for(slow_app, "alice")
    cid = await _conversation(slow_client, headers)
    first = asyncio.create_task(_post(slow_client, headers, cid, "one"))
    await _until_running(slow_client, slow_app, headers, cid)
    second = await _post(slow_client, headers, cid, "two", multitask="enqueue")
    first_events, second_events = parse_sse((await first).text), parse_sse(second.text)
    assert _ends(first_events)[0].data["status"] == "completed"
    assert _ends(second_events)[0].data["status"] == "completed"
    second_start = next(e for e in second_events if e.event == "start")
    assert second_start.data["ts"] >= first_events[-1].data["ts"]
    messages = await _messages(slow_client, headers, cid)
    assert [(m["role"], m["content"]) for m in messages][0::2] == [("user", "one"), ("user", "two")]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]


async def test_stopping_an_enqueued_run_while_it_waits_keeps_the_conversation_in_order(
    slow_app, slow_client
):
    headers = await token_for(slow_app, "alice")
    cid = await _conversation(slow_client, headers)
    first = asyncio.create_task(_post(slow_client, headers, cid, "one"))
    running = await _until_running(slow_client, slow_app, headers, cid)
    second = asyncio.create_task(_post(slow_client, headers, cid, "two", multitask="enqueue"))

    async def newest_if_enqueued() -> str | None:
        newest = await slow_client.get(
            f"/api/v1/conversations/{cid}/active-session", headers=headers
        )
        sid = newest.json()["sessionId"]
        return sid if sid != running["sessionId"] else None

    waiting = await eventually(newest_if_enqueued, timeout=10, what="the enqueued run to be newest")
    stopped = await slow_client.post(
        f"/api/v1/conversations/{cid}/stop", params={"session_id": waiting}, headers=headers
    )
    assert stopped.status_code == 200, stopped.text
    assert stopped.json() == {"status": "cancelled", "sessionId": waiting}
    first_events, second_events = parse_sse((await first).text), parse_sse((await second).text)
    assert _ends(first_events)[0].data["status"] == "completed"  # the stop was not for it
    assert [e.event for e in second_events] == ["queued", "start", "end"]  # no agent ran
    messages = await _messages(slow_client, headers, cid)
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("user", "complete"),
        ("assistant", "cancelled"),
    ]
    assert messages[2]["content"] == "two" and messages[3]["content"] == ""


async def test_stop_mid_run_keeps_the_partial_reply_marked_cancelled(slow_app, slow_client):
    headers = await token_for(slow_app, "alice")
    cid = await _conversation(slow_client, headers)
    streaming = asyncio.create_task(_post(slow_client, headers, cid, "one"))
    active = await _until_running(slow_client, slow_app, headers, cid, min_seq=6)
    stopped = await slow_client.post(f"/api/v1/conversations/{cid}/stop", headers=headers)
    assert stopped.status_code == 200
    assert stopped.json() == {"status": "cancelled", "sessionId": active["sessionId"]}
    events = parse_sse((await streaming).text)
    assert [e.data["status"] for e in _ends(events)] == ["cancelled"]
    streamed = "".join(e.data["text"] for e in events if e.event == "delta")
    reply = (await _messages(slow_client, headers, cid))[-1]
    assert reply["status"] == "cancelled"
    assert reply["content"] == streamed
    assert 0 < len(streamed.split()) < 20
    assert (
        await slow_client.post(f"/api/v1/conversations/{cid}/stop", headers=headers)
    ).status_code == 404


async def test_idempotency_key_returns_the_first_run(client, make_token):
    headers = {**(await make_token("alice")), "Idempotency-Key": "abc-123"}
    cid = await _conversation(client, headers)
    first = await _post(client, headers, cid, "hello")
    again = await _post(client, headers, cid, "hello")
    assert again.status_code == 200
    assert again.headers["x-session-id"] == first.headers["x-session-id"]
    assert parse_sse(again.text) == parse_sse(first.text)
    assert [m["role"] for m in await _messages(client, headers, cid)] == ["user", "assistant"]


async def test_concurrent_requests_with_one_idempotency_key_start_one_run(client, make_token):
    """A client retrying a request whose answer it never saw, while the first still runs."""
    headers = await make_token("alice")
    for attempt in range(5):
        cid = await _conversation(client, headers)
        keyed = {**headers, "Idempotency-Key": f"retry-{attempt}"}
        url = f"/api/v1/conversations/{cid}/message/?stream=false"
        both = await asyncio.gather(
            *(client.post(url, headers=keyed, data={"content": "hi"}) for _ in range(2))
        )
        later = await client.post(url, headers=keyed, data={"content": "hi"})
        assert [r.status_code for r in both] == [200, 200], [r.text for r in both]
        sids = {r.headers["x-session-id"] for r in [*both, later]}
        assert len(sids) == 1
        assert [m["role"] for m in await _messages(client, headers, cid)] == ["user", "assistant"]


async def test_regenerate_replaces_the_last_reply(client, make_token):
    headers = await make_token("alice")
    cid = await _conversation(client, headers)
    await _post(client, headers, cid, "hello")
    before = await _messages(client, headers, cid)
    response = await client.post(
        f"/api/v1/conversations/{cid}/regenerate?stream=false", headers=headers
    )
    assert response.status_code == 200
    after = await _messages(client, headers, cid)
    assert [m["role"] for m in after] == ["user", "assistant"]
    assert after[0]["id"] == before[0]["id"]
    assert after[1]["id"] != before[1]["id"] and after[1]["content"] == before[1]["content"]


async def test_run_record_has_real_times_and_usage(client, make_token):
    headers = await make_token("alice")
    cid = await _conversation(client, headers)
    events = parse_sse((await _post(client, headers, cid, "hello there")).text)
    sid = events[0].data["sessionId"]
    run = (await client.get(f"/api/v1/conversations/{cid}/runs/{sid}", headers=headers)).json()
    assert run["status"] == "completed"
    assert run["createdAt"] == events[0].data["ts"]
    assert run["startedAt"] == events[1].data["ts"]
    assert run["endedAt"] == events[-1].data["ts"]
    assert (run["promptTokens"], run["completionTokens"]) == (2, 8)
    conversation = (await client.get(f"/api/v1/conversations/{cid}", headers=headers)).json()
    assert (conversation["prompt_tokens"], conversation["completion_tokens"]) == (2, 8)
