"""Native run events -> the AI SDK's UI message chunks (turnstream/api/ui_stream.py), no server."""

from __future__ import annotations

import json

from turnstream import events
from turnstream.api.ui_stream import DONE, UIMessageStream, frame, translate


def _run(*evs: events.Event, message_id: str = "m1") -> list[dict]:
    return translate(message_id, [(e.type.value, e.data) for e in evs])


def _types(chunks: list[dict]) -> list[str]:
    return [c["type"] for c in chunks]


def test_a_plain_reply_is_one_step_of_one_text_part():
    chunks = _run(
        events.queued("s"),
        events.start("w"),
        events.delta("Hel"),
        events.delta("lo"),
        events.usage(1, 2),
        events.end("completed", "m1"),
    )
    assert chunks == [
        {"type": "start", "messageId": "m1"},
        {"type": "start-step"},
        {"type": "text-start", "id": "text-0"},
        {"type": "text-delta", "id": "text-0", "delta": "Hel"},
        {"type": "text-delta", "id": "text-0", "delta": "lo"},
        {"type": "text-end", "id": "text-0"},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "stop"},
    ]


def test_a_tool_turn_is_a_step_of_calls_and_results_then_a_step_of_text():
    chunks = _run(
        events.queued("s"),
        events.start("w"),
        events.reasoning("think"),
        events.tool_call("c1", "echo", '{"q": 1}'),
        events.tool_call("c2", "fail", "not json"),
        events.tool_result("c1", '{"q": 1}'),
        events.tool_result("c2", "boom", is_error=True),
        events.delta("done"),
        events.end("completed", "m1"),
    )
    assert chunks == [
        {"type": "start", "messageId": "m1"},
        {"type": "start-step"},
        {"type": "reasoning-start", "id": "reasoning-0"},
        {"type": "reasoning-delta", "id": "reasoning-0", "delta": "think"},
        {"type": "reasoning-end", "id": "reasoning-0"},
        {"type": "tool-input-available", "toolCallId": "c1", "toolName": "echo", "input": {"q": 1}},
        {
            "type": "tool-input-available",
            "toolCallId": "c2",
            "toolName": "fail",
            "input": "not json",
        },
        {"type": "tool-output-available", "toolCallId": "c1", "output": '{"q": 1}'},
        {"type": "tool-output-error", "toolCallId": "c2", "errorText": "boom"},
        {"type": "finish-step"},
        {"type": "start-step"},
        {"type": "text-start", "id": "text-1"},
        {"type": "text-delta", "id": "text-1", "delta": "done"},
        {"type": "text-end", "id": "text-1"},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "stop"},
    ]


def test_text_then_tool_calls_stay_in_one_step_and_close_the_text_first():
    chunks = _run(
        events.delta("Let me look."),
        events.tool_call("c1", "echo", "{}"),
        events.tool_result("c1", "ok"),
        events.tool_call("c2", "echo", "{}"),
        events.tool_result("c2", "ok"),
        events.end("completed", "m1"),
    )
    assert _types(chunks) == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "tool-input-available",
        "tool-output-available",
        "finish-step",
        "start-step",  # a tool_call after a tool_result begins the next step
        "tool-input-available",
        "tool-output-available",
        "finish-step",
        "finish",
    ]


def test_reasoning_and_text_alternating_open_new_parts():
    chunks = _run(
        events.reasoning("a"),
        events.delta("b"),
        events.reasoning("c"),
        events.end("completed", "m1"),
    )
    assert [(c["type"], c.get("id")) for c in chunks[2:-2]] == [
        ("reasoning-start", "reasoning-0"),
        ("reasoning-delta", "reasoning-0"),
        ("reasoning-end", "reasoning-0"),
        ("text-start", "text-1"),
        ("text-delta", "text-1"),
        ("text-end", "text-1"),
        ("reasoning-start", "reasoning-2"),
        ("reasoning-delta", "reasoning-2"),
        ("reasoning-end", "reasoning-2"),
    ]


def test_a_failed_run_sends_error_then_finish_with_reason_error():
    chunks = _run(
        events.delta("part"),
        events.error("the model went away", "agent_error"),
        events.end("error", "m1"),
    )
    assert chunks[-5:] == [
        {"type": "text-delta", "id": "text-0", "delta": "part"},
        {"type": "text-end", "id": "text-0"},
        {"type": "error", "errorText": "the model went away"},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "error"},
    ]


def test_a_stopped_run_sends_abort_then_finish_interrupted():
    chunks = _run(events.delta("part"), events.end("cancelled", "m1"))
    assert chunks[-3:] == [
        {"type": "finish-step"},
        {"type": "abort", "reason": "The run was stopped."},
        {"type": "finish", "finishReason": "interrupted"},
    ]


def test_a_run_stopped_before_it_started_has_no_step():
    chunks = _run(events.queued("s"), events.end("cancelled", "m1"))
    assert _types(chunks) == ["start", "abort", "finish"]


def test_a_result_for_an_unseen_call_is_left_out():
    chunks = _run(events.tool_result("nobody", "x"), events.end("completed", "m1"))
    assert _types(chunks) == ["start", "finish"]


