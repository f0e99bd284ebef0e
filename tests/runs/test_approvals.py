"""Tool calls that wait for the user: the run lets go of its worker, and goes on when decided.

The demo agent's `/tool calculator {...}` makes one call; TURNSTREAM_TOOL_APPROVAL
asks the user about it. What a user checks: the run stays the live one, nothing
runs the tool before the decision, the decision's route answers as documented,
and the run ends once, in the same session and stream, with a transcript a
provider accepts.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest
from api_support import api_for, token_for
from helpers import eventually
from openai_rules import assert_valid
from sse import parse_sse

from turnstream import keys
from turnstream.keys import RunKeys
from turnstream.live.client import entries
from turnstream.store.history import to_openai

pytestmark = pytest.mark.on_cluster_too  # and once more on a Redis Cluster (conftest.py)

SIX_TIMES_SEVEN = '/tool calculator {"expression": "6*7"}'


async def _conversation(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    response = await client.post("/api/v1/conversations", headers=headers)
    return str(response.json()["id"])


def _send(client: httpx.AsyncClient, headers: dict[str, str], cid: str, text: str):
    """The message's POST, streaming until the run ends: a task, since it outlasts the wait."""
    url = f"/api/v1/conversations/{cid}/message/"
    return asyncio.create_task(client.post(url, headers=headers, data={"content": text}))


async def _asked(app, cid: str) -> tuple[RunKeys, dict[str, Any]]:
    """The run's key and its `approval_request`, once the run waits."""
    rt = app.state.runtime

    async def request() -> tuple[RunKeys, dict[str, Any]] | None:
        sid = await rt.redis.get(keys.active(cid))
        if not sid:
            return None
        k = RunKeys(cid, sid)
        for entry in entries(await rt.redis.xrange(k.stream)):
            if entry.type == "approval_request":
                return k, entry.data
        return None

    return await eventually(request, timeout=10, what="an approval_request")


async def _decide(client, headers, cid: str, approval_id: str, **body: Any) -> httpx.Response:
    url = f"/api/v1/conversations/{cid}/approvals/{approval_id}"
    return await client.post(url, headers=headers, json=body)


