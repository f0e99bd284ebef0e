"""`approve` and `deny` on both clients, and the approval events typed, against a real serve
that asks before every `calculator` call (TURNSTREAM_TOOL_APPROVAL)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from client_support import Served, serve

from turnstream.client import (
    ApprovalDecided,
    ApprovalNotFound,
    ApprovalResult,
    AsyncClient,
    Client,
    Event,
)

SIX_TIMES_SEVEN = '/tool calculator {"expression": "6*7"}'


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    env = {"TURNSTREAM_TOOL_APPROVAL": "calculator", "TURNSTREAM_DEMO_DELAY_MS": "1"}
    with serve(tmp_path_factory.mktemp("approvals"), **env) as server:
        yield server


def test_a_waiting_call_is_typed_approved_and_the_run_goes_on_in_the_same_stream(
    served: Served, alice
):
    with Client(served.url, alice) as client:
        cid = client.create_conversation().id
        seen: list[Event] = []
        for event in client.send(cid, SIX_TIMES_SEVEN):
            seen.append(event)
            asked = event.approval_request
            if asked is not None:
                assert (asked.name, json.loads(asked.arguments)) == (
                    "calculator",
                    {"expression": "6*7"},
                )
                call = next(e for e in seen if e.type == "tool_call")
                assert asked.tool_call_id == call.data["id"] and asked.expires_at > event.ts
                result = client.approve(cid, asked.approval_id)
                assert result == ApprovalResult(asked.approval_id, True, seen[0].data["sessionId"])
        decided = [e.approval for e in seen if e.approval is not None]
        assert [(d.approval_id, d.approved, d.reason) for d in decided] == [
            (result.approval_id, True, "")
        ]
        assert [e.type for e in seen].count("end") == 1
        output = next(e for e in seen if e.type == "tool_result")
        assert output.data["content"] == "42"
        assert client.messages(cid)[-1].content == "6*7 = 42."
        assert seen[0].approval is None and seen[0].approval_request is None  # other events

        # Again the same way: fine. The other way: refused, with the decision that stands.
        assert client.approve(cid, result.approval_id) == result
        with pytest.raises(ApprovalDecided) as refused:
            client.deny(cid, result.approval_id)
        assert refused.value.status == 409 and refused.value.approved is True
        assert refused.value.session_id == result.session_id


async def test_deny_from_the_async_client_gives_the_model_the_reason(served: Served, alice):
    async with AsyncClient(served.url, alice) as client:
        cid = (await client.create_conversation()).id
        seen: list[Event] = []
        async for event in client.send(cid, SIX_TIMES_SEVEN):
            seen.append(event)
            if event.approval_request is not None:
                result = await client.deny(cid, event.approval_request.approval_id, "not today")
                assert result.approved is False
        decision = next(e.approval for e in seen if e.approval is not None)
        assert (decision.approved, decision.reason) == (False, "not today")
        output = next(e for e in seen if e.type == "tool_result")
        assert output.data["isError"] is True and "not today" in output.data["content"]
        assert "denied" in ((await client.messages(cid))[-1].content or "")


async def test_an_unknown_approval_is_approval_not_found(served: Served, alice):
    async with AsyncClient(served.url, alice) as client:
        cid = (await client.create_conversation()).id
        with pytest.raises(ApprovalNotFound) as missing:
            await client.approve(cid, "no-such-approval")
        assert missing.value.status == 404 and missing.value.approval_id == "no-such-approval"


def test_a_run_stopped_while_it_waits_refuses_a_late_decision(served: Served, alice):
    with Client(served.url, alice) as client:
        cid = client.create_conversation().id
        events = client.send(cid, SIX_TIMES_SEVEN)
        asked = next(e.approval_request for e in events if e.approval_request is not None)
        events.close()  # the run waits on no one
        client.stop(cid)
        with pytest.raises(ApprovalDecided) as late:
            client.approve(cid, asked.approval_id)
        assert late.value.status == 409 and late.value.approved is None
