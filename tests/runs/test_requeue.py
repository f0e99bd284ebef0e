"""Queued runs that no worker claims in time (runs/requeue.py), in a running app.

A run whose task message is lost (here: its kick goes nowhere, as when the
request's process dies between the create and the kick) is handed out again
by a process that can run it, and ended as `error` (`not_started`) with one
`end` when no process can, after the configured times.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from helpers import eventually

from turnstream import keys
from turnstream.api.app import create_app
from turnstream.config import Settings
from turnstream.keys import RunKeys
from turnstream.live.status import RunStatus
from turnstream.runs.service import Multitask, start_run
from turnstream.runtime import Runtime
from turnstream.store.users import ensure_user

CLAIM_SECONDS, NOT_STARTED_SECONDS = 0.3, 0.7


class _LostKicks:
    """A broker whose messages are lost: the run is created, and no worker ever hears of it."""

    def find_task(self, _name):
        class _Task:
            async def kiq(self, cid, sid):
                pass

        return _Task()


@pytest.fixture
def quick(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "claim_seconds": CLAIM_SECONDS,
            "not_started_seconds": NOT_STARTED_SECONDS,
            "reaper_interval": 0.05,
        }
    )


@contextlib.asynccontextmanager
async def _running(settings: Settings, *, worker: bool) -> AsyncIterator[FastAPI]:
    app = create_app(settings, worker=worker)
    async with app.router.lifespan_context(app):
        yield app


async def _conversation(rt: Runtime) -> str:
    async with rt.sessions() as db:
        await ensure_user(db, user_id="alice")
        await db.commit()
    return (await rt.store.create(user_id="alice")).id


async def _start(rt: Runtime, cid: str, content: str, multitask: Multitask) -> RunKeys:
    started = await start_run(
        rt, _LostKicks(), cid=cid, user_id="alice", content=content, multitask=multitask
    )
    return RunKeys(cid, started.session_id)


async def _events(rt: Runtime, k: RunKeys) -> list[dict[str, str]]:
    return [fields for _id, fields in await rt.redis.xrange(k.stream)]


async def test_a_queued_run_no_process_can_run_ends_with_not_started_after_the_set_time(quick):
    """An API process with --no-worker cannot run runs: it leaves them to the workers,
    and with none, ends them. The run enqueued behind the first waits for it, then
    ends the same way, its question stored before its (empty) reply."""
    async with _running(quick, worker=False) as app:
        rt = app.state.runtime
        cid = await _conversation(rt)
        first = await _start(rt, cid, "first question", Multitask.REJECT)
        second = await _start(rt, cid, "second question", Multitask.ENQUEUE)
        await eventually(
            lambda: _is(rt, second, "error"), timeout=15, what="the waiting run to end as error"
        )
        records = [await rt.runs.get(k) for k in (first, second)]
        events = [await _events(rt, k) for k in (first, second)]
        messages = (await rt.store.load(cid=cid)).messages
        assert await rt.runs.indexes.count(keys.queued) == 0

    for record, written in zip(records, events, strict=True):
        assert [e["type"] for e in written] == ["queued", "error", "end"]
        assert json.loads(written[1]["data"])["code"] == "not_started"
        assert json.loads(written[2]["data"])["status"] == "error"
        assert record is not None and record.status is RunStatus.ERROR
        assert record.ended_at is not None
        assert record.ended_at - record.created_at >= (CLAIM_SECONDS + NOT_STARTED_SECONDS) * 1000
    first_record, second_record = records
    assert first_record is not None and second_record is not None
    assert second_record.ended_at >= first_record.ended_at  # it waited for the first one
    assert [(m.role, m.content, m.status) for m in messages] == [
        ("user", "first question", "complete"),
        ("assistant", "", "error"),
        ("user", "second question", "complete"),
        ("assistant", "", "error"),
    ]
    replies = [m.id for m in messages if m.role == "assistant"]
    assert replies == [first_record.message_id, second_record.message_id]


async def test_a_run_whose_message_was_lost_is_handed_out_again_and_completes(quick):
    """A process that can run runs (an in-process serve, a worker) hands out a run no
    worker claimed within the claim window; it runs once, as usual."""
    async with _running(quick, worker=True) as app:
        rt = app.state.runtime
        cid = await _conversation(rt)
        k = await _start(rt, cid, "hello", Multitask.REJECT)
        await eventually(
            lambda: _is(rt, k, "completed"),
            timeout=15,
            what="the run to be handed out and complete",
        )
        types = [e["type"] for e in await _events(rt, k)]
        messages = (await rt.store.load(cid=cid)).messages
        assert await rt.runs.indexes.count(keys.queued) == 0
    assert types[:2] == ["queued", "start"] and types[-1] == "end"
    assert types.count("start") == 1 and types.count("end") == 1 and "error" not in types
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[-1].status == "complete" and messages[-1].content


async def _is(rt: Runtime, k: RunKeys, status: str) -> bool:
    return await rt.redis.get(k.status) == status
