"""ChatStore: conversations and messages in SQL, a versioned Redis cache in front.

Every test runs on SQLite and on PostgreSQL (the `database_url` fixture).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from helpers import free_port
from redis.asyncio import Redis
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from turnstream import keys
from turnstream.ids import uuid7
from turnstream.store.chats import ChatStore
from turnstream.store.models import Message, Run
from turnstream.store.views import CachedConversation, ConversationView, NewMessage

FIELDS = (
    "role",
    "content",
    "name",
    "tool_call_id",
    "refusal",
    "tool_calls",
    "function_call",
    "status",
    "session_id",
)

WEATHER_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
}

# A run's tool call and its answer, as runs/reply.py builds them (session "s").
TOOL_TURN = [
    NewMessage(role="assistant", tool_calls=[WEATHER_CALL], session_id="s"),
    NewMessage(role="tool", content="sunny", tool_call_id="call_1", session_id="s"),
]

# One message of every role, between them using every optional field.
EVERY_KIND = [
    NewMessage(role="system", content="You are terse."),
    NewMessage(role="developer", content="Answer in English."),
    NewMessage(role="user", content="Weather in Paris?", name="alice"),
    NewMessage(
        role="assistant",
        content=None,
        tool_calls=[WEATHER_CALL],
        status="partial",
        session_id="conversation:alice:0001",
    ),
    NewMessage(role="tool", content='{"temp": 21}', tool_call_id="call_1", name="weather"),
    NewMessage(role="function", content="sunny", name="legacy_weather"),
    NewMessage(
        role="assistant",
        content="Checking.",
        function_call={"name": "legacy_weather", "arguments": "{}"},
        status="cancelled",
        session_id="conversation:alice:0002",
    ),
    NewMessage(
        role="assistant",
        refusal="I can't help with that.",
        status="error",
        session_id="conversation:alice:0003",
    ),
]


# Explicit for the tests whose point is a difference between the two databases.
ON_BOTH_DATABASES = pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)


def fields(message: Any) -> dict[str, Any]:
    return {f: getattr(message, f) for f in FIELDS}


def user(content: str) -> NewMessage:
    return NewMessage(role="user", content=content)


def assistant(content: str, session_id: str | None = None) -> NewMessage:
    return NewMessage(role="assistant", content=content, session_id=session_id)


async def cached_json(redis: Redis, cid: str) -> dict[str, Any] | None:
    raw = await redis.get(keys.session_cache(cid))
    return None if raw is None else json.loads(raw)


async def run_sql(sessions: async_sessionmaker[AsyncSession], sql: str, **params: Any) -> None:
    """Change the database behind the store's back."""
    async with sessions() as db, db.begin():
        await db.execute(text(sql), params)


async def _add_runs(
    sessions: async_sessionmaker[AsyncSession], cid: str, *run_ids: str, status: str = "running"
) -> None:
    async with sessions() as db, db.begin():
        for run_id in run_ids:
            db.add(
                Run(
                    id=run_id,
                    conversation_id=cid,
                    user_id="alice",
                    message_id=uuid7(),
                    status=status,
                )
            )


async def _run_usage(sessions: async_sessionmaker[AsyncSession]) -> dict[str, tuple[int, int]]:
    """Each run's (prompt, completion) tokens as stored."""
    async with sessions() as db:
        return {r.id: (r.prompt_tokens, r.completion_tokens) for r in await db.scalars(select(Run))}


# -- appending ------------------------------------------------------------------


async def test_append_assigns_sequences_from_zero_and_round_trips_every_field(
    store: ChatStore, cid: str, redis: Redis
) -> None:
    chosen_id = uuid7()
    to_send = [*EVERY_KIND, NewMessage(id=chosen_id, role="user", content="with my own id")]

    returned = [await store.append(cid=cid, message=m) for m in to_send]

    assert [m.sequence for m in returned] == list(range(len(to_send)))
    assert len({m.id for m in returned}) == len(to_send)
    assert returned[-1].id == chosen_id
    expected = [fields(m) for m in to_send]
    assert [fields(m) for m in returned] == expected

    # The database has exactly what was appended, in order.
    from_db = await store.messages(cid=cid, limit=100)
    assert [m.id for m in from_db] == [m.id for m in returned]
    assert [m.sequence for m in from_db] == list(range(len(to_send)))
    assert [fields(m) for m in from_db] == expected

    # So does a load from the database and, after that, the cached JSON copy.
    assert (await cached_json(redis, cid))["stale"] is True  # only a tombstone so far
    first = await store.load(cid=cid)
    assert "stale" not in await cached_json(redis, cid)
    second = await store.load(cid=cid)
    for loaded in (first, second):
        assert loaded is not None
        assert [m.id for m in loaded.messages] == [m.id for m in returned]
        assert [fields(m) for m in loaded.messages] == expected


