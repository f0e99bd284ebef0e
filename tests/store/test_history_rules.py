"""Property tests: whatever runs do, the history an agent gets is a transcript OpenAI accepts.

The rules are tests/openai_rules.py; turnstream/store/history.py promises them.
Two properties:

- any list of stored messages, however malformed, converts to a valid
  transcript (and converting again changes nothing);
- random conversations of runs (steps of text, reasoning, tool calls and
  results in any order, with noise; runs that complete, are stopped, fail, or
  lose their worker and are reaped from a prefix of their events; regenerates)
  built with the one builder (runs/reply.py) and stored through ChatStore on
  SQLite read back the same from the cache and the database, store each run
  as a valid transcript of its own, and convert to a valid history.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai_rules import assert_valid, check_transcript
from redis.asyncio import Redis

from turnstream import events, keys
from turnstream.events import Event
from turnstream.ids import session_id, uuid7
from turnstream.live.status import RunStatus
from turnstream.runs.reply import Reply
from turnstream.store.chats import ChatStore
from turnstream.store.db import create_engine, session_factory
from turnstream.store.history import to_openai
from turnstream.store.migrate import upgrade
from turnstream.store.users import ensure_user
from turnstream.store.views import MessageView, NewMessage

# -- the checker itself -----------------------------------------------------------

_C1 = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
_ASK = {"role": "assistant", "content": None, "tool_calls": [_C1]}
_ANSWER = {"role": "tool", "content": "ok", "tool_call_id": "c1"}


@pytest.mark.parametrize(
    ("messages", "rule"),
    [
        ([{"role": "robot", "content": "x"}], "role"),
        (["hello"], "role"),
        ([{"role": "tool", "content": "ok", "tool_call_id": "c1", "name": "f"}], "fields"),
        ([{"role": "user", "content": "x", "name": None}], "fields"),
        ([{"role": "user", "content": None}], "content"),
        ([{"role": "user", "content": "x", "name": "a b"}], "name"),
        ([{"role": "function", "content": "x"}], "name"),
        ([{"role": "assistant", "content": ""}], "empty-assistant"),
        ([{"role": "assistant", "content": "x", "tool_calls": []}], "tool-call"),
        ([{**_ASK, "tool_calls": [{"id": "c1", "type": "function"}]}], "tool-call"),
        ([{**_ASK, "tool_calls": [_C1, _C1]}, _ANSWER], "tool-call"),
        (
            [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}],
            "consecutive",
        ),
        ([{"role": "user", "content": "x"}, _ANSWER], "orphan-tool"),
        ([_ASK, _ANSWER, {"role": "tool", "content": "x", "tool_call_id": "c9"}], "orphan-tool"),
        ([_ASK, _ANSWER, _ANSWER], "duplicate-answer"),
        ([_ASK, {"role": "user", "content": "x"}], "unanswered"),
        ([{"role": "user", "content": "x"}, _ASK], "unanswered"),
    ],
)
def test_the_checker_names_each_broken_rule(messages: list[Any], rule: str) -> None:
    assert any(f": {rule}" in v for v in check_transcript(messages)), check_transcript(messages)


def test_the_checker_accepts_a_tool_turn() -> None:
    assert check_transcript([{"role": "user", "content": "x"}, _ASK, _ANSWER, _ASK, _ANSWER]) == []


# -- any stored messages --------------------------------------------------------

_IDS = st.sampled_from(["c1", "c2", "c3", ""])
_TEXT = st.one_of(st.none(), st.text(max_size=4))
_FUNCTION = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["f", "g", "", None, 7]),
        "arguments": st.one_of(_TEXT, st.dictionaries(st.text(max_size=2), st.integers())),
    },
)
_GOOD_CALL = st.builds(
    lambda call_id, name: {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": "{}"},
    },
    st.sampled_from(["c1", "c2", "c3"]),
    st.sampled_from(["f", "g"]),
)
_CALL = st.one_of(
    _GOOD_CALL,
    _GOOD_CALL,
    _GOOD_CALL,
    st.fixed_dictionaries(
        {},
        optional={
            "id": st.one_of(_IDS, st.none(), st.integers()),
            "type": st.just("function"),
            "function": st.one_of(st.none(), _FUNCTION),
            "index": st.integers(0, 2),
        },
    ),
    st.text(max_size=2),
    st.none(),
)
_STORED = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", *["assistant"] * 3, *["tool"] * 4])},
    optional={
        "content": _TEXT,
        "tool_calls": st.one_of(st.none(), st.lists(_CALL, max_size=3)),
        "tool_call_id": st.one_of(_IDS, _IDS, st.none()),
        "name": st.sampled_from([None, "alice", "bad name", ""]),
        "refusal": _TEXT,
        "function_call": st.one_of(st.none(), st.just({"name": "f", "arguments": "{}"})),
        "status": st.sampled_from(["complete", "cancelled", "error"]),
        "session_id": st.sampled_from([None, "s1"]),
    },
)
_ANY_ROLE = _STORED | st.fixed_dictionaries(
    {"role": st.sampled_from(["developer", "function", "bogus"])}, optional={"content": _TEXT}
)


@st.composite
def _tool_turn(draw: st.DrawFn) -> list[dict[str, Any]]:
    """An assistant message with calls, then answers to some of them (some twice)."""
    calls = draw(st.lists(_GOOD_CALL, min_size=1, max_size=3))
    answered = draw(st.lists(st.sampled_from([c["id"] for c in calls]), max_size=4))
    return [
        {"role": "assistant", "content": draw(_TEXT), "tool_calls": calls},
        *({"role": "tool", "content": draw(_TEXT), "tool_call_id": i} for i in answered),
    ]


_MESSAGES = st.lists(st.one_of(_tool_turn(), _ANY_ROLE.map(lambda m: [m])), max_size=8).map(
    lambda blocks: [m for block in blocks for m in block]
)


@settings(max_examples=200, deadline=None)
@given(_MESSAGES)
def test_any_stored_messages_convert_to_a_valid_transcript(stored: list[dict[str, Any]]) -> None:
    before = copy.deepcopy(stored)

    converted = to_openai(stored)

    assert_valid(converted)
    assert to_openai(converted) == converted  # a valid transcript passes through unchanged
    assert stored == before


# -- random runs, stored and read back ---------------------------------------------


@dataclass(frozen=True)
class Run:
    events: list[Event]
    status: RunStatus
    regenerate: bool  # the run replaces the replies to the last user message
    reaped_late: bool  # a reaper stores its (shorter) rebuild after the worker stored


@st.composite
def _step(draw: st.DrawFn, first_call: int) -> list[Event]:
    out: list[Event] = []
    if draw(st.booleans()):
        out.append(events.reasoning("hm"))
    out += [events.delta(t) for t in draw(st.lists(st.text(max_size=3), max_size=2))]
    calls = [f"call_{first_call + i}" for i in range(draw(st.integers(0, 3)))]
    for call_id in calls:
        name = draw(st.sampled_from(["weather", "clock", ""]))  # "" : a call without a name
        out.append(events.tool_call(call_id, name, "{}"))
        if draw(st.integers(0, 4)) == 0:
            out.append(events.delta("meanwhile"))
    answered = draw(st.lists(st.sampled_from(calls), unique=True)) if calls else []
    for call_id in answered:
        out.append(
            events.tool_result(call_id, draw(st.text(max_size=3)), is_error=draw(st.booleans()))
        )
    return out


_NOISE = st.sampled_from(
    [
        events.tool_result("call_404", "an answer to no call"),
        events.tool_result("call_0", "a second answer, or a first one late"),
        events.tool_call("call_0", "weather", "{}"),  # an id used again
        events.tool_call("", "no_id", "{}"),
        events.usage(1, 2),
    ]
)


@st.composite
def _run(draw: st.DrawFn, regenerate: bool) -> Run:
    evs: list[Event] = []
    for n in range(draw(st.integers(1, 4))):
        evs += draw(_step(first_call=10 * n))
    for _ in range(draw(st.integers(0, 2))):
        evs.insert(draw(st.integers(0, len(evs))), draw(_NOISE))
    outcome = draw(st.sampled_from(["completed", "stopped", "failed", "reaped"]))
    if outcome != "completed":
        evs = evs[: draw(st.integers(0, len(evs)))]  # it ended mid-way
    if outcome == "failed":
        evs.append(events.error("the model fell over", "agent_error"))
    status = {
        "completed": RunStatus.COMPLETED,
        "stopped": RunStatus.CANCELLED,
        "failed": RunStatus.ERROR,
        "reaped": RunStatus.ERROR,
    }[outcome]
    return Run(evs, status, regenerate, reaped_late=draw(st.integers(0, 5)) == 0)


@st.composite
def _conversation(draw: st.DrawFn) -> list[Run]:
    runs = [draw(_run(regenerate=False))]
    for _ in range(draw(st.integers(0, 3))):
        runs.append(draw(_run(regenerate=draw(st.booleans()))))
    return runs


@pytest.fixture
def migrated_sqlite(sqlite_url: str) -> str:
    upgrade(sqlite_url)  # Alembic runs its own event loop: not from inside the test's
    return sqlite_url


@pytest.fixture
async def sqlite_store(migrated_sqlite: str, redis_url: str) -> AsyncIterator[ChatStore]:
    engine = create_engine(migrated_sqlite)
    redis = Redis.from_url(redis_url, decode_responses=True)
    sessions = session_factory(engine)
    async with sessions() as db, db.begin():
        await ensure_user(db, user_id="alice")
    yield ChatStore(sessions, redis, cache_ttl=3600)
    await redis.aclose()
    await engine.dispose()


def _built(run: Run, events_: list[Event], message_id: str, sid: str) -> list[NewMessage]:
    reply = Reply()
    for event in events_:
        reply.add(event.type, event.data)
    return reply.messages(run.status, message_id=message_id, session_id=sid)


async def _store_run(store: ChatStore, cid: str, n: int, run: Run) -> tuple[str, str]:
    if run.regenerate:
        await store.delete_replies_after_last_user(cid=cid)
    else:
        await store.append(cid=cid, message=NewMessage(role="user", content=f"question {n}"))
    message_id = uuid7()
    sid = session_id("alice", message_id)
    await store.save_run(cid=cid, session_id=sid, messages=_built(run, run.events, message_id, sid))
    if run.reaped_late:  # a reaper that rebuilt from fewer events comes second: kept as it is
        shorter = _built(run, run.events[: len(run.events) // 2], message_id, sid)
        await store.save_run(cid=cid, session_id=sid, messages=shorter, keep_existing=True)
    return message_id, sid


def _openai_fields(m: MessageView) -> dict[str, Any]:
    return m.model_dump(
        include={"role", "content", "tool_calls", "tool_call_id"}, exclude_none=True
    )


def _check_run(stored: list[MessageView], run: Run, message_id: str, sid: str) -> None:
    """The run's messages: contiguous, the id on its last assistant message, a valid transcript."""
    mine = [m for m in stored if m.session_id == sid]
    sequences = [m.sequence for m in mine]
    assert sequences == list(range(sequences[0], sequences[0] + len(mine)))
    assistants = [m for m in mine if m.role == "assistant"]
    assert assistants[-1].id == message_id
    assert sum(m.id == message_id for m in stored) == 1
    expected = _built(run, run.events, message_id, sid)
    assert [_openai_fields(m) for m in mine] == [
        m.model_dump(include={"role", "content", "tool_calls", "tool_call_id"}, exclude_none=True)
        for m in expected
    ]
    # Alone, a run may hold an empty or a second assistant message in a row; history
    # merges those. Every other rule holds for the stored run itself.
    relaxed = [
        v
        for v in check_transcript([_openai_fields(m) for m in mine])
        if "empty-assistant" not in v and "consecutive-assistant" not in v
    ]
    assert relaxed == []


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(runs=_conversation())
async def test_stored_runs_give_a_valid_history_from_the_cache_and_the_database(
    sqlite_store: ChatStore, runs: list[Run]
) -> None:
    store = sqlite_store
    cid = (await store.create(user_id="alice")).id
    kept: list[tuple[Run, str, str]] = []
    for n, run in enumerate(runs):
        if run.regenerate and kept:
            kept.pop()
        kept.append((run, *await _store_run(store, cid, n, run)))

    cached = await store.load(cid=cid)
    history = await store.history(cid=cid)
    from_db = await store.messages(cid=cid, limit=500)
    await store.cache.redis.delete(keys.session_cache(cid))
    reloaded = await store.load(cid=cid)

    assert cached is not None and reloaded is not None
    assert [m.model_dump() for m in cached.messages] == [m.model_dump() for m in from_db]
    assert [m.model_dump() for m in reloaded.messages] == [m.model_dump() for m in from_db]
    assert await store.history(cid=cid) == history
    assert_valid(history)
    assert [m.role for m in from_db if m.role == "user"] == ["user"] * len(kept)
    for run, message_id, sid in kept:
        _check_run(from_db, run, message_id, sid)
    assert {m.session_id for m in from_db} - {None} == {sid for _r, _m, sid in kept}
