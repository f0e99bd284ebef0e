"""The potpie translation's pure parts: stored messages -> the flat history, events ->
the streamed chunks, the echoed fields; and /api/v1's OpenAPI document, the same either way."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from potpie_ui import Shown, complete_objects

from turnstream.api.app import create_app
from turnstream.api.potpie import history, shapes
from turnstream.api.potpie.stream import ReplyChunks
from turnstream.config import Settings
from turnstream.keys import RunKeys
from turnstream.store.views import ConversationView, MessageView

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
RUN, OTHER = "conversation:alice:run-1", "conversation:alice:run-2"


def _message(n: int, role: str, content: str | None, **fields: Any) -> MessageView:
    return MessageView(id=f"m{n}", sequence=n, created_at=NOW, role=role, content=content, **fields)


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


STORED = [
    _message(0, "system", "be brief"),
    _message(1, "user", "add them"),
    _message(2, "assistant", None, session_id=RUN, tool_calls=[_call("c1", "add", '{"a":1}')]),
    _message(3, "tool", "2", session_id=RUN, tool_call_id="c1"),
    _message(4, "assistant", "It is", session_id=RUN, tool_calls=[_call("c2", "add", "{bad")]),
    _message(5, "tool", "boom", session_id=RUN, tool_call_id="c2", status="error"),
    _message(6, "assistant", " 2.", session_id=RUN),
    _message(7, "user", "again"),
    _message(8, "assistant", "partial", session_id=OTHER),
]


def test_a_run_is_one_message_with_its_texts_joined_and_its_calls_by_id() -> None:
    flat = history.flat(STORED, running=None)
    assert [(m["id"], m["type"], m["content"]) for m in flat] == [
        ("m1", "HUMAN", "add them"),
        ("m6", "AI_GENERATED", "It is 2."),  # the run's last assistant message's id
        ("m7", "HUMAN", "again"),
        ("m8", "AI_GENERATED", "partial"),
    ]
    calls = [(c["call_id"], c["event_type"], c["tool_response"]) for c in flat[1]["tool_calls"]]
    assert calls == [
        ("c1", "call", ""),
        ("c1", "result", "2"),
        ("c2", "call", ""),
        ("c2", "error", "boom"),
    ]
    details = [c["tool_call_details"]["arguments"] for c in flat[1]["tool_calls"]]
    assert details == [{"a": 1}, {"a": 1}, "{bad", "{bad"]  # arguments that do not parse: as text
    assert {c["tool_name"] for c in flat[1]["tool_calls"]} == {"add"}
    assert flat[0]["created_at"] == "2026-12-01T12:00:00Z" and flat[0]["citations"] == []


def test_the_running_reply_is_left_out() -> None:
    flat = history.flat(STORED, running=OTHER)
    assert [m["type"] for m in flat] == ["HUMAN", "AI_GENERATED", "HUMAN"]


def test_the_stream_carries_text_calls_and_all_the_reasoning_so_far() -> None:
    reply = ReplyChunks(RunKeys("cid", RUN))
    events: list[tuple[str, dict[str, Any]]] = [
        ("queued", {"sessionId": RUN}),
        ("reasoning", {"text": "think"}),
        ("reasoning", {"text": "ing"}),
        ("delta", {"text": "It"}),
        ("tool_call", {"id": "c1", "name": "add", "arguments": '{"a":1}'}),
        ("tool_result", {"id": "c1", "content": "2", "isError": False}),
        ("usage", {"prompt_tokens": 1, "completion_tokens": 2}),
        ("delta", {"text": " is 2 {curly}."}),
        ("error", {"message": "model gone", "code": "agent_error"}),
        ("end", {"status": "error", "messageId": "m6"}),
        ("delta", {"text": "never"}),
    ]
    chunks = [chunk for type_, data in events for chunk in reply.feed(type_, data)]
    assert reply.ended
    assert [c["thinking"] for c in chunks[:3]] == ["think", "thinking", "thinking"]
    assert chunks[-1] == {
        "event": "error",
        "status": "error",
        "message": "model gone",
        "citations": [],
        "tool_calls": [],
        "thinking": "thinking",
        "conversation_id": "cid",
        "run_id": RUN,
    }
    # Read as potpie-ui reads it: objects back to back, in pieces of any size.
    body = "".join(json.dumps(c) for c in chunks)
    shown, buffer = Shown(), ""
    for start in range(0, len(body), 7):
        objects, buffer = complete_objects(buffer + body[start : start + 7])
        for chunk in objects:
            shown.take(chunk)
    assert shown.text == "It is 2 {curly}.model gone"  # potpie shows a failure in the reply
    assert shown.tool_calls["c1"]["event_type"] == "result"
    assert shown.tool_calls["c1"]["tool_call_details"] == {"arguments": {"a": 1}}


def test_echoed_fields_default_when_missing_or_garbled() -> None:
    def view(metadata: dict[str, Any]) -> ConversationView:
        return ConversationView(
            id="c", user_id="u", title="t", metadata=metadata, created_at=NOW, updated_at=NOW
        )

    defaults = {"status": "active", "project_ids": [], "agent_ids": []}
    assert shapes.kept(view({})) == defaults
    assert shapes.kept(view({"potpie": "x"})) == defaults
    garbled = {"potpie": {"status": "gone", "project_ids": [1, "p"], "agent_ids": {"a": 1}}}
    assert shapes.kept(view(garbled)) == {**defaults, "project_ids": ["p"]}
    assert shapes.list_item(view({}))["agent_id"] is None


def test_the_openapi_document_is_the_same_with_the_setting(tmp_path: Path) -> None:
    def document(on: bool) -> dict[str, Any]:
        url = f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"
        return create_app(Settings(database_url=url, potpie_compat=on)).openapi()

    assert document(True) == document(False)
