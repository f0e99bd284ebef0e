"""Stored messages → OpenAI chat messages (SPEC §8)."""

from __future__ import annotations

import copy
from typing import Any

from turnstream.store.chats import ChatStore
from turnstream.store.history import to_openai
from turnstream.store.views import ConversationView, NewMessage


def call(cid: str, name: str, arguments: str = "{}") -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_plain_messages_pass_through_unchanged() -> None:
    stored = [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "English only."},
        {"role": "user", "content": "Hi", "name": "alice"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
    ]

    assert to_openai(stored) == stored


def test_only_openai_fields_are_kept_and_none_fields_dropped() -> None:
    stored = [
        {
            "id": "m1",
            "sequence": 0,
            "role": "user",
            "content": "Hi",
            "name": None,
            "tool_call_id": None,
            "refusal": None,
            "tool_calls": None,
            "function_call": None,
            "status": "complete",
            "session_id": None,
            "created_at": "2026-01-01T00:00:00Z",
        }
    ]

    assert to_openai(stored) == [{"role": "user", "content": "Hi"}]


def test_consecutive_assistant_messages_are_merged() -> None:
    stored = [
        {"role": "user", "content": "Weather and time?"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [call("c1", "weather")]},
        {"role": "assistant", "content": "And the time.", "tool_calls": [call("c2", "time")]},
        {"role": "assistant", "content": None, "tool_calls": [call("c3", "date")]},
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
        {"role": "tool", "content": "noon", "tool_call_id": "c2"},
        {"role": "tool", "content": "Monday", "tool_call_id": "c3"},
        {"role": "assistant", "content": "Sunny."},
        {"role": "assistant", "content": "It is noon."},
    ]

    assert to_openai(stored) == [
        {"role": "user", "content": "Weather and time?"},
        {
            "role": "assistant",
            "content": "Let me look.\nAnd the time.",
            "tool_calls": [call("c1", "weather"), call("c2", "time"), call("c3", "date")],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
        {"role": "tool", "content": "noon", "tool_call_id": "c2"},
        {"role": "tool", "content": "Monday", "tool_call_id": "c3"},
        {"role": "assistant", "content": "Sunny.\nIt is noon."},
    ]


def test_merging_handles_none_and_empty_contents() -> None:
    stored = [
        {"role": "assistant", "content": None, "tool_calls": [call("c1", "a")]},
        {"role": "assistant", "content": "only text"},
        {"role": "tool", "content": "A", "tool_call_id": "c1"},
        {"role": "user", "content": "next"},
        {"role": "assistant", "content": None, "tool_calls": [call("c2", "b")]},
        {"role": "assistant", "content": None, "tool_calls": [call("c3", "c")]},
        {"role": "tool", "content": "B", "tool_call_id": "c2"},
        {"role": "tool", "content": None, "tool_call_id": "c3"},
        {"role": "user", "content": None},
        {"role": "assistant", "content": ""},
        {"role": "assistant"},
    ]

    assert to_openai(stored) == [
        {"role": "assistant", "content": "only text", "tool_calls": [call("c1", "a")]},
        {"role": "tool", "content": "A", "tool_call_id": "c1"},
        {"role": "user", "content": "next"},
        {"role": "assistant", "content": None, "tool_calls": [call("c2", "b"), call("c3", "c")]},
        {"role": "tool", "content": "B", "tool_call_id": "c2"},
        # Content a provider requires as a string: None becomes "".
        {"role": "tool", "content": "", "tool_call_id": "c3"},
        {"role": "user", "content": ""},
        # The trailing empty assistant messages are dropped: providers reject them.
    ]


def test_tool_calls_without_an_id_or_a_function_name_are_skipped() -> None:
    good = call("c1", "weather", '{"city": "Paris"}')
    stored = [
        {
            "role": "assistant",
            "content": "Working.",
            "tool_calls": [
                {"type": "function", "function": {"name": "no_id", "arguments": "{}"}},
                {"id": "", "type": "function", "function": {"name": "empty_id"}},
                {"id": "c0", "type": "function", "function": {"arguments": "{}"}},
                {"id": "c0b", "type": "function", "function": {"name": "", "arguments": "{}"}},
                {"id": "c0c", "type": "function"},
                good,
            ],
        },
        {"role": "assistant", "content": "More.", "tool_calls": [{"id": "c9"}]},
        {"role": "tool", "content": "no name", "tool_call_id": "c0"},  # its call was skipped
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
    ]

    assert to_openai(stored) == [
        {"role": "assistant", "content": "Working.\nMore.", "tool_calls": [good]},
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
    ]


def test_an_assistant_message_whose_calls_are_all_skipped_has_no_tool_calls_key() -> None:
    stored = [{"role": "assistant", "content": "hm", "tool_calls": [{"function": {"name": "x"}}]}]

    assert to_openai(stored) == [{"role": "assistant", "content": "hm"}]


def test_tool_calls_are_normalised_to_the_openai_shape() -> None:
    stored = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "function": {"name": "noargs"}, "index": 0, "extra": True},
                {"id": "c2", "type": "function", "function": {"name": "n", "arguments": None}},
            ],
        },
        {"role": "tool", "content": "1", "tool_call_id": "c1"},
        {"role": "tool", "content": "2", "tool_call_id": "c2"},
    ]

    assert to_openai(stored)[0]["tool_calls"] == [
        {"id": "c1", "type": "function", "function": {"name": "noargs", "arguments": ""}},
        {"id": "c2", "type": "function", "function": {"name": "n", "arguments": ""}},
    ]