def test_nothing_follows_the_end():
    stream = UIMessageStream("m1")
    stream.feed("end", {"status": "completed", "messageId": "m1"})
    assert stream.ended
    assert stream.feed("delta", {"text": "late"}) == []


def test_an_unknown_event_type_is_ignored():
    assert UIMessageStream("m1").feed("something_new", {"x": 1}) == []


def test_a_cut_stream_ends_with_an_error_chunk():
    stream = UIMessageStream("m1")
    assert stream.cut("Redis unavailable; resume later.") == [
        {"type": "error", "errorText": "Redis unavailable; resume later."}
    ]
    assert stream.ended


def test_frames_are_sse_data_lines_as_the_ai_sdk_writes_them():
    raw = frame({"type": "text-delta", "id": "text-0", "delta": "é\n"})
    assert raw.startswith(b"data: ") and raw.endswith(b"\n\n")
    assert json.loads(raw[len(b"data: ") :]) == {
        "type": "text-delta",
        "id": "text-0",
        "delta": "é\n",
    }
    assert raw.count(b"\n") == 2  # a newline in the text stays escaped inside the JSON
    assert DONE == b"data: [DONE]\n\n"


# A run whose call waited on the user: asked, decided, then the same run goes on.
_ASKED = (
    events.queued("s"),
    events.start("w"),
    events.tool_call("c1", "calculator", '{"expression": "6*7"}'),
    events.approval_request("a1", "c1", "calculator", '{"expression": "6*7"}', 1),
)


def _went_on(*, approved: bool, reason: str = "") -> tuple[events.Event, ...]:
    result = "42" if approved else "Not run: the user denied this call."
    return (
        events.approval("a1", "c1", approved=approved, reason=reason),
        events.start("w2"),  # the continuation's own `start`: nothing for the client
        events.tool_result("c1", result, is_error=not approved),
        events.delta("done"),
        events.end("completed", "m1"),
    )


def test_an_approved_call_is_asked_answered_and_its_output_follows_in_one_message():
    chunks = _run(*_ASKED, *_went_on(approved=True))
    assert chunks == [
        {"type": "start", "messageId": "m1"},
        {"type": "start-step"},
        {
            "type": "tool-input-available",
            "toolCallId": "c1",
            "toolName": "calculator",
            "input": {"expression": "6*7"},
        },
        {"type": "tool-approval-request", "approvalId": "a1", "toolCallId": "c1"},
        {"type": "tool-approval-response", "approvalId": "a1", "approved": True},
        {"type": "tool-output-available", "toolCallId": "c1", "output": "42"},
        {"type": "finish-step"},
        {"type": "start-step"},
        {"type": "text-start", "id": "text-0"},
        {"type": "text-delta", "id": "text-0", "delta": "done"},
        {"type": "text-end", "id": "text-0"},
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "stop"},
    ]


def test_a_denied_call_is_output_denied_with_the_reason_and_no_error_output():
    chunks = _run(*_ASKED, *_went_on(approved=False, reason="not today"))
    assert chunks[4:6] == [
        {
            "type": "tool-approval-response",
            "approvalId": "a1",
            "approved": False,
            "reason": "not today",
        },
        {"type": "tool-output-denied", "toolCallId": "c1"},
    ]
    assert "tool-output-error" not in _types(chunks)
    assert _types(chunks)[-2:] == ["finish-step", "finish"]


def test_a_response_pauses_with_finish_tool_calls_while_the_run_waits():
    stream = UIMessageStream("m1")
    sent = [c for e in _ASKED for c in stream.feed(e.type.value, e.data)]
    assert sent[-1] == {"type": "tool-approval-request", "approvalId": "a1", "toolCallId": "c1"}
    assert stream.awaiting == {"a1"} and stream.requested == {"a1"}
    assert stream.pause() == [
        {"type": "finish-step"},
        {"type": "finish", "finishReason": "tool-calls"},
    ]
    assert stream.ended


def test_the_answers_response_sends_only_what_follows_the_requests_it_answers():
    stream = UIMessageStream("m1", after_approvals=frozenset({"a1"}))
    sent = stream.start()
    for e in (*_ASKED, *_went_on(approved=True)):
        sent += stream.feed(e.type.value, e.data)
    whole = _run(*_ASKED, *_went_on(approved=True))
    answered = _types(whole).index("tool-approval-response")
    assert sent == [whole[0], *whole[answered:]]  # `start`, then all after the request
    assert stream.awaiting == set()


def test_a_decision_for_a_request_never_sent_is_left_out():
    chunks = _run(events.approval("a9", "c9", approved=False, reason=""))
    assert _types(chunks) == ["start"]


def test_a_compaction_is_a_transient_data_part_before_the_reply():
    compaction = events.compaction(
        tokens_before=9000, tokens_after=3000, summarized_through="m0", model="gpt-4o-mini"
    )
    chunks = _run(compaction, events.delta("Hi"), events.end("completed", "m1"))
    assert chunks[1] == {
        "type": "data-compaction",
        "data": {
            "summarizedThrough": "m0",
            "tokensBefore": 9000,
            "tokensAfter": 3000,
            "model": "gpt-4o-mini",
        },
        "transient": True,
    }
    assert _types(chunks)[2:] == ["start-step", "text-start", "text-delta", "text-end",
                                  "finish-step", "finish"]  # fmt: skip
