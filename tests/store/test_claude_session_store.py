"""A conversation's Claude Code session in SQL, on SQLite and PostgreSQL: the SDK's own
conformance contracts for a session store, entries stored once by uuid, the size limit,
and the transcript deleted with its conversation."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from turnstream.ids import uuid7
from turnstream.store.chats import ChatStore
from turnstream.store.claude_sessions import ClaudeSessions, Key
from turnstream.store.models import ClaudeSession, ClaudeSessionEntry
from turnstream.store.views import NewMessage

KEY = Key("-srv-chats", "3f2a7c1e-0000-4000-8000-000000000001")
ROOMY = 1 << 20


def line(uuid: str | None, text: str = "x") -> dict[str, object]:
    entry: dict[str, object] = {"type": "user", "message": {"role": "user", "content": text}}
    return entry if uuid is None else {**entry, "uuid": uuid}


async def _count(sessions: async_sessionmaker[AsyncSession], table: type) -> int:
    async with sessions() as db:
        return int(await db.scalar(select(func.count()).select_from(table)) or 0)


async def test_the_sdks_conformance_contracts_hold(store: ChatStore, user_id: str) -> None:
    pytest.importorskip("claude_agent_sdk", reason="needs the extra: pip install -e '.[claude]'")
    from claude_agent_sdk.testing import run_session_store_conformance

    from turnstream.agents.claude_sessions import SqlSessionStore

    async def fresh() -> SqlSessionStore:  # each contract on a conversation of its own
        conversation = await store.create(user_id=user_id)
        return SqlSessionStore(ClaudeSessions(store.sessions, conversation.id, limit=ROOMY))

    await run_session_store_conformance(fresh)


async def test_an_entry_is_stored_once_by_uuid_and_one_without_every_time(sessions, cid) -> None:
    kept = ClaudeSessions(sessions, cid, limit=ROOMY)
    assert await kept.append(KEY, [line("a"), line("b"), line("a"), line(None, "title")])
    # The SDK retries a batch that may have been stored in part.
    assert await kept.append(KEY, [line("b"), line("c"), line(None, "title")])

    loaded = await kept.load(KEY)
    assert loaded == [line("a"), line("b"), line(None, "title"), line("c"), line(None, "title")]
    assert await kept.load(Key(KEY.project_key, "other")) is None


async def test_past_the_limit_nothing_more_is_stored_and_the_session_is_not_remembered(
    sessions, cid
) -> None:
    kept = ClaudeSessions(sessions, cid, limit=400)
    assert await kept.append(KEY, [line("a", "x" * 100)])
    assert not await kept.append(KEY, [line("b", "y" * 100), line("c", "z" * 200)])
    assert not await kept.append(KEY, [line("d")])  # full: not even a small one

    assert [e["uuid"] for e in await kept.load(KEY) or []] == ["a"]
    assert not await kept.remember(session_id=KEY.session_id, through_run="run_1")
    state = await kept.kept()
    assert state.full and state.session_id is None

    await kept.start()  # the next turn's new session
    assert await kept.load(KEY) is None
    assert not (await kept.kept()).full
    assert await kept.append(KEY, [line("e", "x" * 100)])
    assert await kept.remember(session_id=KEY.session_id, through_run="run_2")
    assert (await kept.kept()).session_id == KEY.session_id


async def test_the_session_must_end_with_the_run_before_the_new_user_message(
    store: ChatStore, sessions, cid
) -> None:
    kept = ClaudeSessions(sessions, cid, limit=ROOMY)
    await store.save(
        cid=cid, message=NewMessage(id=uuid7(), role="user", content="Weather in Paris?")
    )
    assert (await kept.kept()).answered_last is None  # a first turn
    await store.save_run(
        cid=cid,
        session_id="run_1",
        messages=[NewMessage(role="assistant", content="Sunny.", session_id="run_1")],
    )
    assert (await kept.kept()).answered_last is None  # the newest is no user message
    await store.save(cid=cid, message=NewMessage(id=uuid7(), role="user", content="And Lyon?"))
    assert (await kept.kept()).answered_last == "run_1"


async def test_the_transcript_is_deleted_with_its_conversation(store: ChatStore, sessions, cid):
    kept = ClaudeSessions(sessions, cid, limit=ROOMY)
    await kept.append(KEY, [line("a"), line("b")])
    await kept.append(Key(KEY.project_key, KEY.session_id, "subagents/agent-1"), [line("s")])
    await kept.remember(session_id=KEY.session_id, through_run="run_1")
    assert await _count(sessions, ClaudeSessionEntry) == 3

    await store.delete(cid=cid)

    assert await _count(sessions, ClaudeSessionEntry) == 0
    assert await _count(sessions, ClaudeSession) == 0