async def test_messages_pages_backwards_from_the_newest(store: ChatStore, cid: str) -> None:
    for i in range(5):
        await store.append(cid=cid, message=user(f"m{i}"))

    assert [m.content for m in await store.messages(cid=cid, limit=2)] == ["m3", "m4"]
    assert [m.content for m in await store.messages(cid=cid, limit=2, before=3)] == ["m1", "m2"]
    assert [m.content for m in await store.messages(cid=cid, limit=2, before=1)] == ["m0"]
    assert [m.sequence for m in await store.messages(cid=cid, limit=50)] == [0, 1, 2, 3, 4]


async def test_concurrent_appends_in_one_process_get_distinct_sequences_and_a_correct_cache(
    store: ChatStore, cid: str
) -> None:
    await store.load(cid=cid)  # cached, so every append races to patch the cached copy

    returned = await asyncio.gather(
        *(store.append(cid=cid, message=user(f"m{i}")) for i in range(20))
    )

    assert sorted(m.sequence for m in returned) == list(range(20))
    from_db = await store.messages(cid=cid, limit=100)
    assert sorted(m.content for m in from_db) == sorted(f"m{i}" for i in range(20))
    loaded = await store.load(cid=cid)
    assert loaded is not None
    assert [(m.id, m.sequence) for m in loaded.messages] == [(m.id, m.sequence) for m in from_db]


# -- conversations --------------------------------------------------------------


async def test_create_keeps_title_and_metadata_and_defaults_the_title(
    store: ChatStore, user_id: str
) -> None:
    named = await store.create(user_id=user_id, title="Trip", metadata={"tags": ["travel"]})
    unnamed = await store.create(user_id=user_id)

    assert unnamed.title == "New conversation"
    assert unnamed.metadata == {}
    owned = await store.owned(cid=named.id, user_id=user_id)
    assert owned is not None
    assert (owned.title, owned.metadata) == ("Trip", {"tags": ["travel"]})
    listed, _ = await store.list_for_user(user_id=user_id, limit=10, offset=0)
    assert {c.id: c.metadata for c in listed} == {named.id: {"tags": ["travel"]}, unnamed.id: {}}
    for _ in range(2):  # from the database, then from the cache
        loaded = await store.load(cid=named.id)
        assert loaded is not None
        assert (loaded.title, loaded.metadata, loaded.user_id) == (
            "Trip",
            {"tags": ["travel"]},
            user_id,
        )


async def test_owned_only_for_the_owner_and_a_well_formed_id(
    store: ChatStore, conversation: ConversationView, bob: str
) -> None:
    mine = await store.owned(cid=conversation.id, user_id="alice")
    assert mine is not None
    assert mine.id == conversation.id
    assert await store.owned(cid=conversation.id, user_id="bob") is None
    assert await store.owned(cid=uuid7(), user_id="alice") is None
    assert await store.owned(cid="not-a-uuid'; DROP TABLE messages; --", user_id="alice") is None


async def test_list_is_newest_first_counts_all_and_pages(
    store: ChatStore, user_id: str, bob: str
) -> None:
    first = await store.create(user_id=user_id, title="first")
    second = await store.create(user_id=user_id, title="second")
    third = await store.create(user_id=user_id, title="third")
    await store.create(user_id="bob", title="not alice's")
    # Writing to the oldest conversation makes it the most recently updated one.
    await store.append(cid=first.id, message=user("bump"))

    everything, total = await store.list_for_user(user_id=user_id, limit=10, offset=0)
    assert [c.title for c in everything] == ["first", "third", "second"]
    assert total == 3

    page1, total1 = await store.list_for_user(user_id=user_id, limit=2, offset=0)
    page2, total2 = await store.list_for_user(user_id=user_id, limit=2, offset=2)
    assert [c.id for c in page1] == [first.id, third.id]
    assert [c.id for c in page2] == [second.id]
    assert total1 == total2 == 3

    _, bobs = await store.list_for_user(user_id="bob", limit=10, offset=0)
    assert bobs == 1


async def test_rename_changes_the_title_in_the_database(
    store: ChatStore, conversation: ConversationView
) -> None:
    renamed = await store.rename(cid=conversation.id, title="Renamed")

    assert renamed.title == "Renamed"
    owned = await store.owned(cid=conversation.id, user_id="alice")
    assert owned is not None
    assert owned.title == "Renamed"
    assert owned.updated_at >= owned.created_at


