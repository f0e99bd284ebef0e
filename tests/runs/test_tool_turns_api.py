"""A run that calls tools, through the API: what is stored, cached, listed and given back.

The demo agent answers `/tool …` with a tool call, its result, then text. The
stored turn must be that, in that order, wherever it is read from: the
messages route, the cached conversation, the database behind it, and the
history the next run is given.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import eventually
from openai_rules import assert_valid
from sse import parse_sse

from turnstream import events, keys
from turnstream.keys import RunKeys
from turnstream.runs.reply import CANCELLED_CALL
from turnstream.store.history import to_openai


async def _conversation(client, headers) -> str:
    return (await client.post("/api/v1/conversations", headers=headers)).json()["id"]


async def _send(client, headers, cid, content, *, stream="true"):
    return await client.post(
        f"/api/v1/conversations/{cid}/message/?stream={stream}",
        headers=headers,
        data={"content": content},
    )


async def _messages(client, headers, cid) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/conversations/{cid}/messages", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


def _turn(messages: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (m["role"], m["status"], bool(m["tool_calls"]), m["tool_call_id"], m["session_id"])
        for m in messages
    ]


async def test_a_tool_turn_is_stored_call_result_text_and_reads_the_same_everywhere(
    app, client, alice
) -> None:
    cid = await _conversation(client, alice)
    streamed = parse_sse((await _send(client, alice, cid, "/tool weather in Paris")).text)
    by_type = {e.event: e.data for e in streamed}
    sid, call_id = by_type["queued"]["sessionId"], by_type["tool_call"]["id"]
    assert by_type["tool_result"]["id"] == call_id

    messages = await _messages(client, alice, cid)

    assert _turn(messages) == [
        ("user", "complete", False, None, None),
        ("assistant", "complete", True, None, sid),
        ("tool", "complete", False, call_id, sid),
        ("assistant", "complete", False, None, sid),
    ]
    assert messages[1]["tool_calls"] == [
        {
            "id": call_id,
            "type": "function",
            "function": {"name": "echo", "arguments": by_type["tool_call"]["arguments"]},
        }
    ]
    assert messages[1]["content"] is None
    assert messages[2]["content"] == by_type["tool_result"]["content"]
    streamed_text = "".join(e.data["text"] for e in streamed if e.event == "delta")
    assert messages[3]["content"] == streamed_text
    assert messages[3]["id"] == by_type["end"]["messageId"]  # the final assistant message
    sequences = [m["sequence"] for m in messages]
    assert sequences == list(range(sequences[0], sequences[0] + 4))

    rt = app.state.runtime
    conversation = (await client.get(f"/api/v1/conversations/{cid}", headers=alice)).json()
    history = await rt.store.history(cid=cid)
    assert conversation["messages"] == messages  # the cached copy
    assert history == to_openai(messages)
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
    assert_valid(history)

    await rt.redis.delete(keys.session_cache(cid))  # read it all again from the database
    assert await _messages(client, alice, cid) == messages
    reloaded = (await client.get(f"/api/v1/conversations/{cid}", headers=alice)).json()
    assert reloaded["messages"] == messages
    assert await rt.store.history(cid=cid) == history


async def test_the_next_run_gets_the_tool_turn_as_a_valid_transcript(app, client, alice) -> None:
    rt = app.state.runtime
    given: list[list[dict[str, Any]]] = []
    demo = rt.agent

    async def recording(ctx):
        given.append(ctx.history)
        async for event in demo(ctx):
            yield event

    rt.agent = recording
    cid = await _conversation(client, alice)
    await _send(client, alice, cid, "/tool what time is it? and (3 + 4) * 5")
    await _send(client, alice, cid, "thanks")

    second = given[1]
    assert [m["role"] for m in second] == ["user", "assistant", "tool", "tool", "assistant", "user"]
    assert [c["id"] for c in second[1]["tool_calls"]] == [m["tool_call_id"] for m in second[2:4]]
    assert second[-1] == {"role": "user", "content": "thanks"}
    assert_valid(second)


async def test_stream_false_answers_the_final_assistant_message(client, alice) -> None:
    cid = await _conversation(client, alice)

    response = await _send(client, alice, cid, "/tool weather in Paris", stream="false")

    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["session_id"] == response.headers["x-session-id"]
    assert response.headers["x-session-id"].endswith(":" + reply["id"])
    assert (reply["role"], reply["tool_calls"]) == ("assistant", None)
    assert reply["id"] == (await _messages(client, alice, cid))[-1]["id"]


async def test_regenerate_replaces_every_message_of_the_tool_turn(client, alice) -> None:
    cid = await _conversation(client, alice)
    await _send(client, alice, cid, "/tool weather in Paris")
    before = await _messages(client, alice, cid)

    response = await client.post(
        f"/api/v1/conversations/{cid}/regenerate?stream=false", headers=alice
    )

    assert response.status_code == 200, response.text
    after = await _messages(client, alice, cid)
    assert [m["role"] for m in after] == ["user", "assistant", "tool", "assistant"]
    assert after[0]["id"] == before[0]["id"]
    assert not {m["id"] for m in after[1:]} & {m["id"] for m in before[1:]}
    assert {m["session_id"] for m in after[1:]} == {response.headers["x-session-id"]}


@pytest.fixture
def tool_that_hangs(app):
    """An agent whose second tool never returns: a stop lands while it runs."""

    async def agent(ctx):
        yield "Checking."
        yield events.tool_call("c1", "weather", '{"city": "Paris"}')
        yield events.tool_call("c2", "slow_search", "{}")
        yield events.tool_result("c1", "sunny")
        await asyncio.sleep(60)  # c2 "runs"
        yield events.tool_result("c2", "never")

    app.state.runtime.agent = agent


async def test_a_stop_during_a_tool_stores_a_valid_cancelled_turn(
    app, client, alice, tool_that_hangs
) -> None:
    rt = app.state.runtime
    cid = await _conversation(client, alice)
    streaming = asyncio.create_task(_send(client, alice, cid, "weather and news?"))

    async def result_written() -> str | None:
        sid = await rt.redis.get(keys.active(cid))
        if sid is None:
            return None
        types = [f["type"] for _id, f in await rt.redis.xrange(RunKeys(cid, sid).stream)]
        return sid if "tool_result" in types else None

    sid = await eventually(result_written, timeout=10, what="the first tool result")
    stopped = await client.post(f"/api/v1/conversations/{cid}/stop", headers=alice)
    assert stopped.status_code == 200, stopped.text
    end = [e for e in parse_sse((await streaming).text) if e.event == "end"]

    messages = await _messages(client, alice, cid)
    assert _turn(messages) == [
        ("user", "complete", False, None, None),
        ("assistant", "cancelled", True, None, sid),
        ("tool", "complete", False, "c1", sid),
        ("tool", "cancelled", False, "c2", sid),
    ]
    assert messages[1]["content"] == "Checking."
    assert messages[1]["id"] == end[0].data["messageId"]
    assert messages[3]["content"] == CANCELLED_CALL
    assert_valid(await rt.store.history(cid=cid))
