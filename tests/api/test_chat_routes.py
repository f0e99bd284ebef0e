"""POST /chat and GET /chat/{cid}/stream, the AI SDK's transport, through the in-process API."""

from __future__ import annotations

import asyncio
import json

import pytest
from api_support import client_for, running_app, token_for
from helpers import eventually
from sse import parse_sse

from turnstream.keys import RunField, RunKeys

DONE = "[DONE]"


def _chunks(body: str) -> list[dict | str]:
    """The `data:` of each SSE frame: a chunk, or "[DONE]"; comments (`: ping`) skipped."""
    out: list[dict | str] = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                data = line[len("data: ") :]
                out.append(data if data == DONE else json.loads(data))
    return out


def _request(cid: str, text: str = "hello", trigger: str = "submit-message", **extra) -> dict:
    """The body DefaultChatTransport sends: the whole history as UI messages, then the new one."""
    return {
        "id": cid,
        "messages": [
            {"id": "u0", "role": "user", "parts": [{"type": "text", "text": "an older one"}]},
            {"id": "a0", "role": "assistant", "parts": [{"type": "text", "text": "its reply"}]},
            {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]},
        ],
        "trigger": trigger,
        "messageId": None,
        **extra,
    }


async def _chat(http, headers, cid, text="hello", *, params=None, **extra):
    return await http.post(
        "/api/v1/chat", headers=headers, params=params, json=_request(cid, text, **extra)
    )


async def _conversation(http, headers) -> str:
    return (await http.post("/api/v1/conversations", headers=headers)).json()["id"]


async def _messages(http, headers, cid) -> list[dict]:
    response = await http.get(f"/api/v1/conversations/{cid}/messages", headers=headers)
    return response.json()["items"]


def _text(chunks) -> str:
    return "".join(c["delta"] for c in chunks if isinstance(c, dict) and c["type"] == "text-delta")


def _text_step(chunks, first_delta: int) -> list[dict | str]:
    """What a step of text is: start-step, text-start, the deltas, text-end, finish-step."""
    deltas = [c for c in chunks if isinstance(c, dict) and c["type"] == "text-delta"]
    part = deltas[0]["id"]
    assert chunks[first_delta - 2 : first_delta] == [
        {"type": "start-step"},
        {"type": "text-start", "id": part},
    ]
    return [
        {"type": "start-step"},
        {"type": "text-start", "id": part},
        *deltas,
        {"type": "text-end", "id": part},
        {"type": "finish-step"},
    ]


async def _native(http, headers, cid, sid) -> list:
    """The run's native events (docs/protocol.md), the ground truth the chunks come from."""
    response = await http.get(f"/api/v1/conversations/{cid}/resume/{sid}", headers=headers)
    assert response.status_code == 200, response.text
    return parse_sse(response.text)


async def _stored_reply(http, headers, cid, native) -> dict:
    """The stored message that the run's `end` names: the one a client loads."""
    message_id = native[-1].data["messageId"]
    return next(m for m in await _messages(http, headers, cid) if m["id"] == message_id)


async def test_a_plain_turn_is_the_exact_chunk_sequence_and_matches_the_stored_reply(
    client, alice, cid
):
    response = await _chat(client, alice, cid, "hello")
    assert response.status_code == 200, response.text
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = _chunks(response.text)
    native = await _native(client, alice, cid, response.headers["x-session-id"])
    reply = await _stored_reply(client, alice, cid, native)
    assert chunks == [
        {"type": "start", "messageId": reply["id"]},
        *_text_step(chunks, 3),
        {"type": "finish", "finishReason": "stop"},
        DONE,
    ]
    assert [c["delta"] for c in chunks[1:-1] if c["type"] == "text-delta"] == [
        e.data["text"] for e in native if e.event == "delta"
    ]
    assert _text(chunks) == reply["content"]
    messages = await _messages(client, alice, cid)
    assert (messages[0]["role"], messages[0]["content"]) == ("user", "hello")  # only the newest