async def test_record_usage_adds_to_the_conversation_totals_and_sets_the_run(
    store: ChatStore, sessions: async_sessionmaker[AsyncSession], cid: str
) -> None:
    await _add_runs(sessions, cid, "run-1", "run-2", status="done")
    await store.load(cid=cid)  # cached: the totals must be patched there too

    await store.record_usage(cid=cid, session_id="run-1", prompt_tokens=10, completion_tokens=3)
    await store.record_usage(cid=cid, session_id="run-2", prompt_tokens=5, completion_tokens=4)

    owned = await store.owned(cid=cid, user_id="alice")
    assert owned is not None
    assert (owned.prompt_tokens, owned.completion_tokens) == (15, 7)
    listed, _ = await store.list_for_user(user_id="alice", limit=1, offset=0)
    assert (listed[0].prompt_tokens, listed[0].completion_tokens) == (15, 7)
    loaded = await store.load(cid=cid)
    assert loaded is not None
    assert (loaded.prompt_tokens, loaded.completion_tokens) == (15, 7)
    assert await _run_usage(sessions) == {"run-1": (10, 3), "run-2": (5, 4)}


async def _totals(store: ChatStore, cid: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(prompt, completion) totals in the database and in the (cached) load."""
    owned = await store.owned(cid=cid, user_id="alice")
    loaded = await store.load(cid=cid)
    assert owned is not None
    assert loaded is not None
    return (
        (owned.prompt_tokens, owned.completion_tokens),
        (loaded.prompt_tokens, loaded.completion_tokens),
    )


async def test_record_usage_counts_a_run_once_however_often_it_is_recorded(
    store: ChatStore, sessions: async_sessionmaker[AsyncSession], cid: str
) -> None:
    await _add_runs(sessions, cid, "run-1", "run-2")
    await store.record_usage(cid=cid, session_id="run-1", prompt_tokens=10, completion_tokens=3)
    await store.load(cid=cid)

    # The worker and a reaper both end run-1: it counts once.
    await store.record_usage(cid=cid, session_id="run-1", prompt_tokens=10, completion_tokens=3)
    assert await _totals(store, cid) == ((10, 3), (10, 3))

    # A later, larger figure for the same run moves the totals by the difference.
    await store.record_usage(cid=cid, session_id="run-1", prompt_tokens=12, completion_tokens=5)
    await store.record_usage(cid=cid, session_id="run-2", prompt_tokens=1, completion_tokens=1)
    assert await _totals(store, cid) == ((13, 6), (13, 6))
    assert await _run_usage(sessions) == {"run-1": (12, 5), "run-2": (1, 1)}


class _HookedSessions:
    """A session factory whose sessions run `hook` once, right after a `get` of a Run."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], hook: Callable[[], Awaitable[Any]]
    ) -> None:
        self._sessions, self.hook = sessions, hook

    def __call__(self) -> AsyncSession:
        session = self._sessions()
        original_get = session.get

        async def get(entity: Any, *args: Any, **kwargs: Any) -> Any:
            found = await original_get(entity, *args, **kwargs)
            hook, self.hook = self.hook, None
            if entity is Run and hook is not None:
                await hook()
            elif hook is not None:
                self.hook = hook
            return found

        session.get = get  # type: ignore[method-assign]
        return session


@ON_BOTH_DATABASES
async def test_record_usage_racing_for_one_run_counts_it_once(
    store: ChatStore,
    other_store: ChatStore,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    cid: str,
) -> None:
    """The worker reads the run's usage; the reaper ends the same run before the worker
    writes. (On PostgreSQL the reaper waits for the worker's row lock.)"""
    await _add_runs(sessions, cid, "run-1")
    reaper = other_store
    started: list[asyncio.Task[None]] = []

    async def reaper_ends_the_run() -> None:
        task = asyncio.create_task(
            reaper.record_usage(cid=cid, session_id="run-1", prompt_tokens=10, completion_tokens=3)
        )
        started.append(task)
        await asyncio.wait({task}, timeout=1.0)  # done on SQLite; blocked by the lock on PG

    worker = ChatStore(_HookedSessions(sessions, reaper_ends_the_run), redis, cache_ttl=3600)  # type: ignore[arg-type]
    await worker.record_usage(cid=cid, session_id="run-1", prompt_tokens=10, completion_tokens=3)
    assert len(started) == 1
    await asyncio.wait_for(started[0], 10)

    assert await _totals(store, cid) == ((10, 3), (10, 3))


