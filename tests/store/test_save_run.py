"""ChatStore.save_run: a run's messages, stored in order in one transaction.

Every test runs on SQLite and on PostgreSQL (the `database_url` fixture).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from turnstream import keys
from turnstream.ids import uuid7
from turnstream.store.chats import ChatStore
from turnstream.store.views import CachedConversation, MessageView, NewMessage

SID = "conversation:alice:run-1"


def call(call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": "weather", "arguments": "{}"}}


def tool_turn(
    message_id: str, *, text: str = "Sunny.", status: Any = "complete"
) -> list[NewMessage]:
    """A step with a call and its answer, then the final text under `message_id`."""
    return [
        NewMessage(id=uuid7(), role="assistant", tool_calls=[call("c1")], session_id=SID),
        NewMessage(id=uuid7(), role="tool", content="sunny", tool_call_id="c1", session_id=SID),
        NewMessage(id=message_id, role="assistant", content=text, status=status, session_id=SID),
    ]


def said(messages: list[MessageView]) -> list[tuple[Any, ...]]:
    return [(m.sequence, m.role, m.content, m.tool_call_id, m.session_id) for m in messages]


async def cached(redis: Redis, cid: str) -> CachedConversation | None:
    raw = await redis.get(keys.session_cache(cid))
    return CachedConversation.model_validate_json(raw) if raw else None


async def test_a_run_is_stored_in_order_with_consecutive_sequences_and_one_version(
    store: ChatStore, cid: str, redis: Redis
) -> None:
    await store.append(cid=cid, message=NewMessage(role="user", content="weather?"))
    before = await store.load(cid=cid)
    message_id = uuid7()

    views = await store.save_run(cid=cid, session_id=SID, messages=tool_turn(message_id))

    expected = [
        (1, "assistant", None, None, SID),
        (2, "tool", "sunny", "c1", SID),
        (3, "assistant", "Sunny.", None, SID),
    ]
    assert said(views) == expected
    assert views[-1].id == message_id
    from_db = await store.messages(cid=cid, limit=10)
    assert said(from_db[1:]) == expected
    in_cache = await cached(redis, cid)  # patched in place: one write, one version
    assert before is not None and in_cache is not None
    assert in_cache.version == before.version + 1
    assert [m.model_dump() for m in in_cache.messages] == [m.model_dump() for m in from_db]
    nxt = await store.append(cid=cid, message=NewMessage(role="user", content="thanks"))
    assert nxt.sequence == 4


async def test_saving_a_run_again_replaces_its_messages_in_their_place(
    store: ChatStore, cid: str, redis: Redis
) -> None:
    await store.append(cid=cid, message=NewMessage(role="user", content="weather?"))
    message_id = uuid7()
    await store.save(  # a stopped run's placeholder, stored by someone else first
        cid=cid,
        message=NewMessage(
            id=message_id, role="assistant", content="", status="cancelled", session_id=SID
        ),
    )
    await store.load(cid=cid)

    views = await store.save_run(cid=cid, session_id=SID, messages=tool_turn(message_id))

    assert [v.sequence for v in views] == [1, 2, 3]
    from_db = await store.messages(cid=cid, limit=10)
    assert [(m.sequence, m.role) for m in from_db] == [
        (0, "user"),
        (1, "assistant"),
        (2, "tool"),
        (3, "assistant"),
    ]
    assert sum(m.id == message_id for m in from_db) == 1
    in_cache = await cached(redis, cid)
    assert in_cache is not None
    assert [m.model_dump() for m in in_cache.messages] == [m.model_dump() for m in from_db]

    shorter = [NewMessage(id=message_id, role="assistant", content="Sunny.", session_id=SID)]
    await store.save_run(cid=cid, session_id=SID, messages=shorter)
    assert said(await store.messages(cid=cid, limit=10)) == [
        (0, "user", "weather?", None, None),
        (1, "assistant", "Sunny.", None, SID),
    ]
    nxt = await store.append(cid=cid, message=NewMessage(role="user", content="thanks"))
    assert nxt.sequence == 2


async def test_keep_existing_keeps_what_the_run_stored_and_returns_it(
    store: ChatStore, cid: str
) -> None:
    await store.append(cid=cid, message=NewMessage(role="user", content="weather?"))
    message_id = uuid7()
    first = await store.save_run(cid=cid, session_id=SID, messages=tool_turn(message_id))
    await store.load(cid=cid)

    kept = await store.save_run(
        cid=cid,
        session_id=SID,
        messages=tool_turn(message_id, text="", status="error"),
        keep_existing=True,
    )

    assert [v.model_dump() for v in kept] == [v.model_dump() for v in first]
    loaded = await store.load(cid=cid)
    assert loaded is not None
    assert [m.content for m in loaded.messages] == ["weather?", None, "sunny", "Sunny."]


async def test_a_run_followed_by_another_message_is_never_moved_behind_it(
    store: ChatStore, cid: str
) -> None:
    await store.append(cid=cid, message=NewMessage(role="user", content="weather?"))
    message_id = uuid7()
    await store.save_run(cid=cid, session_id=SID, messages=tool_turn(message_id))
    await store.append(cid=cid, message=NewMessage(role="user", content="next question"))

    late = await store.save_run(
        cid=cid, session_id=SID, messages=tool_turn(message_id, text="late worker")
    )

    assert [m.content for m in late] == [None, "sunny", "Sunny."]
    assert [m.content for m in await store.messages(cid=cid, limit=10)] == [
        "weather?",
        None,
        "sunny",
        "Sunny.",
        "next question",
    ]


async def test_a_worker_and_a_reaper_saving_one_run_at_once_store_it_once(
    store: ChatStore, other_store: ChatStore, cid: str
) -> None:
    for attempt in range(5):
        await store.append(cid=cid, message=NewMessage(role="user", content=f"q{attempt}"))
        message_id = uuid7()
        sid = f"{SID}-{attempt}"
        worker = [m.model_copy(update={"session_id": sid}) for m in tool_turn(message_id)]
        reaper = [m.model_copy(update={"session_id": sid}) for m in tool_turn(message_id)[:1]]
        reaper = [reaper[0].model_copy(update={"id": message_id, "status": "error"})]

        await asyncio.gather(
            store.save_run(cid=cid, session_id=sid, messages=worker),
            other_store.save_run(cid=cid, session_id=sid, messages=reaper, keep_existing=True),
        )

        # Either order ends with the worker's messages: a reaper keeps what it finds,
        # and a worker replaces what a reaper stored just before it.
        stored = [m for m in await store.messages(cid=cid, limit=100) if m.session_id == sid]
        assert [m.role for m in stored] == ["assistant", "tool", "assistant"]
        assert sum(m.id == message_id for m in stored) == 1
        sequences = [m.sequence for m in stored]
        assert sequences == list(range(sequences[0], sequences[0] + len(stored)))


async def test_regenerate_deletes_every_message_of_the_replaced_run(
    store: ChatStore, cid: str, redis: Redis
) -> None:
    await store.append(cid=cid, message=NewMessage(role="user", content="weather?"))
    await store.save_run(cid=cid, session_id=SID, messages=tool_turn(uuid7()))
    await store.load(cid=cid)

    last_user = await store.delete_replies_after_last_user(cid=cid)

    assert last_user is not None and last_user.content == "weather?"
    assert [m.role for m in await store.messages(cid=cid, limit=10)] == ["user"]
    loaded = await store.load(cid=cid)
    assert loaded is not None and [m.role for m in loaded.messages] == ["user"]
    assert await store.history(cid=cid) == [{"role": "user", "content": "weather?"}]