async def test_a_tool_turn_is_a_tool_step_then_a_text_step(client, alice, cid):
    response = await _chat(client, alice, cid, "/tool weather in Lisbon")
    assert response.status_code == 200, response.text
    chunks = _chunks(response.text)
    native = await _native(client, alice, cid, response.headers["x-session-id"])
    calls = [e.data for e in native if e.event == "tool_call"]
    results = [e.data for e in native if e.event == "tool_result"]
    assert calls and len(results) == len(calls)
    tool_step = [
        {"type": "start-step"},
        *(
            {
                "type": "tool-input-available",
                "toolCallId": call["id"],
                "toolName": call["name"],
                "input": json.loads(call["arguments"]),
            }
            for call in calls
        ),
        *(
            {
                "type": "tool-output-available",
                "toolCallId": result["id"],
                "output": result["content"],
            }
            for result in results
        ),
        {"type": "finish-step"},
    ]
    reply = await _stored_reply(client, alice, cid, native)
    text_from = 1 + len(tool_step) + 2
    assert chunks == [
        {"type": "start", "messageId": reply["id"]},
        *tool_step,
        *_text_step(chunks, text_from),
        {"type": "finish", "finishReason": "stop"},
        DONE,
    ]
    assert _text(chunks) == reply["content"]


async def test_without_a_token_both_routes_are_401(client, cid):
    assert (await client.post("/api/v1/chat", json=_request(cid))).status_code == 401
    assert (await client.post("/api/v1/chat", content=b"not json")).status_code == 401
    assert (await client.get(f"/api/v1/chat/{cid}/stream")).status_code == 401


@pytest.mark.parametrize("which", ["foreign", "unknown", "malformed", "missing"])
async def test_a_conversation_not_the_callers_is_403_on_both_routes(client, make_token, cid, which):
    bob = await make_token("bob")
    other = {
        "foreign": cid,
        "unknown": "01a22c69-8d88-7980-940a-0d3026308d1a",
        "malformed": "../x",
        "missing": None,
    }[which]
    body = _request(other) if other else {"messages": [], "trigger": "submit-message"}
    response = await client.post("/api/v1/chat", headers=bob, json=body)
    assert response.status_code == 403
    assert response.json() == {"detail": "Access denied to conversation"}
    if other and "/" not in other:
        assert (await client.get(f"/api/v1/chat/{other}/stream", headers=bob)).status_code == 403


async def test_reconnect_is_204_when_no_run_is_active(client, alice, cid):
    response = await client.get(f"/api/v1/chat/{cid}/stream", headers=alice)
    assert response.status_code == 204 and response.content == b""
    assert (await _chat(client, alice, cid)).status_code == 200
    response = await client.get(f"/api/v1/chat/{cid}/stream", headers=alice)
    assert response.status_code == 204  # the run has ended


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b"[1, 2]", 400),
        (json.dumps({"id": "{cid}", "messages": [], "trigger": "nope"}).encode(), 400),
        (json.dumps({"id": "{cid}", "messages": [], "trigger": "submit-message"}).encode(), 400),
    ],
)
async def test_an_unusable_body_is_400_and_starts_nothing(client, alice, cid, body, status):
    body = body.replace(b"{cid}", cid.encode())
    response = await client.post("/api/v1/chat", headers=alice, content=body)
    assert response.status_code == status, response.text
    assert response.json()["error"] == "Invalid message"
    assert await _messages(client, alice, cid) == []


_QUESTION = {"id": "u0", "role": "user", "parts": [{"type": "text", "text": "hi"}]}


