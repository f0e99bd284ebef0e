"""Ended runs answered from their archive once Redis has trimmed or expired their stream.

resume gives exactly the frames the live stream sent after any cursor;
active-session and task-status answer for the run; a cursor past its end is
still 400; a running run's trimmed cursor is still 409; deleting the
conversation deletes the archive.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from helpers import eventually
from sqlalchemy import delete, func, select
from sse import parse_sse

from turnstream import keys
from turnstream.keys import RunField, RunKeys
from turnstream.store import archive
from turnstream.store.models import RunEvents

LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)
# 25 ms between words: past the 20 ms write coalescing, so each word is its own event.
TRIMMING = {"stream_maxlen": 4, "demo_delay_ms": 25}


async def _conversation(http, headers) -> str:
    return (await http.post("/api/v1/conversations", headers=headers)).json()["id"]


async def _post(http, headers, cid, content="hello"):
    response = await http.post(
        f"/api/v1/conversations/{cid}/message/?stream=true",
        headers=headers,
        data={"content": content},
    )
    assert response.status_code == 200, response.text
    return response.text


def _frames(body: str) -> list[str]:
    """The SSE frames of a body, each with its closing blank line."""
    return [frame + "\r\n\r\n" for frame in body.split("\r\n\r\n") if frame]


async def _resume(http, headers, cid, sid, cursor):
    return await http.get(
        f"/api/v1/conversations/{cid}/resume/{sid}", params={"cursor": cursor}, headers=headers
    )


async def _whole(rt, sid: str) -> list:
    async def read():
        entries = await archive.read(rt.sessions, session_id=sid, since=LONG_AGO)
        return entries if entries and entries[-1].is_end else None

    return await eventually(read, timeout=5, what=f"the archive of {sid} to hold its end")


async def _assert_resumes_give_exactly_what_follows(http, headers, cid, sid, body):
    frames, events = _frames(body), parse_sse(body)
    assert len(frames) == len(events) and events[-1].event == "end"
    middle = len(events) // 2
    for cursor, following in [
        ("0-0", frames),
        (events[0].id, frames[1:]),
        (events[middle].id, frames[middle + 1 :]),
        (events[-2].id, frames[-1:]),
        (events[-1].id, []),
    ]:
        response = await _resume(http, headers, cid, sid, cursor)
        assert response.status_code == 200, (cursor, response.text)
        assert response.text == "".join(following), cursor  # the same bytes, frame by frame


async def test_a_trimmed_ended_run_resumes_from_its_archive_from_any_cursor(api):
    async with api(**TRIMMING) as (http, headers, app):
        rt = app.state.runtime
        cid = await _conversation(http, headers)
        body = await _post(http, headers, cid)
        sid = parse_sse(body)[0].data["sessionId"]
        k = RunKeys(cid, sid)
        assert len(parse_sse(body)) >= 10
        assert await rt.redis.xlen(k.stream) <= 5  # Redis holds only the newest few
        assert await rt.redis.hget(k.run, RunField.TRIMMED_THROUGH)
        await _assert_resumes_give_exactly_what_follows(http, headers, cid, sid, body)
        await _whole(rt, sid)
        await _assert_resumes_give_exactly_what_follows(http, headers, cid, sid, body)
        # While the archive lacks `end` (it goes in just after the finish script),
        # the tail comes from Redis.
        async with rt.sessions() as db, db.begin():
            last = await db.scalar(select(func.max(RunEvents.first_seq)))
            await db.execute(delete(RunEvents).where(RunEvents.first_seq == last))
        assert not (await archive.read(rt.sessions, session_id=sid, since=LONG_AGO))[-1].is_end
        await _assert_resumes_give_exactly_what_follows(http, headers, cid, sid, body)


async def test_after_the_stream_expired_the_archive_answers(api):
    async with api(stream_ttl=1) as (http, headers, app):
        rt = app.state.runtime
        cid = await _conversation(http, headers)
        body = await _post(http, headers, cid)
        events = parse_sse(body)
        sid = events[0].data["sessionId"]
        k = RunKeys(cid, sid)
        url = f"/api/v1/conversations/{cid}"
        from_redis = (await http.get(f"{url}/active-session", headers=headers)).json()
        assert await rt.redis.exists(k.run)  # that answer came from Redis
        await _whole(rt, sid)

        async def expired() -> bool:
            return not await rt.redis.exists(k.active, k.run, k.status, k.stream)

        await eventually(expired, timeout=5, what="the run's keys to expire (stream_ttl=1)")
        await _assert_resumes_give_exactly_what_follows(http, headers, cid, sid, body)
        active = await http.get(f"{url}/active-session", headers=headers)
        task = await http.get(f"{url}/task-status", headers=headers)
        past = await _resume(http, headers, cid, sid, f"{int(events[-1].id.split('-')[0]) + 1}-0")
        malformed = await _resume(http, headers, cid, sid, "later")
    assert active.status_code == 200 and task.status_code == 200
    body_now = active.json()
    assert body_now == {**from_redis, "startedAt": body_now["startedAt"]}
    assert body_now["status"] == "completed" and body_now["cursor"] == events[-1].id
    assert body_now["lastActivity"] == events[-1].data["ts"]
    # The SQL run log records the run a moment after Redis does: a real time, not a guess.
    assert 0 <= body_now["startedAt"] - from_redis["startedAt"] < 1000
    assert body_now["startedAt"] <= events[0].data["ts"] + 1000
    assert task.json() == {
        "isActive": False,
        "sessionId": sid,
        "estimatedCompletion": events[-1].data["ts"],  # the real end
        "conversationId": cid,
    }
    assert past.status_code == 409 and past.json()["error"] == "Cursor ahead of the run"
    assert past.json()["newest"] == events[-1].id
    assert malformed.status_code == 400


async def test_an_archive_without_its_end_and_no_stream_is_404(api):
    async with api(stream_ttl=1) as (http, headers, app):
        rt = app.state.runtime
        cid = await _conversation(http, headers)
        sid = parse_sse(await _post(http, headers, cid))[0].data["sessionId"]
        await _whole(rt, sid)
        async with rt.sessions() as db, db.begin():  # as if the process died before `end` went in
            last = await db.scalar(select(func.max(RunEvents.first_seq)))
            await db.execute(delete(RunEvents).where(RunEvents.first_seq == last))
        k = RunKeys(cid, sid)

        async def expired() -> bool:
            return not await rt.redis.exists(k.run, k.stream)

        await eventually(expired, timeout=5, what="the run's keys to expire (stream_ttl=1)")
        response = await _resume(http, headers, cid, sid, "0-0")
    assert response.status_code == 404
    assert response.json() == {"error": "Session not found or expired", "conversationId": cid}


async def test_a_running_runs_trimmed_cursor_is_still_409(api):
    # A lease renewed every 0.5 s: the watcher archives, and so trims, while the run runs.
    async with api(**TRIMMING, demo_words=100, lease_seconds=1.5) as (http, headers, app):
        rt = app.state.runtime
        cid = await _conversation(http, headers)
        posting = asyncio.create_task(_post(http, headers, cid))

        async def trimmed_while_running():
            sid = await rt.redis.get(keys.active(cid))
            if sid is None:
                return None
            k = RunKeys(cid, sid)
            status, trimmed = await rt.redis.hmget(k.run, ["status", RunField.TRIMMED_THROUGH])
            return sid if status == "running" and trimmed else None

        sid = await eventually(trimmed_while_running, timeout=10, what="a trim mid-run")
        conflict = await _resume(http, headers, cid, sid, "0-0")
        kept_while_running = await rt.redis.xlen(RunKeys(cid, sid).stream)
        body = await posting
        await _whole(rt, sid)
        after = await _resume(http, headers, cid, sid, "0-0")
    assert conflict.status_code == 409 and conflict.json()["error"] == "Cursor expired"
    assert kept_while_running < len(parse_sse(body))
    assert after.status_code == 200 and after.text == body


async def test_deleting_the_conversation_deletes_the_archive(api):
    async with api() as (http, headers, app):
        rt = app.state.runtime
        cid = await _conversation(http, headers)
        sid = parse_sse(await _post(http, headers, cid))[0].data["sessionId"]
        await _whole(rt, sid)
        deleted = await http.delete(f"/api/v1/conversations/{cid}", headers=headers)
        assert deleted.status_code == 204
        async with rt.sessions() as db:
            rows = await db.scalar(
                select(func.count()).select_from(RunEvents).where(RunEvents.run_id == sid)
            )
        gone = await _resume(http, headers, cid, sid, "0-0")
    assert rows == 0
    assert gone.status_code == 403


async def test_no_archive_when_the_retention_is_0(api):
    async with api(archive_retention=0) as (http, headers, app):
        rt = app.state.runtime
        cid = await _conversation(http, headers)
        sid = parse_sse(await _post(http, headers, cid))[0].data["sessionId"]
        assert await rt.redis.hget(RunKeys(cid, sid).run, RunField.ARCHIVED_THROUGH) is None
        async with rt.sessions() as db:
            rows = await db.scalar(select(func.count()).select_from(RunEvents))
        run = (await http.get(f"/api/v1/conversations/{cid}/runs/{sid}", headers=headers)).json()
    assert rows == 0 and run["status"] == "completed"  # the run log still records its end