# -- save, tool calls, regenerate -------------------------------------------------


async def test_save_inserts_with_the_next_sequence_then_replaces_by_id(
    store: ChatStore, cid: str, redis: Redis
) -> None:
    await store.append(cid=cid, message=user("hello"))
    await store.load(cid=cid)  # cached: the replacement must show there too
    reply_id = uuid7()

    first = await store.save(
        cid=cid,
        message=NewMessage(
            id=reply_id, role="assistant", content="Hel", status="partial", session_id="s1"
        ),
    )
    assert (first.id, first.sequence, first.content, first.status) == (
        reply_id,
        1,
        "Hel",
        "partial",
    )

    second = await store.save(
        cid=cid,
        message=NewMessage(
            id=reply_id,
            role="assistant",
            content="Hello there",
            status="complete",
            tool_calls=[WEATHER_CALL],
            session_id="s1",
        ),
    )
    assert (second.id, second.sequence, second.content, second.status) == (
        reply_id,
        1,
        "Hello there",
        "complete",
    )
    assert second.tool_calls == [WEATHER_CALL]

    from_db = await store.messages(cid=cid, limit=10)
    assert [(m.sequence, m.content, m.status) for m in from_db] == [
        (0, "hello", "complete"),
        (1, "Hello there", "complete"),
    ]
    loaded = await store.load(cid=cid)
    assert loaded is not None
    assert [(m.id, m.content, m.status) for m in loaded.messages] == [
        (from_db[0].id, "hello", "complete"),
        (reply_id, "Hello there", "complete"),
    ]
    cached = await cached_json(redis, cid)
    assert cached is not None
    assert [m["content"] for m in cached["messages"]] == ["hello", "Hello there"]

    # The next append continues after the saved message.
    after = await store.append(cid=cid, message=user("next"))
    assert after.sequence == 2


async def test_save_keep_existing_inserts_once_and_never_replaces(
    store: ChatStore, cid: str
) -> None:
    await store.append(cid=cid, message=user("hello"))
    reply_id = uuid7()
    await store.save(
        cid=cid,
        message=NewMessage(id=reply_id, role="assistant", content="final answer", session_id="s1"),
    )
    await store.load(cid=cid)

    kept = await store.save(
        cid=cid,
        message=NewMessage(
            id=reply_id, role="assistant", content="", status="cancelled", session_id="s1"
        ),
        keep_existing=True,
    )
    fresh_id = uuid7()
    inserted = await store.save(
        cid=cid,
        message=NewMessage(id=fresh_id, role="assistant", content="x", status="error"),
        keep_existing=True,
    )

    assert (kept.id, kept.sequence, kept.content, kept.status) == (
        reply_id,
        1,
        "final answer",
        "complete",
    )
    assert (inserted.id, inserted.sequence, inserted.status) == (fresh_id, 2, "error")
    expected = [("hello", "complete"), ("final answer", "complete"), ("x", "error")]
    assert [(m.content, m.status) for m in await store.messages(cid=cid, limit=10)] == expected
    loaded = await store.load(cid=cid)
    assert loaded is not None
    assert [(m.content, m.status) for m in loaded.messages] == expected


async def test_delete_replies_after_last_user_keeps_history_up_to_it(
    store: ChatStore, cid: str, redis: Redis
) -> None:
    for message in [
        user("q1"),
        assistant("a1"),
        user("q2"),
        assistant("a2 part 1", "s2"),
        NewMessage(role="tool", content="42", tool_call_id="call_1"),
        assistant("a2 part 2", "s2"),
    ]:
        await store.append(cid=cid, message=message)
    await store.load(cid=cid)

    last_user = await store.delete_replies_after_last_user(cid=cid)

    assert last_user is not None
    assert (last_user.role, last_user.content, last_user.sequence) == ("user", "q2", 2)
    assert [m.content for m in await store.messages(cid=cid, limit=10)] == ["q1", "a1", "q2"]
    loaded = await store.load(cid=cid)
    assert loaded is not None
    assert [m.content for m in loaded.messages] == ["q1", "a1", "q2"]
    # New replies get sequences after the kept ones, never reusing a live one.
    again = await store.append(cid=cid, message=assistant("a2 again"))
    assert again.sequence > 2
    assert [m.content for m in await store.messages(cid=cid, limit=10)] == [
        "q1",
        "a1",
        "q2",
        "a2 again",
    ]


