"""300 turns of one conversation through the `openai` agent, against the fake OpenAI server
with a context window of its own (tests/fake_openai.py): the Done-when test of issue 29.

Turns run in process (start_run, then the executor, as a worker would), so the test
takes seconds; every request the fake gets is checked against OpenAI's transcript
rules, and one longer than its window would be answered 400 `context_length_exceeded`.
"""

from __future__ import annotations

import json
from typing import Any

from api_support import running_app
from fake_openai import FakeServer, serving, text_reply, tool_reply
from helpers import NoBroker

from turnstream.config import Settings
from turnstream.context.summary import INSTRUCTIONS
from turnstream.keys import RunKeys
from turnstream.live.status import RunStatus
from turnstream.runs.executor import execute
from turnstream.runs.service import Multitask, start_run
from turnstream.store.users import ensure_user

TURNS = 300
TOOLS = "tests.agents.toolbox:TOOLS"


def respond(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every fifth question makes the model call `flood` (a 3,000-character result)."""
    last = body["messages"][-1]
    if last["role"] == "user" and last["content"].startswith("turn "):
        turn = int(last["content"].split()[1])
        if turn % 5 == 0:
            return tool_reply((f"call_{turn}", "flood", '{"size": 3000}'))
    return text_reply("An answer of some length. " * 16)


async def _turn(rt: Any, cid: str, turn: int) -> tuple[RunKeys, list[str]]:
    content = f"turn {turn} " + "and a question of a few words " * 8
    started = await start_run(
        rt, NoBroker(), cid=cid, user_id="alice", content=content, multitask=Multitask.REJECT
    )
    k = RunKeys(cid, started.session_id)
    await execute(rt, cid, k.sid, worker="w")
    types = [fields["type"] for _id, fields in await rt.redis.xrange(k.stream)]
    return k, types


async def test_three_hundred_turns_fit_the_model_and_every_message_is_kept(
    settings: Settings,
) -> None:
    async with serving() as fake:
        fake.respond, fake.context_limit = respond, 3_000
        overrides = {
            "agent": "openai",
            "openai_base_url": fake.base_url,
            "openai_api_key": "test",
            "openai_model": "test-model",
            "tools": TOOLS,
            "context_tokens": 3_000,
            "reserve_tokens": 400,
            "summary_tokens": 200,
            "context_tool_result_chars": 300,
            "delta_flush_ms": 0,
            "runs_per_minute": 100_000,
            "archive_retention": 0,  # the events' archive is not what this is about
        }
        async with running_app(settings.model_copy(update=overrides)) as app:
            rt = app.state.runtime
            async with rt.sessions() as db, db.begin():
                await ensure_user(db, user_id="alice")
            cid = (await rt.store.create(user_id="alice")).id
            compactions = 0
            for turn in range(TURNS):
                k, types = await _turn(rt, cid, turn)
                record = await rt.runs.get(k)
                assert record is not None and record.status is RunStatus.COMPLETED, (turn, types)
                compactions += types.count("compaction")
            stored = await rt.store.messages(cid=cid, limit=10_000)
        _check_requests(fake, compactions)
    calls = TURNS // 5
    # A question and an answer per turn; a tool call and its result every fifth.
    assert len(stored) == 2 * TURNS + 2 * calls
    assert [m.content for m in stored if m.role == "user"][-1].startswith(f"turn {TURNS - 1} ")
    assert sum(m.role == "tool" and len(m.content or "") == 3000 for m in stored) == calls


def _check_requests(fake: FakeServer, compactions: int) -> None:
    assert fake.refused == []  # every request kept OpenAI's transcript rules
    # A history fits; a step whose tool result pushed it over was retried tighter (all
    # turns completed): that is at most the steps after a tool call.
    assert len(fake.too_long) <= TURNS // 5
    assert compactions >= 10  # the window is small: compaction is routine here
    assert 0 < len(fake.summary_requests) <= compactions
    assert all(r["messages"][0]["content"] == INSTRUCTIONS for r in fake.summary_requests)
    for body in fake.requests:
        if body.get("stream"):
            calls = {c["id"] for m in body["messages"] for c in m.get("tool_calls") or ()}
            answered = {m["tool_call_id"] for m in body["messages"] if m["role"] == "tool"}
            assert calls == answered, json.dumps(body["messages"])[:500]