@pytest.mark.parametrize(
    "message",
    [
        {"id": "u", "role": "user", "parts": [{"type": "file", "url": "data:,x"}]},
        {"id": "u", "role": "user", "parts": [{"type": "text", "text": "  "}]},
        {"id": "u", "role": "user", "parts": [{"type": "text", "text": "\x85\x1c\u3000"}]},
        {"id": "u", "role": "user", "parts": [{"type": "text"}]},
        {"id": "u", "role": "user", "parts": [{"type": "text", "text": "a\x00b"}]},
    ],
)
@pytest.mark.parametrize("where", ["newest", "older"])
async def test_a_users_message_without_text_is_400(client, alice, cid, message, where):
    """The document requires it of every user message, as the route does (not only the newest)."""
    messages = [message] if where == "newest" else [message, _QUESTION]
    body = {"id": cid, "messages": messages, "trigger": "submit-message"}
    response = await client.post("/api/v1/chat", headers=alice, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "Invalid message"
    assert await _messages(client, alice, cid) == []


@pytest.mark.parametrize("role", ["assistant", "system"])
async def test_a_newest_message_not_the_users_is_409_and_starts_nothing(client, alice, cid, role):
    newest = {"id": "a", "role": role, "parts": [{"type": "text", "text": "hi"}]}
    body = {"id": cid, "messages": [_QUESTION, newest], "trigger": "submit-message"}
    response = await client.post("/api/v1/chat", headers=alice, json=body)
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "Not a new message"
    assert response.json()["conversationId"] == cid
    assert f"the {role}'s" in response.json()["detail"]
    assert await _messages(client, alice, cid) == []


async def test_an_edit_of_a_sent_message_is_409_and_starts_nothing(client, alice, cid):
    response = await _chat(client, alice, cid, "edited", messageId="u1")
    assert response.status_code == 409, response.text
    assert response.json()["error"] == "Not a new message"
    assert "messageId" in response.json()["detail"]
    assert await _messages(client, alice, cid) == []


async def test_text_parts_are_joined_and_a_too_long_message_is_413(client, alice, cid, settings):
    parts = [
        {"type": "text", "text": "one"},
        {"type": "step-start"},
        {"type": "text", "text": "two"},
    ]
    body = {"id": cid, "messages": [{"id": "u", "role": "user", "parts": parts}]}
    response = await client.post(
        "/api/v1/chat", headers=alice, json={**body, "trigger": "submit-message"}
    )
    assert response.status_code == 200, response.text
    assert (await _messages(client, alice, cid))[0]["content"] == "one\ntwo"
    too_long = "x" * (settings.max_message_chars + 1)
    response = await _chat(client, alice, cid, too_long)
    assert response.status_code == 413 and response.json()["error"] == "Message too long"


async def test_regenerate_message_answers_the_last_user_message_again(client, alice, cid):
    first = await _chat(client, alice, cid, "hello")
    assert first.status_code == 200
    again = await _chat(client, alice, cid, "ignored", trigger="regenerate-message")
    assert again.status_code == 200, again.text
    messages = await _messages(client, alice, cid)
    assert (messages[0]["role"], messages[0]["content"]) == ("user", "hello")
    assert len(messages) == 2
    chunks = _chunks(again.text)
    assert chunks[0] == {"type": "start", "messageId": messages[1]["id"]}
    assert _text(chunks) == messages[1]["content"]
    assert chunks[-2:] == [{"type": "finish", "finishReason": "stop"}, DONE]


async def test_regenerate_with_no_user_message_is_409(client, alice, cid):
    response = await _chat(client, alice, cid, trigger="regenerate-message")
    assert response.status_code == 409
    assert response.json() == {"error": "Nothing to regenerate", "conversationId": cid}


async def test_an_idempotency_key_replays_the_first_run(client, alice, cid):
    headers = {**alice, "Idempotency-Key": "chat-1"}
    first = await _chat(client, headers, cid, "hello")
    second = await _chat(client, headers, cid, "hello")
    assert _chunks(second.text) == _chunks(first.text)
    assert second.headers["x-session-id"] == first.headers["x-session-id"]
    assert len(await _messages(client, alice, cid)) == 2


async def test_a_failed_run_ends_with_error_then_finish_and_done(settings):
    failing = settings.model_copy(update={"agent": "fake_agents:failing"})
    async with running_app(failing) as app, client_for(app) as http:
        headers = await token_for(app, "alice")
        cid = await _conversation(http, headers)
        chunks = _chunks((await _chat(http, headers, cid)).text)
    assert chunks[-6:] == [
        {"type": "text-delta", "id": "text-0", "delta": "half a "},
        {"type": "text-end", "id": "text-0"},
        {"type": "error", "errorText": "the model fell over"},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "error"},
        DONE,
    ]