def test_tool_and_function_messages_keep_their_openai_fields_and_are_not_merged() -> None:
    stored = [
        {"role": "assistant", "content": None, "tool_calls": [call("c1", "a"), call("c2", "b")]},
        {"role": "tool", "content": "1", "tool_call_id": "c1"},
        {"role": "tool", "content": "2", "tool_call_id": "c2", "name": "second"},
        {"role": "function", "content": "3", "name": "legacy"},
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": None, "refusal": "No."},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}},
    ]

    assert to_openai(stored) == [
        *stored[:2],
        # OpenAI's tool message has no name.
        {"role": "tool", "content": "2", "tool_call_id": "c2"},
        *stored[3:6],
        # A refusal alone is also the content: an assistant message needs content or calls.
        {"role": "assistant", "content": "No.", "refusal": "No."},
        *stored[7:],
    ]


def test_conversion_does_not_modify_its_input() -> None:
    stored = [
        {"role": "assistant", "content": "a", "tool_calls": [call("c1", "x")]},
        {"role": "assistant", "content": "b", "tool_calls": [call("c2", "y")]},
    ]
    before = copy.deepcopy(stored)

    to_openai(stored)

    assert stored == before


def test_empty_history_is_empty() -> None:
    assert to_openai([]) == []
    assert to_openai(iter([])) == []


async def test_store_history_is_the_openai_form_of_the_stored_messages(
    store: ChatStore, conversation: ConversationView
) -> None:
    cid = conversation.id
    for message in [
        NewMessage(role="system", content="Be brief."),
        NewMessage(role="user", content="Weather?"),
        NewMessage(
            role="assistant",
            content="Checking.",
            tool_calls=[call("c1", "weather"), {"type": "function", "function": {"name": "x"}}],
            status="partial",
            session_id="s1",
        ),
        NewMessage(
            role="assistant", content=None, tool_calls=[call("c2", "time")], session_id="s1"
        ),
        NewMessage(role="tool", content="sunny", tool_call_id="c1", name="weather"),
        NewMessage(role="tool", content="noon", tool_call_id="c2"),
        NewMessage(role="assistant", content="Sunny at noon.", session_id="s1"),
    ]:
        await store.append(cid=cid, message=message)

    expected = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [call("c1", "weather"), call("c2", "time")],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
        {"role": "tool", "content": "noon", "tool_call_id": "c2"},
        {"role": "assistant", "content": "Sunny at noon."},
    ]
    assert await store.history(cid=cid) == expected  # from the database
    assert await store.history(cid=cid) == expected  # from the cache
    await store.append(cid=cid, message=NewMessage(role="user", content="Thanks"))
    patched = await store.history(cid=cid)  # from the patched cache
    assert patched == [*expected, {"role": "user", "content": "Thanks"}]
