"""Approvals through POST /chat, the AI SDK's way: the response pauses at the request, the
answers come back as the tool part's `approval`, and the same run goes on in the same message.

The in-process client buffers whole responses, which is what a paused response is.
tests/node/chat.test.js does the same with the real `ai` package.
"""

from __future__ import annotations

import json

import pytest
from api_support import api_for

SIX_TIMES_SEVEN = '/tool calculator {"expression": "6*7"}'
DONE = "[DONE]"


def _chunks(body: str) -> list:
    lines = body.replace("\r\n", "\n").split("\n")
    data = [line[len("data: ") :] for line in lines if line.startswith("data: ")]
    return [d if d == DONE else json.loads(d) for d in data]


def _ask(cid: str) -> dict:
    user = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": SIX_TIMES_SEVEN}]}
    return {"id": cid, "messages": [user], "trigger": "submit-message", "messageId": None}


def _answer(cid: str, asked: list, approval: dict) -> dict:
    """What useChat sends after addToolApprovalResponse: the assistant message, its tool part
    `approval-responded`, named by `messageId`."""
    message_id = asked[0]["messageId"]
    call = next(c for c in asked if c["type"] == "tool-input-available")
    part = {
        "type": f"tool-{call['toolName']}",
        "toolCallId": call["toolCallId"],
        "state": "approval-responded",
        "input": call["input"],
        "approval": approval,
    }
    reply = {"id": message_id, "role": "assistant", "parts": [{"type": "step-start"}, part]}
    return _ask(cid) | {"messages": [*_ask(cid)["messages"], reply], "messageId": message_id}


async def _asked(http, headers) -> tuple[str, list]:
    cid = (await http.post("/api/v1/conversations", headers=headers)).json()["id"]
    response = await http.post("/api/v1/chat", headers=headers, json=_ask(cid))
    assert response.status_code == 200, response.text
    return cid, _chunks(response.text)


async def _messages(http, headers, cid) -> list[dict]:
    response = await http.get(f"/api/v1/conversations/{cid}/messages", headers=headers)
    return response.json()["items"]


async def test_the_response_pauses_at_the_request_and_the_answer_goes_on_in_the_same_message(
    settings,
):
    async with api_for(settings, tool_approval="calculator") as (http, alice, _app):
        cid, asked = await _asked(http, alice)
        request = asked[-4]
        assert request["type"] == "tool-approval-request"
        assert asked[-3:] == [
            {"type": "finish-step"},
            {"type": "finish", "finishReason": "tool-calls"},
            DONE,
        ]
        status = await http.get(f"/api/v1/conversations/{cid}/task-status", headers=alice)
        assert status.json()["isActive"] is True  # the run waits

        approval = {"id": request["approvalId"], "approved": True}
        answered = await http.post(
            "/api/v1/chat", headers=alice, json=_answer(cid, asked, approval)
        )
        assert answered.status_code == 200, answered.text
        went_on = _chunks(answered.text)
        assert went_on[0] == asked[0]  # `start` with the same messageId: the same message
        assert went_on[1:3] == [
            {
                "type": "tool-approval-response",
                "approvalId": request["approvalId"],
                "approved": True,
            },
            {"type": "tool-output-available", "toolCallId": request["toolCallId"], "output": "42"},
        ]
        assert [c["type"] for c in went_on if isinstance(c, dict)].count("start") == 1
        assert "tool-input-available" not in [c["type"] for c in went_on if isinstance(c, dict)]
        assert went_on[-2:] == [{"type": "finish", "finishReason": "stop"}, DONE]
        text = "".join(
            c["delta"] for c in went_on if isinstance(c, dict) and c["type"] == "text-delta"
        )
        assert text == "6*7 = 42."
        stored = await _messages(http, alice, cid)
        assert [(m["role"], m["status"]) for m in stored][-1] == ("assistant", "complete")


async def test_a_denial_shows_as_output_denied_and_the_reply_says_so(settings):
    async with api_for(settings, tool_approval="calculator") as (http, alice, _app):
        cid, asked = await _asked(http, alice)
        request = asked[-4]
        approval = {"id": request["approvalId"], "approved": False, "reason": "not today"}
        went_on = _chunks(
            (
                await http.post("/api/v1/chat", headers=alice, json=_answer(cid, asked, approval))
            ).text
        )
        types = [c["type"] for c in went_on if isinstance(c, dict)]
        assert {"type": "tool-output-denied", "toolCallId": request["toolCallId"]} in went_on
        assert "tool-output-error" not in types and types[-1] == "finish"
        assert "denied" in (await _messages(http, alice, cid))[-1]["content"]


async def test_a_reconnect_while_the_run_waits_replays_to_the_request_and_pauses(settings):
    async with api_for(settings, tool_approval="calculator") as (http, alice, _app):
        cid, asked = await _asked(http, alice)
        resumed = await http.get(f"/api/v1/chat/{cid}/stream", headers=alice)
        assert resumed.status_code == 200
        assert _chunks(resumed.text) == asked


@pytest.mark.parametrize(
    "approval",
    [
        {"approved": True},
        {"id": "x", "approved": "yes"},
        {"id": "x", "approved": False, "reason": "r" * 2001},
        "approved",
    ],
)
async def test_an_answer_that_is_not_one_is_400_and_decides_nothing(settings, approval):
    async with api_for(settings, tool_approval="calculator") as (http, alice, _app):
        cid, asked = await _asked(http, alice)
        response = await http.post(
            "/api/v1/chat", headers=alice, json=_answer(cid, asked, approval)
        )
        assert response.status_code == 400, response.text
        assert "approval" in response.json()["detail"]
        status = await http.get(f"/api/v1/conversations/{cid}/task-status", headers=alice)
        assert status.json()["isActive"] is True  # still waiting


async def test_an_unknown_approval_is_404(settings):
    async with api_for(settings, tool_approval="calculator") as (http, alice, _app):
        cid, asked = await _asked(http, alice)
        body = _answer(cid, asked, {"id": "no-such-approval", "approved": True})
        response = await http.post("/api/v1/chat", headers=alice, json=body)
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "Approval not found or expired"


async def test_an_answer_decided_the_other_way_first_streams_the_decision_that_stands(settings):
    async with api_for(settings, tool_approval="calculator") as (http, alice, _app):
        cid, asked = await _asked(http, alice)
        request = asked[-4]
        url = f"/api/v1/conversations/{cid}/approvals/{request['approvalId']}"
        assert (await http.post(url, headers=alice, json={"approved": False})).status_code == 200
        body = _answer(cid, asked, {"id": request["approvalId"], "approved": True})
        went_on = _chunks((await http.post("/api/v1/chat", headers=alice, json=body)).text)
        assert {"type": "tool-output-denied", "toolCallId": request["toolCallId"]} in went_on
