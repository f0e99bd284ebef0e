"""Well-formed but forged cursors, session ids and stream tokens: a clear 4xx, nothing changed.

Malformed ones are covered in tests/runs/test_runs_api.py (cursors) and
tests/security/test_isolation.py (conversation ids). Here every value parses,
but was never issued for the place it is used:

- a cursor past the run's newest event (made up, taken from a newer run, or
  one whose events a failover lost) is 409 `Cursor ahead of the run`, naming
  the run's newest event: waiting after it would silently skip every event
  still to come, `end` included;
- a session id of nobody's run, of another user's run, or of another of the
  caller's own conversations is 404 on resume, runs and stop, and stops nothing.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from api_support import client_for, running_app, token_for
from helpers import eventually
from sse import parse_sse

from turnstream.ids import session_id, uuid7

API = "/api/v1/conversations"


async def _conversation(client, headers) -> str:
    response = await client.post(API, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def _run(client, headers, cid: str, content: str = "hi") -> str:
    """Post a message, wait for the reply; the run's session id."""
    response = await client.post(
        f"{API}/{cid}/message/?stream=false", headers=headers, data={"content": content}
    )
    assert response.status_code == 200, response.text
    return response.headers["x-session-id"]


async def _events(client, headers, cid: str, sid: str, **params) -> httpx.Response:
    return await client.get(f"{API}/{cid}/resume/{sid}", headers=headers, params=params)


async def _snapshot(client, headers, cid: str) -> dict:
    """What a forged request must leave as it was: messages, runs, the newest session."""
    messages = (await client.get(f"{API}/{cid}/messages", headers=headers)).json()
    active = (await client.get(f"{API}/{cid}/active-session", headers=headers)).json()
    sids = {m["session_id"] for m in messages["items"] if m["session_id"]}
    runs = {
        sid: (await client.get(f"{API}/{cid}/runs/{sid}", headers=headers)).json() for sid in sids
    }
    return {"messages": messages, "active": active, "runs": runs}


def _assert_cursor_ahead(response: httpx.Response, sid: str, newest: str) -> None:
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == "Cursor ahead of the run"
    assert (body["sessionId"], body["newest"]) == (sid, newest)
    assert newest in body["detail"] and "0-0" in body["detail"]  # what to do next


@pytest.fixture
async def bob(make_token):
    return await make_token("bob")


# -- cursors ------------------------------------------------------------------------


def _after(entry_id: str) -> str:
    ms, _, n = entry_id.partition("-")
    return f"{ms}-{int(n) + 1}"


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda newest: "99999999999999-0", id="far-future"),
        pytest.param(_after, id="one-past-the-newest"),
    ],
)
@pytest.mark.parametrize("via", ["cursor", "Last-Event-ID"])
async def test_a_cursor_past_the_runs_newest_event_is_409(client, alice, forge, via):
    cid = await _conversation(client, alice)
    sid = await _run(client, alice, cid)
    full = parse_sse((await _events(client, alice, cid, sid)).text)
    before = await _snapshot(client, alice, cid)
    cursor = forge(full[-1].id)
    if via == "cursor":
        response = await _events(client, alice, cid, sid, cursor=cursor)
    else:
        response = await client.get(
            f"{API}/{cid}/resume/{sid}", headers={**alice, "Last-Event-ID": cursor}
        )
    _assert_cursor_ahead(response, sid, full[-1].id)
    assert await _snapshot(client, alice, cid) == before
    assert parse_sse((await _events(client, alice, cid, sid)).text) == full


async def test_cursor_0_0_is_the_whole_run(client, alice):
    cid = await _conversation(client, alice)
    sid = await _run(client, alice, cid)
    full = parse_sse((await _events(client, alice, cid, sid)).text)
    assert full[-1].event == "end"
    assert parse_sse((await _events(client, alice, cid, sid, cursor="0-0")).text) == full


async def test_cursors_of_one_run_used_on_another(client, alice):
    """An older run's cursor on a newer run yields all of it; the reverse is 409."""
    cid = await _conversation(client, alice)
    older = await _run(client, alice, cid, "first")
    newer = await _run(client, alice, cid, "second")
    older_events = parse_sse((await _events(client, alice, cid, older)).text)
    newer_events = parse_sse((await _events(client, alice, cid, newer)).text)
    # Stream ids grow with time across runs: every entry of the newer run is after it.
    on_newer = await _events(client, alice, cid, newer, cursor=older_events[-1].id)
    assert parse_sse(on_newer.text) == newer_events
    on_older = await _events(client, alice, cid, older, cursor=newer_events[0].id)
    _assert_cursor_ahead(on_older, older, older_events[-1].id)