async def test_delete_replies_without_a_user_message_returns_none_and_keeps_all(
    store: ChatStore, cid: str
) -> None:
    await store.append(cid=cid, message=NewMessage(role="system", content="sys"))
    await store.append(cid=cid, message=assistant("hello"))

    assert await store.delete_replies_after_last_user(cid=cid) is None
    assert [m.content for m in await store.messages(cid=cid, limit=10)] == ["sys", "hello"]


# -- the Redis cache -------------------------------------------------------------


async def test_first_load_misses_and_fills_the_cache_with_messages_and_version(
    store: ChatStore, cid: str, redis: Redis
) -> None:
    await store.append(cid=cid, message=user("hi"))
    await store.append(cid=cid, message=assistant("hello"))
    # Writes to an uncached conversation leave only a tombstone, no live copy.
    assert (await cached_json(redis, cid)) == {"version": 2, "stale": True}

    loaded = await store.load(cid=cid)

    assert loaded is not None
    assert [m.content for m in loaded.messages] == ["hi", "hello"]
    cached = await cached_json(redis, cid)
    assert cached is not None
    assert cached["version"] == loaded.version == 2
    assert cached["id"] == cid
    assert cached["title"] == "First chat"
    assert [(m["sequence"], m["content"]) for m in cached["messages"]] == [
        (0, "hi"),
        (1, "hello"),
    ]
    assert "stale" not in cached
    assert 0 < await redis.ttl(keys.session_cache(cid)) <= 3600


async def test_load_of_an_unknown_conversation_is_none_and_caches_nothing(
    store: ChatStore, redis: Redis, user_id: str
) -> None:
    cid = uuid7()
    assert await store.load(cid=cid) is None
    assert await store.history(cid=cid) == []
    assert await redis.exists(keys.session_cache(cid)) == 0


