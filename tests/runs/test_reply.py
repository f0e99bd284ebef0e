"""The one builder of a run's stored messages (runs/reply.py): events in, OpenAI messages out.

The executor feeds it the agent's events and the reaper the run's stream; the
last tests check that both store the same messages.
"""

from __future__ import annotations

import asyncio
from typing import Any

from helpers import NoBroker
from openai_rules import assert_valid

from turnstream import events
from turnstream.events import Event
from turnstream.ids import is_uuid
from turnstream.keys import RunKeys
from turnstream.live.client import entries
from turnstream.live.status import RunStatus
from turnstream.runs.executor import execute
from turnstream.runs.reaper import reap_once
from turnstream.runs.reply import CANCELLED_CALL, FAILED_CALL, Reply
from turnstream.runs.service import Multitask, start_run
from turnstream.store.users import ensure_user
from turnstream.store.views import NewMessage

MID = "01a22c69-927f-7a35-b315-552e09b0ae49"
SID = f"conversation:alice:{MID}"


def build(evs: list[Event | str], status: RunStatus = RunStatus.COMPLETED) -> list[NewMessage]:
    reply = Reply()
    for event in evs:
        event = events.delta(event) if isinstance(event, str) else event
        reply.add(event.type, event.data)
    return reply.messages(status, message_id=MID, session_id=SID)


def shape(messages: list[NewMessage]) -> list[tuple[Any, ...]]:
    """What a message says, without the ids the builder makes up."""
    return [(m.role, m.content, m.tool_calls, m.tool_call_id, m.status) for m in messages]


def call(call_id: str, name: str, arguments: str = "{}") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def check_ids(messages: list[NewMessage], carrier: int) -> None:
    """Message `carrier` has the run's message id, the others fresh UUIDv7s; all the session."""
    assert messages[carrier].id == MID
    others = [m.id for i, m in enumerate(messages) if i != carrier]
    assert all(i is not None and is_uuid(i) and i != MID for i in others)
    assert len(set(others)) == len(others)
    assert {m.session_id for m in messages} == {SID}


def test_a_plain_reply_is_one_assistant_message_under_the_run_message_id() -> None:
    messages = build(["Hel", "lo", events.usage(3, 2)])

    assert shape(messages) == [("assistant", "Hello", None, None, "complete")]
    check_ids(messages, 0)


def test_one_tool_step_is_call_then_result_then_the_final_text() -> None:
    messages = build(
        [
            events.reasoning("the user wants weather"),
            "Let me look.",
            events.tool_call("c1", "weather", '{"city":"Paris"}'),
            events.tool_result("c1", "sunny"),
            "It is ",
            "sunny.",
        ]
    )

    assert shape(messages) == [
        (
            "assistant",
            "Let me look.",
            [call("c1", "weather", '{"city":"Paris"}')],
            None,
            "complete",
        ),
        ("tool", "sunny", None, "c1", "complete"),
        ("assistant", "It is sunny.", None, None, "complete"),
    ]
    check_ids(messages, 2)  # the final assistant message carries the run's id


def test_two_tool_steps_keep_their_order_and_a_call_without_text_has_null_content() -> None:
    messages = build(
        [
            events.tool_call("c1", "clock", "{}"),
            events.tool_call("c2", "calculator", '{"expression":"6*7"}'),
            events.tool_result("c2", "42"),  # results in the order they came
            events.tool_result("c1", "noon"),
            "Now the weather.",
            events.tool_call("c3", "weather", "{}"),
            events.tool_result("c3", "Weather service down", is_error=True),
            "Noon, 42, and no weather.",
        ]
    )

    assert shape(messages) == [
        (
            "assistant",
            None,
            [call("c1", "clock"), call("c2", "calculator", '{"expression":"6*7"}')],
            None,
            "complete",
        ),
        ("tool", "42", None, "c2", "complete"),
        ("tool", "noon", None, "c1", "complete"),
        ("assistant", "Now the weather.", [call("c3", "weather")], None, "complete"),
        ("tool", "Weather service down", None, "c3", "error"),  # the tool failed: isError
        ("assistant", "Noon, 42, and no weather.", None, None, "complete"),
    ]
    check_ids(messages, 5)
    assert_valid(
        [
            m.model_dump(
                include={"role", "content", "tool_calls", "tool_call_id"}, exclude_none=True
            )
            for m in messages
        ]
    )