@pytest.fixture
async def slow(settings):
    """An app whose replies take about a second (20 words, 50 ms apart), and its client."""
    async with (
        running_app(settings.model_copy(update={"demo_words": 20, "demo_delay_ms": 50})) as app,
        client_for(app) as http,
    ):
        yield app, http


async def _until_streaming(app, http, headers, cid, *, min_seq: int = 6) -> str:
    """The session id of the conversation's active run, once it has written `min_seq` events."""
    redis = app.state.runtime.redis

    async def streaming() -> str | None:
        body = (
            await http.get(f"/api/v1/conversations/{cid}/active-session", headers=headers)
        ).json()
        if body.get("status") != "active":
            return None
        seq = await redis.hget(RunKeys(cid, body["sessionId"]).run, RunField.SEQ)
        return body["sessionId"] if int(seq or 0) >= min_seq else None

    return await eventually(streaming, timeout=10, what=f"the run in {cid} to stream")


async def test_a_stopped_run_ends_the_stream_with_finish_and_done(slow):
    app, http = slow
    headers = await token_for(app, "alice")
    cid = await _conversation(http, headers)
    posting = asyncio.create_task(_chat(http, headers, cid))
    await _until_streaming(app, http, headers, cid)
    stopped = await http.post(f"/api/v1/conversations/{cid}/stop", headers=headers)
    assert stopped.status_code == 200, stopped.text
    chunks = _chunks((await posting).text)
    assert chunks[-5:] == [
        {"type": "text-end", "id": "text-0"},
        {"type": "finish-step"},
        {"type": "abort", "reason": "The run was stopped."},
        {"type": "finish", "finishReason": "interrupted"},
        DONE,
    ]
    reply = (await _messages(http, headers, cid))[-1]
    assert reply["status"] == "cancelled" and _text(chunks) == reply["content"]


async def test_reconnect_replays_the_active_run_from_its_start(slow):
    app, http = slow
    headers = await token_for(app, "alice")
    cid = await _conversation(http, headers)
    posting = asyncio.create_task(_chat(http, headers, cid))
    sid = await _until_streaming(app, http, headers, cid)
    resumed = await http.get(f"/api/v1/chat/{cid}/stream", headers=headers)
    assert resumed.status_code == 200
    assert resumed.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert resumed.headers["x-session-id"] == sid
    assert _chunks(resumed.text) == _chunks((await posting).text)


async def test_multitask_works_as_on_the_native_route(slow):
    app, http = slow
    headers = await token_for(app, "alice")
    cid = await _conversation(http, headers)
    first = asyncio.create_task(_chat(http, headers, cid, "one"))
    sid = await _until_streaming(app, http, headers, cid, min_seq=3)
    rejected = await _chat(http, headers, cid, "two")
    assert rejected.status_code == 409 and rejected.json()["sessionId"] == sid
    second = await _chat(http, headers, cid, "three", params={"multitask": "interrupt"})
    assert _chunks((await first).text)[-2] == {"type": "finish", "finishReason": "interrupted"}
    assert _chunks(second.text)[-2] == {"type": "finish", "finishReason": "stop"}
    messages = await _messages(http, headers, cid)
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"),
        ("assistant", "cancelled"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert messages[2]["content"] == "three"