async def _messages(client, headers, cid: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/conversations/{cid}/messages", headers=headers)
    return list(response.json()["items"])


async def test_an_asked_call_waits_on_no_worker_and_goes_on_in_the_same_stream(settings):
    async with api_for(settings, tool_approval="calculator") as (client, alice, app):
        rt = app.state.runtime
        cid = await _conversation(client, alice)
        posting = _send(client, alice, cid, SIX_TIMES_SEVEN)
        k, asked = await _asked(app, cid)
        assert asked["name"] == "calculator" and json.loads(asked["arguments"]) == {
            "expression": "6*7"
        }
        # It waits with nothing held: no task, no lease; it is still the live run.
        await eventually(lambda: not rt.running, timeout=5, what="the worker let go")
        assert await rt.redis.zscore(keys.leases(k.shard), k.lease_member) is None
        status = await client.get(f"/api/v1/conversations/{cid}/task-status", headers=alice)
        assert status.json()["isActive"] is True
        session = await client.get(f"/api/v1/conversations/{cid}/active-session", headers=alice)
        assert session.json()["status"] == "active"
        record = await client.get(f"/api/v1/conversations/{cid}/runs/{k.sid}", headers=alice)
        assert record.json()["status"] == "waiting"
        waiting = await _messages(client, alice, cid)
        assert [m["role"] for m in waiting] == ["user", "assistant"]
        assert waiting[1]["status"] == "partial" and waiting[1]["tool_calls"]
        assert not posting.done()

        decided = await _decide(client, alice, cid, asked["approvalId"], approved=True)
        assert decided.status_code == 200, decided.text
        assert decided.json() == {
            "approvalId": asked["approvalId"],
            "approved": True,
            "sessionId": k.sid,
        }
        streamed = parse_sse((await asyncio.wait_for(posting, 15)).text)

        types = [e.event for e in streamed]
        assert types.count("end") == 1 and types[-1] == "end"
        assert types.index("approval_request") < types.index("approval")
        assert types.index("approval") < types.index("tool_result")
        result = next(e.data for e in streamed if e.event == "tool_result")
        assert (result["id"], result["content"], result["isError"]) == (
            asked["toolCallId"],
            "42",
            False,
        )
        assert streamed[-1].data["status"] == "completed"
        stored = await _messages(client, alice, cid)
        assert [(m["role"], m["status"]) for m in stored] == [
            ("user", "complete"),
            ("assistant", "complete"),
            ("tool", "complete"),
            ("assistant", "complete"),
        ]
        assert stored[3]["content"] == "6*7 = 42."
        assert_valid(to_openai(await rt.store.history(cid=cid)))

        # The same decision again is fine; the other one is refused.
        again = await _decide(client, alice, cid, asked["approvalId"], approved=True)
        assert again.status_code == 200 and again.json()["approved"] is True
        other = await _decide(client, alice, cid, asked["approvalId"], approved=False)
        assert other.status_code == 409 and other.json()["approved"] is True


async def test_a_denied_call_is_an_error_result_with_the_reason_and_the_model_goes_on(settings):
    async with api_for(settings, tool_approval="calc*") as (client, alice, app):
        cid = await _conversation(client, alice)
        posting = _send(client, alice, cid, SIX_TIMES_SEVEN)
        _k, asked = await _asked(app, cid)
        denied = await _decide(
            client, alice, cid, asked["approvalId"], approved=False, reason="not today"
        )
        assert denied.status_code == 200 and denied.json()["approved"] is False
        streamed = parse_sse((await asyncio.wait_for(posting, 15)).text)
        result = next(e.data for e in streamed if e.event == "tool_result")
        assert result["isError"] is True and "not today" in result["content"]
        assert streamed[-1].data["status"] == "completed"
        reply = (await _messages(client, alice, cid))[-1]["content"]
        assert "could not answer" in reply and "denied" in reply


async def test_a_stopped_waiting_run_is_cancelled_with_its_call_not_run(settings):
    async with api_for(settings, tool_approval="calculator") as (client, alice, app):
        cid = await _conversation(client, alice)
        posting = _send(client, alice, cid, SIX_TIMES_SEVEN)
        _k, asked = await _asked(app, cid)
        stopped = await client.post(f"/api/v1/conversations/{cid}/stop", headers=alice)
        assert stopped.status_code == 200 and stopped.json()["status"] == "cancelled"
        streamed = parse_sse((await asyncio.wait_for(posting, 15)).text)
        assert [e.event for e in streamed].count("end") == 1
        assert streamed[-1].data["status"] == "cancelled"
        stored = await _messages(client, alice, cid)
        assert [(m["role"], m["status"]) for m in stored] == [
            ("user", "complete"),
            ("assistant", "cancelled"),
            ("tool", "cancelled"),
        ]
        late = await _decide(client, alice, cid, asked["approvalId"], approved=True)
        assert late.status_code == 409 and late.json()["error"] == "The run no longer waits"
        # The conversation is free again: a new message starts a run.
        after = await _send(client, alice, cid, "hello again")
        assert after.status_code == 200 and parse_sse(after.text)[-1].event == "end"


async def test_an_approval_no_one_answers_is_denied_when_it_expires(settings):
    overrides = {"tool_approval": "calculator", "approval_ttl_seconds": 1, "reaper_interval": 0.2}
    async with api_for(settings, **overrides) as (client, alice, app):
        cid = await _conversation(client, alice)
        posting = _send(client, alice, cid, SIX_TIMES_SEVEN)
        _k, asked = await _asked(app, cid)
        streamed = parse_sse((await asyncio.wait_for(posting, 15)).text)
        decision = next(e.data for e in streamed if e.event == "approval")
        assert decision["approved"] is False and decision["reason"] == "no answer in time"
        result = next(e.data for e in streamed if e.event == "tool_result")
        assert result["isError"] is True and "no answer in time" in result["content"]
        late = await _decide(client, alice, cid, asked["approvalId"], approved=True)
        assert late.status_code == 409 and late.json()["approved"] is False


async def test_only_the_conversations_user_decides_and_unknown_ids_are_404(settings):
    async with api_for(settings, tool_approval="calculator") as (client, alice, app):
        bob = await token_for(app, "bob")
        cid = await _conversation(client, alice)
        posting = _send(client, alice, cid, SIX_TIMES_SEVEN)
        _k, asked = await _asked(app, cid)
        assert (
            await _decide(client, bob, cid, asked["approvalId"], approved=True)
        ).status_code == 403
        unknown = await _decide(client, alice, cid, "no-such-approval", approved=True)
        assert unknown.status_code == 404
        assert unknown.json()["error"] == "Approval not found or expired"
        bad = await _decide(client, alice, cid, asked["approvalId"], approved="maybe")
        assert bad.status_code == 422
        await _decide(client, alice, cid, asked["approvalId"], approved=True)
        await asyncio.wait_for(posting, 15)


@pytest.mark.parametrize("rule", [{"tool_deny": "calc*"}, {"tool_policy": "policies:no_sixes"}])
async def test_a_denied_call_never_runs_and_the_model_reads_why(settings, rule):
    async with api_for(settings, **rule) as (client, alice, _app):
        cid = await _conversation(client, alice)
        streamed = parse_sse((await _send(client, alice, cid, SIX_TIMES_SEVEN)).text)
        types = [e.event for e in streamed]
        assert "approval_request" not in types
        result = next(e.data for e in streamed if e.event == "tool_result")
        assert result["isError"] is True and result["content"].startswith("Denied")
        assert streamed[-1].data["status"] == "completed"


async def test_a_message_enqueued_behind_a_waiting_run_holds_no_worker_and_runs_after_it(
    settings, caplog
):
    overrides = {"tool_approval": "calculator", "claim_seconds": 0.5, "reaper_interval": 0.2}
    async with api_for(settings, **overrides) as (client, alice, app):
        rt = app.state.runtime
        cid = await _conversation(client, alice)
        posting = _send(client, alice, cid, SIX_TIMES_SEVEN)
        k, asked = await _asked(app, cid)
        url = f"/api/v1/conversations/{cid}/message/?multitask=enqueue"
        behind = asyncio.create_task(client.post(url, headers=alice, data={"content": "next"}))

        async def enqueued() -> bool:
            return await rt.redis.get(keys.active(cid)) not in (None, k.sid)

        await eventually(enqueued, timeout=5, what="the enqueued run")
        # Its task waits one claim window, sees the run ahead waiting for a person, lets go.
        caplog.set_level(logging.INFO, logger="turnstream.runs")
        let_go = "waits behind a run that waits for approvals"
        await eventually(lambda: let_go in caplog.text, timeout=5, what="its task to let go")
        assert not behind.done()
        await _decide(client, alice, cid, asked["approvalId"], approved=True)
        first = parse_sse((await asyncio.wait_for(posting, 15)).text)
        second = parse_sse((await asyncio.wait_for(behind, 15)).text)
        assert first[-1].data["status"] == second[-1].data["status"] == "completed"
        start = next(e for e in second if e.event == "start")
        assert first[-1].data["ts"] <= start.data["ts"]  # it started after the first ended
        roles = [m["role"] for m in await _messages(client, alice, cid)]
        assert roles == ["user", "assistant", "tool", "assistant", "user", "assistant"]


async def test_a_run_whose_stream_was_trimmed_while_it_waited_goes_on_whole(settings):
    # Two entries kept in Redis: the call and the request are in SQL's archive only.
    overrides = {"tool_approval": "calculator", "stream_maxlen": 2}
    async with api_for(settings, **overrides) as (client, alice, app):
        cid = await _conversation(client, alice)
        posting = _send(client, alice, cid, SIX_TIMES_SEVEN)
        k, asked = await _asked(app, cid)
        rt = app.state.runtime
        await eventually(lambda: rt.redis.hget(k.run, "trimmed_through"), timeout=5, what="a trim")
        await _decide(client, alice, cid, asked["approvalId"], approved=True)
        await asyncio.wait_for(posting, 15)
        stored = await _messages(client, alice, cid)
        assert [(m["role"], m["status"]) for m in stored] == [
            ("user", "complete"),
            ("assistant", "complete"),
            ("tool", "complete"),
            ("assistant", "complete"),
        ]
        assert stored[1]["tool_calls"][0]["id"] == asked["toolCallId"]
        assert stored[2]["content"] == "42" and stored[3]["content"] == "6*7 = 42."