def test_a_stop_during_a_tool_stores_a_cancelled_answer_and_ids_the_last_assistant() -> None:
    messages = build(
        [
            "Checking both.",
            events.tool_call("c1", "weather", "{}"),
            events.tool_call("c2", "slow_search", "{}"),
            events.tool_result("c1", "sunny"),
        ],
        RunStatus.CANCELLED,
    )

    assert shape(messages) == [
        (
            "assistant",
            "Checking both.",
            [call("c1", "weather"), call("c2", "slow_search")],
            None,
            "cancelled",
        ),
        ("tool", "sunny", None, "c1", "complete"),
        ("tool", CANCELLED_CALL, None, "c2", "cancelled"),
    ]
    check_ids(messages, 0)


def test_an_error_mid_step_stores_failed_answers_and_the_text_so_far() -> None:
    messages = build(
        [
            events.tool_call("c1", "weather", "{}"),
            events.tool_result("c1", "sunny"),
            "It is sun",
            events.tool_call("c2", "forecast", "{}"),
            events.error("the model fell over", "agent_error"),
        ],
        RunStatus.ERROR,
    )

    assert shape(messages) == [
        ("assistant", None, [call("c1", "weather")], None, "complete"),
        ("tool", "sunny", None, "c1", "complete"),
        ("assistant", "It is sun", [call("c2", "forecast")], None, "error"),
        ("tool", FAILED_CALL, None, "c2", "error"),
    ]
    check_ids(messages, 2)


def test_a_run_ended_after_the_results_ids_the_assistant_message_with_the_calls() -> None:
    messages = build(
        [events.tool_call("c1", "weather", "{}"), events.tool_result("c1", "sunny")],
        RunStatus.CANCELLED,
    )

    assert shape(messages) == [
        ("assistant", None, [call("c1", "weather")], None, "cancelled"),
        ("tool", "sunny", None, "c1", "complete"),
    ]
    check_ids(messages, 0)


def test_a_run_with_nothing_to_store_stores_one_empty_assistant_message() -> None:
    for evs, status, message_status in [
        ([], RunStatus.CANCELLED, "cancelled"),
        ([events.reasoning("hmm"), events.usage(1, 0)], RunStatus.ERROR, "error"),
        ([""], RunStatus.COMPLETED, "complete"),
    ]:
        messages = build(evs, status)
        assert shape(messages) == [("assistant", "", None, None, message_status)]
        check_ids(messages, 0)


def test_step_boundaries_follow_a_tool_result_only() -> None:
    """A delta between a call and its result stays in the step; one after a result starts one."""
    messages = build(
        [
            events.tool_call("c1", "a", "{}"),
            "still step one",
            events.tool_call("c2", "b", "{}"),
            events.tool_result("c1", "A"),
            events.usage(1, 1),  # not a step start
            events.reasoning("thinking"),  # a step start, though not stored
            events.tool_result("c2", "B"),  # a late result joins its call's step
            "step three",
        ]
    )

    assert shape(messages) == [
        ("assistant", "still step one", [call("c1", "a"), call("c2", "b")], None, "complete"),
        ("tool", "A", None, "c1", "complete"),
        ("tool", "B", None, "c2", "complete"),
        ("assistant", "step three", None, None, "complete"),
    ]


def test_a_result_for_no_call_of_the_run_starts_no_step() -> None:
    messages = build(["one ", events.tool_result("zz", "stray"), "message"])

    assert shape(messages) == [("assistant", "one message", None, None, "complete")]


