"""The history an agent gets, fitted (context/compaction.py), on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from openai_rules import assert_valid
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from turnstream.config import Settings
from turnstream.context.budget import budget
from turnstream.context.compaction import prepare
from turnstream.context.summary import SUMMARY_HEADING
from turnstream.store.chats import ChatStore
from turnstream.store.context import Summary, window
from turnstream.store.views import NewMessage

SETTINGS = Settings(context_tokens=3_000, reserve_tokens=500, summary_tokens=200)


async def latest_summary(sessions: async_sessionmaker[AsyncSession], cid: str) -> Summary | None:
    return (await window(sessions, cid=cid, enough=lambda _read: True)).summary


class Summariser:
    """Writes numbered summaries and keeps every request; fails when told to."""

    def __init__(self, *, fail: bool = False) -> None:
        self.requests: list[list[dict[str, Any]]] = []
        self.fail = fail

    async def __call__(self, messages: list[dict[str, Any]]) -> str:
        self.requests.append(messages)
        if self.fail:
            raise RuntimeError("the model is down")
        return f"summary number {len(self.requests)}"


async def add_turn(store: ChatStore, cid: str, n: int, *, tool: bool = False) -> None:
    await store.append(cid=cid, message=NewMessage(role="user", content=f"question {n} " * 40))
    if tool:
        call = {"id": f"c{n}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        await store.append(cid=cid, message=NewMessage(role="assistant", tool_calls=[call]))
        tool_result = NewMessage(role="tool", tool_call_id=f"c{n}", content="r" * 3_000)
        await store.append(cid=cid, message=tool_result)
    await store.append(cid=cid, message=NewMessage(role="assistant", content=f"answer {n} " * 40))


async def ask(store: ChatStore, cid: str, text: str = "the newest question") -> None:
    await store.append(cid=cid, message=NewMessage(role="user", content=text))


async def test_a_short_conversation_is_given_whole(
    store: ChatStore, sessions: async_sessionmaker[AsyncSession], cid: str
) -> None:
    for n in range(3):
        await add_turn(store, cid, n, tool=n == 1)
    await ask(store, cid)
    summarise = Summariser()

    prepared = await prepare(sessions, cid=cid, settings=SETTINGS, summarise=summarise)

    assert prepared.history == await store.history(cid=cid)
    assert prepared.event is None and summarise.requests == []


async def test_a_compaction_is_stored_once_and_reused_by_later_turns(
    store: ChatStore, sessions: async_sessionmaker[AsyncSession], cid: str
) -> None:
    for n in range(12):
        await add_turn(store, cid, n, tool=n % 4 == 0)
    await ask(store, cid)
    summarise = Summariser()

    first = await prepare(sessions, cid=cid, settings=SETTINGS, summarise=summarise)

    assert first.event is not None and len(summarise.requests) == 1
    data = first.event.data
    assert data["tokensBefore"] > budget(SETTINGS) >= data["tokensAfter"]
    stored = await latest_summary(sessions, cid)
    assert stored is not None and stored.content == "summary number 1"
    assert (data["summarizedThrough"], data["model"]) == (stored.through_message_id, "gpt-4o-mini")
    assert first.history[0] == {"role": "system", "content": f"{SUMMARY_HEADING}\nsummary number 1"}
    assert first.history[1]["role"] == "user"
    assert first.history[-1] == {"role": "user", "content": "the newest question"}
    assert_valid(first.history)
    asked = summarise.requests[0][1]["content"]
    assert "question 0" in asked and "The summary so far" not in asked

    await add_turn(store, cid, 100)
    await ask(store, cid)
    again = await prepare(sessions, cid=cid, settings=SETTINGS, summarise=summarise)
    assert again.event is None and len(summarise.requests) == 1  # the stored one, reused
    assert again.history[0] == first.history[0]
    assert again.history[1:-3] == first.history[1:]  # the next turn added, nothing re-read

    for n in range(200, 212):
        await add_turn(store, cid, n)
    await ask(store, cid)
    third = await prepare(sessions, cid=cid, settings=SETTINGS, summarise=summarise)
    assert third.event is not None and len(summarise.requests) == 2
    asked = summarise.requests[1][1]["content"]
    assert asked.startswith("The summary so far:\nsummary number 1")
    assert "question 0 " not in asked  # what the first summary covers is not sent again
    assert third.history[0]["content"].endswith("summary number 2")
    assert_valid(third.history)


async def test_a_failed_summary_leaves_the_oldest_turns_out_and_stores_nothing(
    store: ChatStore, sessions: async_sessionmaker[AsyncSession], cid: str
) -> None:
    for n in range(12):
        await add_turn(store, cid, n, tool=n % 3 == 0)
    await ask(store, cid)

    prepared = await prepare(sessions, cid=cid, settings=SETTINGS, summarise=Summariser(fail=True))

    assert prepared.event is not None
    data = prepared.event.data
    assert data["summarizedThrough"] is None and "the model is down" in data["error"]
    assert data["droppedThrough"] and data["tokensAfter"] <= budget(SETTINGS)
    assert await latest_summary(sessions, cid) is None
    assert prepared.history[0]["role"] == "user"
    assert prepared.history[-1] == {"role": "user", "content": "the newest question"}
    assert_valid(prepared.history)


async def test_without_a_model_the_summary_is_a_stored_note(
    store: ChatStore, sessions: async_sessionmaker[AsyncSession], cid: str
) -> None:
    for n in range(12):
        await add_turn(store, cid, n)
    await ask(store, cid)

    prepared = await prepare(sessions, cid=cid, settings=SETTINGS, summarise=None)

    assert prepared.event is not None and prepared.event.data["model"] is None
    stored = await latest_summary(sessions, cid)
    assert stored is not None and stored.model is None
    assert "earlier messages are not shown here" in prepared.history[0]["content"]
    assert prepared.event.data["tokensAfter"] <= budget(SETTINGS)