async def test_second_load_is_served_from_the_cache(
    store: ChatStore,
    cid: str,
    redis: Redis,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    message = await store.append(cid=cid, message=user("original"))
    await store.load(cid=cid)

    await run_sql(
        sessions, "UPDATE messages SET content = :c WHERE id = :id", c="changed", id=message.id
    )

    cached = await store.load(cid=cid)
    assert cached is not None
    assert [m.content for m in cached.messages] == ["original"]
    # The database really did change: without the key, load reads the new row.
    assert [m.content for m in await store.messages(cid=cid, limit=10)] == ["changed"]
    await redis.delete(keys.session_cache(cid))
    refilled = await store.load(cid=cid)
    assert refilled is not None
    assert [m.content for m in refilled.messages] == ["changed"]


async def test_append_patches_the_cached_copy_in_place(
    store: ChatStore,
    conversation: ConversationView,
    redis: Redis,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    cid = conversation.id
    first = await store.append(cid=cid, message=user("first"))
    await store.load(cid=cid)
    await redis.expire(keys.session_cache(cid), 1234)
    # Changed behind the store's back: a patch keeps the cached text, a refill would not.
    await run_sql(
        sessions, "UPDATE messages SET content = :c WHERE id = :id", c="changed", id=first.id
    )

    second = await store.append(cid=cid, message=assistant("second"))

    cached = await cached_json(redis, cid)
    assert cached is not None
    assert cached["version"] == 2
    assert [(m["id"], m["content"]) for m in cached["messages"]] == [
        (first.id, "first"),
        (second.id, "second"),
    ]
    assert 1200 < await redis.ttl(keys.session_cache(cid)) <= 1234  # the TTL was kept, not reset
    loaded = await store.load(cid=cid)
    assert loaded is not None
    assert [m.content for m in loaded.messages] == ["first", "second"]
    assert loaded.updated_at > conversation.updated_at


async def test_rename_updates_the_cached_title_instead_of_evicting(
    store: ChatStore, cid: str, redis: Redis
) -> None:
    await store.append(cid=cid, message=user("hi"))
    await store.load(cid=cid)

    await store.rename(cid=cid, title="Renamed")

    cached = await cached_json(redis, cid)
    assert cached is not None
    assert (cached["title"], cached["version"]) == ("Renamed", 2)
    assert [m["content"] for m in cached["messages"]] == ["hi"]
    loaded = await store.load(cid=cid)
    assert loaded is not None
    assert loaded.title == "Renamed"


async def test_delete_evicts_the_cache_and_removes_the_messages(
    store: ChatStore,
    cid: str,
    redis: Redis,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    other = await store.create(user_id="alice", title="kept")
    await store.append(cid=cid, message=user("bye"))
    await store.append(cid=other.id, message=user("stay"))
    await store.load(cid=cid)
    await store.load(cid=other.id)
    assert await redis.exists(keys.session_cache(cid)) == 1

    await store.delete(cid=cid)

    # What stays is a tombstone that outranks every version: nothing can cache it again.
    assert (await cached_json(redis, cid))["stale"] is True
    assert await store.load(cid=cid) is None
    assert await store.owned(cid=cid, user_id="alice") is None
    async with sessions() as db:
        left = await db.scalar(
            select(func.count()).select_from(Message).where(Message.conversation_id == cid)
        )
    assert left == 0
    # Only that conversation went.
    assert await redis.exists(keys.session_cache(other.id)) == 1
    kept = await store.load(cid=other.id)
    assert kept is not None
    assert [m.content for m in kept.messages] == ["stay"]
    _, total = await store.list_for_user(user_id="alice", limit=10, offset=0)
    assert total == 1


Write = Callable[[ChatStore, str], Awaitable[Any]]


async def _append(store: ChatStore, cid: str) -> Any:
    return await store.append(cid=cid, message=assistant("new"))


async def _rename(store: ChatStore, cid: str) -> Any:
    return await store.rename(cid=cid, title="new title")


async def _record_usage(store: ChatStore, cid: str) -> Any:
    return await store.record_usage(cid=cid, session_id="s", prompt_tokens=1, completion_tokens=1)


async def _save(store: ChatStore, cid: str) -> Any:
    return await store.save(cid=cid, message=NewMessage(id=uuid7(), role="assistant", content="x"))


async def _save_run(store: ChatStore, cid: str) -> Any:
    return await store.save_run(cid=cid, session_id="s", messages=TOOL_TURN)


@pytest.mark.parametrize("write", [_append, _rename, _record_usage, _save, _save_run])
async def test_write_leaves_a_tombstone_when_the_cache_is_not_one_version_behind(
    store: ChatStore, cid: str, redis: Redis, write: Write
) -> None:
    await store.append(cid=cid, message=user("one"))
    await store.append(cid=cid, message=user("two"))
    await store.load(cid=cid)
    # Pretend the cache missed a write: an older version, with visibly stale data.
    cached = await cached_json(redis, cid)
    assert cached is not None
    assert cached["version"] == 2
    cached["version"] = 1
    cached["title"] = "stale title"
    cached["messages"] = cached["messages"][:1]
    await redis.set(keys.session_cache(cid), json.dumps(cached), ex=3600)

    await write(store, cid)

    assert await cached_json(redis, cid) == {"version": 3, "stale": True}
    assert await redis.ttl(keys.session_cache(cid)) > 0
    loaded = await store.load(cid=cid)
    from_db = await store.messages(cid=cid, limit=10)
    owned = await store.owned(cid=cid, user_id="alice")
    assert loaded is not None
    assert owned is not None
    assert loaded.version == 3
    assert loaded.title == owned.title != "stale title"
    assert [m.model_dump() for m in loaded.messages] == [m.model_dump() for m in from_db]
    assert len(from_db) >= 2
    refilled = await cached_json(redis, cid)
    assert refilled is not None
    assert refilled["version"] == 3
    assert "stale" not in refilled


async def test_an_older_snapshot_never_overwrites_a_newer_cached_version(
    store: ChatStore, cid: str, redis: Redis
) -> None:
    await store.append(cid=cid, message=user("one"))
    old = await store._load_from_db(cid)  # what a slow reader saw at version 1
    await store.append(cid=cid, message=user("two"))
    current = await store.load(cid=cid)
    assert old is not None
    assert current is not None
    assert (old.version, current.version) == (1, 2)

    await store.cache.fill(conversation=old)

    cached = await cached_json(redis, cid)
    assert cached is not None
    assert cached["version"] == 2
    assert [m["content"] for m in cached["messages"]] == ["one", "two"]
    reloaded = await store.load(cid=cid)
    assert reloaded is not None
    assert [m.content for m in reloaded.messages] == ["one", "two"]


async def test_a_tombstone_refuses_older_snapshots_and_yields_to_its_own_version(
    store: ChatStore, cid: str, redis: Redis
) -> None:
    await store.append(cid=cid, message=user("one"))
    v1 = await store._load_from_db(cid)
    await store.append(cid=cid, message=user("two"))
    v2 = await store._load_from_db(cid)
    assert v1 is not None
    assert v2 is not None
    await store.cache.tombstone(cid=cid, version=3)

    for older in (v1, v2):
        await store.cache.fill(conversation=older)
        assert await cached_json(redis, cid) == {"version": 3, "stale": True}
    assert await store.load(cid=cid) is not None  # the database is at 2: no newer snapshot
    assert await cached_json(redis, cid) == {"version": 3, "stale": True}

    await store.append(cid=cid, message=user("three"))  # version 3 in the database
    loaded = await store.load(cid=cid)
    assert loaded is not None
    assert [m.content for m in loaded.messages] == ["one", "two", "three"]
    cached = await cached_json(redis, cid)
    assert cached is not None
    assert (cached["version"], len(cached["messages"])) == (3, 3)

    # A late tombstone for a version the cache already holds live does not evict it.
    await store.cache.tombstone(cid=cid, version=3)
    assert (await cached_json(redis, cid) or {}).get("version") == 3
    assert "stale" not in (await cached_json(redis, cid) or {"stale": True})


class _HookedPipeline:
    """A pipeline of a _HookedRedis: its GET runs the client's hook too."""

    def __init__(self, pipe: Any, hooked: _HookedRedis) -> None:
        self._pipe, self._hooked = pipe, hooked

    async def __aenter__(self) -> _HookedPipeline:
        await self._pipe.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._pipe.__aexit__(*exc)

    async def get(self, key: str) -> Any:
        raw = await self._pipe.get(key)
        await self._hooked.run_hook()
        return raw

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)


class _HookedRedis:
    """A Redis client that runs `hook` once, right after its first GET (piped or not)."""

    def __init__(self, real: Redis, hook: Callable[[], Awaitable[Any]]) -> None:
        self._real, self.hook = real, hook

    async def run_hook(self) -> None:
        hook, self.hook = self.hook, None
        if hook is not None:
            await hook()

    async def get(self, key: str) -> Any:
        raw = await self._real.get(key)
        await self.run_hook()
        return raw

    def pipeline(self, *args: Any, **kwargs: Any) -> _HookedPipeline:
        return _HookedPipeline(self._real.pipeline(*args, **kwargs), self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


async def test_a_cache_patch_racing_another_writer_never_leaves_a_stale_copy(
    store: ChatStore, other_store: ChatStore, redis: Redis, cid: str, monkeypatch
) -> None:
    """Writer A reads the cached copy to patch it; writer B commits and updates the cache
    before A writes its patch back. A's patch (one version short of B's) must not win."""
    await store.append(cid=cid, message=user("one"))
    await store.load(cid=cid)  # cached at version 1

    async def other_writer() -> None:
        await other_store.append(cid=cid, message=assistant("from B"))

    hooked = _HookedRedis(redis, other_writer)
    monkeypatch.setattr(store.cache, "redis", hooked)
    await store.append(cid=cid, message=assistant("from A"))
    monkeypatch.setattr(store.cache, "redis", redis)

    assert hooked.hook is None  # B really wrote in the middle of A's patch
    cached = await cached_json(redis, cid)
    assert cached is not None
    assert cached["version"] == 3
    loaded = await store.load(cid=cid)
    assert loaded is not None
    assert loaded.version == 3
    assert [m.content for m in loaded.messages] == ["one", "from A", "from B"]


async def _read_during(
    store: ChatStore, cid: str, write: Callable[[], Awaitable[Any]], monkeypatch
) -> CachedConversation | None:
    """Run `write` after a load has read the database but before it fills the cache."""
    read_done, release = asyncio.Event(), asyncio.Event()
    original = store._load_from_db

    async def slow_load(cid: str) -> CachedConversation | None:
        snapshot = await original(cid)
        read_done.set()
        await release.wait()
        return snapshot

    monkeypatch.setattr(store, "_load_from_db", slow_load)
    reader = asyncio.create_task(store.load(cid=cid))
    await asyncio.wait_for(read_done.wait(), 10)
    await write()
    release.set()
    result = await asyncio.wait_for(reader, 10)
    monkeypatch.setattr(store, "_load_from_db", original)
    return result


async def test_a_load_racing_an_append_does_not_cache_a_stale_snapshot(
    store: ChatStore, other_store: ChatStore, cid: str, monkeypatch
) -> None:
    await store.append(cid=cid, message=user("before"))

    async def write() -> None:  # e.g. a worker in another process
        await other_store.append(cid=cid, message=assistant("written during the read"))

    await _read_during(store, cid, write, monkeypatch)

    loaded = await store.load(cid=cid)
    assert loaded is not None
    assert [m.content for m in loaded.messages] == ["before", "written during the read"]


async def test_a_load_racing_delete_replies_does_not_cache_deleted_replies(
    store: ChatStore, other_store: ChatStore, cid: str, monkeypatch
) -> None:
    await store.append(cid=cid, message=user("question"))
    await store.append(cid=cid, message=assistant("old answer"))

    async def write() -> None:
        await other_store.delete_replies_after_last_user(cid=cid)

    await _read_during(store, cid, write, monkeypatch)

    assert [m["content"] for m in await store.history(cid=cid)] == ["question"]


async def test_a_load_racing_delete_does_not_bring_the_conversation_back(
    store: ChatStore, other_store: ChatStore, cid: str, monkeypatch
) -> None:
    await store.append(cid=cid, message=user("secret"))

    async def write() -> None:
        await other_store.delete(cid=cid)

    await _read_during(store, cid, write, monkeypatch)

    assert await store.owned(cid=cid, user_id="alice") is None  # gone from the database
    assert await store.load(cid=cid) is None
    assert await store.history(cid=cid) == []


# -- Redis unavailable ------------------------------------------------------------


async def test_store_reads_and_writes_through_the_database_when_redis_is_down(
    sessions: async_sessionmaker[AsyncSession], user_id: str, caplog
) -> None:
    dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", decode_responses=True)
    store = ChatStore(sessions, dead, cache_ttl=3600)
    try:
        with caplog.at_level(logging.WARNING, logger="turnstream.store"):
            conversation = await store.create(user_id=user_id, title="offline")
            cid = conversation.id
            await store.append(cid=cid, message=user("q1"))
            reply_id = uuid7()
            await store.save(
                cid=cid,
                message=NewMessage(id=reply_id, role="assistant", content="a", status="partial"),
            )
            await store.save(
                cid=cid, message=NewMessage(id=reply_id, role="assistant", content="a1")
            )
            await store.save_run(cid=cid, session_id="s", messages=TOOL_TURN)
            await store.record_usage(cid=cid, session_id="s1", prompt_tokens=3, completion_tokens=2)
            await store.rename(cid=cid, title="still offline")

            loaded = await store.load(cid=cid)
            again = await store.load(cid=cid)
            history = await store.history(cid=cid)
            listed, total = await store.list_for_user(user_id=user_id, limit=10, offset=0)
            last_user = await store.delete_replies_after_last_user(cid=cid)
            trimmed = await store.load(cid=cid)
            await store.delete(cid=cid)
            gone = await store.load(cid=cid)
    finally:
        await dead.aclose()

    assert any("127.0.0.1" in r.getMessage() for r in caplog.records)  # Redis really was down
    for snapshot in (loaded, again):
        assert snapshot is not None
        assert snapshot.title == "still offline"
        assert (snapshot.prompt_tokens, snapshot.completion_tokens) == (3, 2)
        assert [(m.sequence, m.role, m.content) for m in snapshot.messages] == [
            (0, "user", "q1"),
            (1, "assistant", "a1"),
            (2, "assistant", None),
            (3, "tool", "sunny"),
        ]
        assert snapshot.messages[2].tool_calls == [WEATHER_CALL]
    assert [m["role"] for m in history] == ["user", "assistant", "tool"]
    assert history[1]["content"] == "a1"
    assert [c.id for c in listed] == [cid]
    assert total == 1
    assert last_user is not None
    assert last_user.content == "q1"
    assert trimmed is not None
    assert [m.content for m in trimmed.messages] == ["q1"]
    assert gone is None


# -- times ------------------------------------------------------------------------


@ON_BOTH_DATABASES
async def test_times_read_back_from_the_database_are_timezone_aware(
    store: ChatStore, conversation: ConversationView
) -> None:
    cid = conversation.id
    await store.append(cid=cid, message=user("hi"))

    listed, _ = await store.list_for_user(user_id="alice", limit=1, offset=0)
    owned = await store.owned(cid=cid, user_id="alice")
    loaded = await store.load(cid=cid)
    messages = await store.messages(cid=cid, limit=1)
    assert owned is not None
    assert loaded is not None
    times = {
        "list created_at": listed[0].created_at,
        "list updated_at": listed[0].updated_at,
        "owned created_at": owned.created_at,
        "load updated_at": loaded.updated_at,
        "load message created_at": loaded.messages[0].created_at,
        "messages created_at": messages[0].created_at,
    }
    offsets = {name: t.utcoffset() for name, t in times.items()}
    assert offsets == dict.fromkeys(times, timedelta(0))
    assert owned.created_at == conversation.created_at