def test_events_that_cannot_be_part_of_a_valid_transcript_are_left_out() -> None:
    messages = build(
        [
            events.tool_result("c0", "an answer to no call"),
            events.tool_call("", "no_id", "{}"),
            events.tool_call("c1", "", "{}"),  # no name
            events.tool_call("c2", "weather", "{}"),
            events.tool_call("c2", "weather_again", "{}"),  # an id already used
            events.tool_result("c2", "sunny"),
            events.tool_result("c2", "rainy"),  # a second result
            events.tool_result("c1", "for the nameless call"),
            "Sunny.",
        ]
    )

    assert shape(messages) == [
        ("assistant", None, [call("c2", "weather")], None, "complete"),
        ("tool", "sunny", None, "c2", "complete"),
        ("assistant", "Sunny.", None, None, "complete"),
    ]


def test_usage_adds_up_over_the_steps() -> None:
    reply = Reply()
    for event in [events.usage(3, 1), events.tool_call("c1", "a", "{}"), events.usage(5, 7)]:
        reply.add(event.type, event.data)
    assert (reply.prompt_tokens, reply.completion_tokens) == (8, 8)


# -- the executor and the reaper store the same messages --------------------------


async def _queued_run(rt: Any, content: str) -> tuple[RunKeys, str]:
    async with rt.sessions() as db:
        await ensure_user(db, user_id="alice")
        await db.commit()
    conversation = await rt.store.create(user_id="alice")
    started = await start_run(
        rt,
        NoBroker(),
        cid=conversation.id,
        user_id="alice",
        content=content,
        multitask=Multitask.REJECT,
    )
    return RunKeys(conversation.id, started.session_id), started.message_id


async def _stored_run(rt: Any, k: RunKeys) -> list[NewMessage]:
    loaded = await rt.store.load(cid=k.cid)
    return [NewMessage(**m.model_dump()) for m in loaded.messages if m.session_id == k.sid]


async def _rebuilt(rt: Any, k: RunKeys, status: RunStatus, message_id: str) -> list[NewMessage]:
    """What the reaper builds from the run's stream."""
    reply = Reply()
    for entry in entries(await rt.redis.xrange(k.stream)):
        reply.add(entry.type, entry.data)
    return reply.messages(status, message_id=message_id, session_id=k.sid)


async def test_the_reaper_rebuilds_from_the_stream_what_the_executor_stored(app) -> None:
    rt = app.state.runtime
    k, message_id = await _queued_run(rt, "/tool what time is it? and (3 + 4) * 5")
    await execute(rt, k.cid, k.sid, worker="w")

    stored = await _stored_run(rt, k)
    rebuilt = await _rebuilt(rt, k, RunStatus.COMPLETED, message_id)

    assert [m.role for m in stored] == ["assistant", "tool", "tool", "assistant"]
    assert shape(rebuilt) == shape(stored)
    assert [m.id for m in stored][-1] == [m.id for m in rebuilt][-1] == message_id


async def test_a_reaped_run_is_stored_as_the_executor_would_have_stored_it(app) -> None:
    """A worker dies between a call and its result: the reaper stores a failed answer."""
    rt = app.state.runtime
    k, message_id = await _queued_run(rt, "weather?")
    assert await rt.runs.claim(k, worker="dead-worker", lease_seconds=0.05)
    written = [
        events.delta("Let me look."),
        events.tool_call("c1", "weather", "{}"),
        events.tool_call("c2", "time", "{}"),
        events.tool_result("c1", "sunny"),
    ]
    await rt.runs.append(k, written)
    await asyncio.sleep(0.1)
    assert await reap_once(rt) == 1

    stored = await _stored_run(rt, k)
    expected = Reply()
    for event in written:
        expected.add(event.type, event.data)

    assert shape(stored) == shape(
        expected.messages(RunStatus.ERROR, message_id=message_id, session_id=k.sid)
    )
    assert shape(stored) == [
        ("assistant", "Let me look.", [call("c1", "weather"), call("c2", "time")], None, "error"),
        ("tool", "sunny", None, "c1", "complete"),
        ("tool", FAILED_CALL, None, "c2", "error"),
    ]
    assert stored[0].id == message_id
    assert (await rt.runs.get(k)).status is RunStatus.ERROR