# -- session ids ---------------------------------------------------------------------


@pytest.fixture
async def forged(client, alice, bob) -> dict[str, tuple[str, str]]:
    """Alice's conversation with a run, and session ids that do not belong to it."""
    cid = await _conversation(client, alice)
    await _run(client, alice, cid)
    alices_other_cid = await _conversation(client, alice)
    bobs_cid = await _conversation(client, bob)
    return {
        "cid": cid,
        "nobodys": session_id("alice", uuid7()),
        "bobs": await _run(client, bob, bobs_cid),
        "alices-other-conversation": await _run(client, alice, alices_other_cid),
    }


@pytest.mark.parametrize("whose", ["nobodys", "bobs", "alices-other-conversation"])
async def test_a_forged_session_id_is_404_on_resume_runs_and_stop(client, alice, forged, whose):
    cid, sid = forged["cid"], forged[whose]
    before = await _snapshot(client, alice, cid)
    not_found = {"error": "Session not found or expired", "conversationId": cid}
    for method in ("GET", "POST"):
        resumed = await client.request(method, f"{API}/{cid}/resume/{sid}", headers=alice)
        assert resumed.status_code == 404, resumed.text
        assert resumed.json() == not_found
    run = await client.get(f"{API}/{cid}/runs/{sid}", headers=alice)
    assert run.status_code == 404, run.text
    assert run.json() == not_found
    stopped = await client.post(f"{API}/{cid}/stop", headers=alice, params={"session_id": sid})
    assert stopped.status_code == 404, stopped.text
    assert stopped.json() == {"error": "No active run", "conversationId": cid}
    assert await _snapshot(client, alice, cid) == before


async def test_a_stop_with_a_forged_session_id_stops_no_running_run(settings):
    """Neither the run of the conversation in the path, nor the one the id names."""
    # Replies of 20 words, 50 ms apart (about 1 s), so that the stops land while they run.
    slow = settings.model_copy(update={"demo_words": 20, "demo_delay_ms": 50})
    async with running_app(slow) as app, client_for(app) as client:
        alice = await token_for(app, "alice")
        cid, other_cid = await _conversation(client, alice), await _conversation(client, alice)
        replies = [asyncio.create_task(_run(client, alice, c, "go on")) for c in (cid, other_cid)]
        other_sid = await _active_sid(client, alice, other_cid)
        await _active_sid(client, alice, cid)
        for forged_sid in (session_id("alice", uuid7()), other_sid):
            stopped = await client.post(
                f"{API}/{cid}/stop", headers=alice, params={"session_id": forged_sid}
            )
            assert stopped.status_code == 404, stopped.text
            assert stopped.json() == {"error": "No active run", "conversationId": cid}
        await asyncio.gather(*replies)
        for c in (cid, other_cid):
            items = (await client.get(f"{API}/{c}/messages", headers=alice)).json()["items"]
            assert [(m["role"], m["status"]) for m in items] == [
                ("user", "complete"),
                ("assistant", "complete"),
            ]
            assert len(items[1]["content"].split()) == 20


async def _active_sid(client, headers, cid: str) -> str:
    """Wait until the conversation's run is running; its session id."""

    async def active_sid() -> str | None:
        status = await client.get(f"{API}/{cid}/task-status", headers=headers)
        if status.status_code == 200 and status.json()["isActive"]:
            return status.json()["sessionId"]
        return None

    return await eventually(active_sid, timeout=10, what=f"a run to become active in {cid}")


# -- stream tokens -------------------------------------------------------------------


@pytest.mark.parametrize("token", ["a.é", "é.é", "x." + "€" * 43, "\u00a0.\u00a0"])
async def test_a_stream_token_with_non_ascii_characters_is_401(client, alice, token):
    """These once reached hmac.compare_digest, which raises on non-ASCII text: a 500."""
    cid = await _conversation(client, alice)
    sid = await _run(client, alice, cid)
    response = await client.get(f"{API}/{cid}/resume/{sid}", params={"token": token})
    assert response.status_code == 401, response.text
    assert response.json()["detail"].startswith("Invalid or expired stream token")
