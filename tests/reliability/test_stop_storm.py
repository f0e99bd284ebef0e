"""A storm of stops and regenerates on one conversation: never two runs at once.

The in-process app on real Redis, with its in-process worker. Regenerates use
`stream=false` (httpx's ASGITransport buffers a stream anyway), so each answer
is the reply as JSON. While the storm goes on, a sampler reads the status of
every run of the conversation in one atomic Redis step and asks the two
session endpoints, as a frontend would.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from api_support import client_for, running_app, token_for
from helpers import eventually
from redis.asyncio import Redis

from turnstream import keys
from turnstream.config import Settings
from turnstream.events import StreamEntry
from turnstream.keys import RunField, RunKeys
from turnstream.store import runlog

MIX = {"stop": 20, "interrupt": 20, "reject": 10}  # 50 requests: stops and regenerates
SPREAD_SECONDS = 1.5  # each starts at a random moment in this window
_LIVE = ("queued", "running")
_MESSAGE_STATUS = {"completed": "complete", "cancelled": "cancelled", "error": "error"}

# Every run of the conversation in one atomic step: session id, run hash status and
# task:status of each, then chat:active (a test may list keys; the product never does).
# ARGV: the run hash prefix, the task:status prefix, the run hash's status field.
_SAMPLE = """
local out = {}
for _, run in ipairs(redis.call('KEYS', ARGV[1] .. '*')) do
  local sid = string.sub(run, #ARGV[1] + 1)
  out[#out + 1] = sid
  out[#out + 1] = redis.call('HGET', run, ARGV[3]) or ''
  out[#out + 1] = redis.call('GET', ARGV[2] .. sid) or ''
end
out[#out + 1] = redis.call('GET', KEYS[1]) or ''
return out
"""


@pytest.fixture
def storm_settings(settings: Settings) -> Settings:
    """Replies of about 0.2 s, so that stops land on queued, running and ending runs alike.

    The per-user start quota is lifted: the storm starts far more than 30 runs a minute.
    """
    return settings.model_copy(
        update={"demo_words": 10, "demo_delay_ms": 20, "runs_per_minute": 10_000}
    )


@dataclass
class Answer:
    kind: str  # stop | interrupt | reject
    status: int
    body: Any
    session_id: str | None  # X-Session-Id: the run a regenerate started


async def _request(http: httpx.AsyncClient, headers: dict[str, str], cid: str, kind: str) -> Answer:
    base = f"/api/v1/conversations/{cid}"
    if kind == "stop":
        response = await http.post(f"{base}/stop", headers=headers)
    else:
        response = await http.post(
            f"{base}/regenerate", params={"stream": "false", "multitask": kind}, headers=headers
        )
    assert response.headers["content-type"].startswith("application/json"), response.text
    return Answer(kind, response.status_code, response.json(), response.headers.get("x-session-id"))


class Sampler:
    """Polls the conversation's runs until told to stop; keeps what a user would object to."""

    def __init__(
        self, http: httpx.AsyncClient, redis: Redis, headers: dict[str, str], cid: str
    ) -> None:
        self.http, self.headers, self.cid = http, headers, cid
        self.sample = redis.register_script(_SAMPLE)
        self.problems: list[str] = []
        self.samples = 0
        self.most_live = 0
        self.done = asyncio.Event()

    async def run(self) -> None:
        while not self.done.is_set():
            await self._redis_sample()
            await self._api_sample()
            self.samples += 1
            await asyncio.sleep(0.005)  # the sampling pace, not a wait for anything

    async def _redis_sample(self) -> None:
        flat = await self.sample(
            keys=[keys.active(self.cid)],
            args=[keys.run_prefix(self.cid), keys.status_prefix(self.cid), RunField.STATUS],
        )
        pointer, triples = flat[-1], flat[:-1]
        live = []
        for i in range(0, len(triples), 3):
            sid, run_status, task_status = triples[i : i + 3]
            if run_status != task_status:
                self.problems.append(f"{sid}: run hash {run_status!r}, task:status {task_status!r}")
            if run_status in _LIVE:
                live.append(sid)
        self.most_live = max(self.most_live, len(live))
        if len(live) > 1:
            self.problems.append(f"{len(live)} runs live at once: {live}")
        if live and live != [pointer]:
            self.problems.append(f"live run {live} but chat:active is {pointer!r}")

    async def _api_sample(self) -> None:
        base = f"/api/v1/conversations/{self.cid}"
        active = await self.http.get(f"{base}/active-session", headers=self.headers)
        status = await self.http.get(f"{base}/task-status", headers=self.headers)
        for response in (active, status):
            if response.status_code not in (200, 404):
                self.problems.append(f"{response.url.path}: {response.status_code} {response.text}")
        if active.status_code == 200 and status.status_code == 200:
            a, t = active.json(), status.json()
            if a["status"] not in ("active", "completed", "idle"):
                self.problems.append(f"active-session status {a['status']!r}")
            # The two reads may see two runs; one run never goes from ended back to live.
            if a["sessionId"] == t["sessionId"] and a["status"] != "active" and t["isActive"]:
                self.problems.append(f"{a['sessionId']} ended, then active again")


async def _wait_idle(http: httpx.AsyncClient, headers: dict[str, str], cid: str) -> None:
    async def idle() -> bool:
        url = f"/api/v1/conversations/{cid}/task-status"
        return not (await http.get(url, headers=headers)).json().get("isActive")

    await eventually(idle, timeout=15, what="no run active after the storm")


async def _wait_logged(rt: Any, cid: str) -> None:
    """Until SQL's run log has every run's end too: it is written just after Redis's."""

    async def logged() -> bool:
        sids = await runlog.session_ids(rt.sessions, cid=cid)
        rows = [await runlog.get_run(rt.sessions, session_id=sid) for sid in sids]
        return all(row is not None and row.status in _MESSAGE_STATUS for row in rows)

    await eventually(logged, timeout=15, what="every run's end in the SQL run log")


async def test_fifty_concurrent_stops_and_regenerates_keep_one_run_at_a_time(
    storm_settings, database_url
):
    """On SQLite and on PostgreSQL (where SQL writes really run concurrently)."""
    settings = storm_settings.model_copy(update={"database_url": database_url})
    async with running_app(settings) as app, client_for(app) as http:
        rt = app.state.runtime
        headers = await token_for(app, "alice")
        cid = (await http.post("/api/v1/conversations", headers=headers)).json()["id"]
        first = await http.post(
            f"/api/v1/conversations/{cid}/message/?stream=false",
            headers=headers,
            data={"content": "hello"},
        )
        assert first.status_code == 200 and first.json()["status"] == "complete"
        user_message = (
            await http.get(f"/api/v1/conversations/{cid}/messages", headers=headers)
        ).json()["items"][0]

        rng = random.Random(6)  # a fixed storm, so that a failure can be replayed
        kinds = [kind for kind, count in MIX.items() for _ in range(count)]
        rng.shuffle(kinds)

        async def one(kind: str) -> Answer:
            await asyncio.sleep(rng.uniform(0, SPREAD_SECONDS))  # the storm's shape, not a wait
            return await _request(http, headers, cid, kind)

        sampler = Sampler(http, rt.redis, headers, cid)
        sampling = asyncio.create_task(sampler.run())
        try:
            async with asyncio.timeout(30):  # a hang fails the test instead of stalling it
                answers = await asyncio.gather(*(one(kind) for kind in kinds))
            await _wait_idle(http, headers, cid)
            await _wait_logged(rt, cid)
        finally:
            sampler.done.set()
            await sampling

        # Every run, from the SQL run log, with its Redis record and its stream.
        runs = []
        for sid in await runlog.session_ids(rt.sessions, cid=cid):
            row = await runlog.get_run(rt.sessions, session_id=sid)
            k = RunKeys(cid, sid)
            record = await rt.redis.hgetall(k.run)
            stream = [
                StreamEntry.from_redis(entry_id, fields)
                for entry_id, fields in await rt.redis.xrange(k.stream)
            ]
            runs.append((row, record, stream))
        # In the order Redis created them: by the id of each stream's first entry (`queued`).
        runs.sort(key=lambda run: tuple(map(int, run[2][0].id.split("-"))))
        messages = (
            await http.get(f"/api/v1/conversations/{cid}/messages", headers=headers)
        ).json()["items"]

    by_status = Counter(row.status for row, _record, _stream in runs)
    answered = Counter((a.kind, a.status, "ran" if a.session_id else "") for a in answers)
    print(f"\n{len(runs)} runs {dict(by_status)}; answers {dict(answered)}; ", end="")
    print(f"{sampler.samples} samples, at most {sampler.most_live} live")

    # What the sampler saw while the storm went on.
    assert sampler.problems == []
    assert sampler.samples > 20 and sampler.most_live == 1

    # Every request got a defined answer: never a 5xx.
    allowed = {"stop": {200, 404, 409}, "interrupt": {200, 409}, "reject": {200, 409}}
    assert [(a.kind, a.status, a.body) for a in answers if a.status not in allowed[a.kind]] == []
    assert answered[("interrupt", 200, "ran")] > 0 and answered[("stop", 200, "")] > 0

    # Every run ended once, in Redis and in SQL alike, and the runs never overlapped.
    assert len(runs) > 2
    for row, record, stream in runs:
        assert row.status in _MESSAGE_STATUS and record[RunField.STATUS] == row.status, row.id
        assert [e.seq for e in stream] == list(range(1, len(stream) + 1)), row.id
        ends = [e for e in stream if e.type == "end"]
        assert len(ends) == 1 and stream[-1] is ends[0], row.id
        assert ends[0].data == {"status": row.status, "messageId": row.message_id}
    for (before, before_record, _), (after, after_record, _) in itertools.pairwise(runs):
        assert before.ended_at is not None and after.created_at >= before.ended_at
        if after_record.get(RunField.STARTED_AT):
            started, ended = after_record[RunField.STARTED_AT], before_record[RunField.ENDED_AT]
            assert int(started) >= int(ended)
    assert by_status["error"] == 0

    # A stop's answer says what became of the run it named: cancelled, or ended otherwise.
    final = {row.id: row.status for row, _record, _stream in runs}
    for answer in answers:
        if answer.kind == "stop" and answer.status == 200:
            assert answer.body["status"] == "cancelled"
            assert final[answer.body["sessionId"]] == "cancelled", answer.body
        elif answer.kind == "stop" and answer.status == 409:
            assert final[answer.body["sessionId"]] == answer.body["status"] != "cancelled"
        elif answer.status == 409:
            assert answer.body["sessionId"] in final, answer.body
            if answer.session_id:  # it ran, then a newer regenerate replaced its reply
                assert answer.session_id in final and answer.session_id != answer.body["sessionId"]

    # A 200 from regenerate is the reply its run ended with.
    replies = {row.message_id: (row, stream) for row, _record, stream in runs}
    for answer in answers:
        if answer.kind != "stop" and answer.status == 200:
            row, stream = replies[answer.body["id"]]
            assert answer.body["status"] == _MESSAGE_STATUS[row.status]
            assert answer.body["content"] == _text(stream)

    # The conversation is the first question and the newest run's reply.
    newest, _record, newest_stream = runs[-1]
    assert [(m["id"], m["role"]) for m in messages] == [
        (user_message["id"], "user"),
        (newest.message_id, "assistant"),
    ]
    reply = messages[1]
    assert reply["session_id"] == newest.id
    assert reply["status"] == _MESSAGE_STATUS[newest.status]
    assert reply["content"] == _text(newest_stream)


def _text(stream: list[StreamEntry]) -> str:
    return "".join(e.data["text"] for e in stream if e.type == "delta")


@pytest.mark.parametrize("route", ["message", "regenerate"])
async def test_a_stop_while_the_run_is_being_prepared_keeps_its_reply_in_order(
    storm_settings, route
):
    """A stop that lands between a run's creation and its SQL preparation (the user
    message appended, or the replies a regenerate replaces deleted) must not end
    the run before that preparation: its reply would be written first and then
    deleted (regenerate), or land before its own question (message)."""
    async with running_app(storm_settings) as app, client_for(app) as http:
        store = app.state.runtime.store
        headers = await token_for(app, "alice")
        cid = (await http.post("/api/v1/conversations", headers=headers)).json()["id"]
        base = f"/api/v1/conversations/{cid}"
        first = await http.post(
            f"{base}/message/?stream=false", headers=headers, data={"content": "one"}
        )
        assert first.status_code == 200

        # Hold the run's preparation until the stop has been asked.
        preparing, go_on = asyncio.Event(), asyncio.Event()
        name = "append" if route == "message" else "delete_replies_after_last_user"
        prepare = getattr(store, name)

        async def held(**kwargs: Any) -> Any:
            preparing.set()
            await go_on.wait()
            return await prepare(**kwargs)

        store.__dict__[name] = held
        if route == "message":
            request = http.post(
                f"{base}/message/?stream=false", headers=headers, data={"content": "two"}
            )
        else:
            request = http.post(f"{base}/regenerate?stream=false", headers=headers)
        started = asyncio.create_task(request)
        await asyncio.wait_for(preparing.wait(), 5)
        # The stop is in its wait for the run's end once it calls wait_ended.
        runs, waiting = app.state.runtime.runs, asyncio.Event()
        wait_ended = runs.wait_ended

        async def observed(k: RunKeys, **kwargs: Any) -> None:
            waiting.set()
            await wait_ended(k, **kwargs)

        runs.__dict__["wait_ended"] = observed
        stopping = asyncio.create_task(http.post(f"{base}/stop", headers=headers))
        await asyncio.wait_for(waiting.wait(), 5)
        go_on.set()
        async with asyncio.timeout(15):
            stopped, answer = await stopping, await started
        del store.__dict__[name], runs.__dict__["wait_ended"]
        messages = (await http.get(f"{base}/messages", headers=headers)).json()["items"]

    assert stopped.status_code == 200, stopped.text
    assert answer.status_code == 200, answer.text
    sid = stopped.json()["sessionId"]
    assert answer.headers["x-session-id"] == sid
    assert answer.json()["status"] == "cancelled"
    expected = [("user", "one"), ("assistant", None)]
    if route == "message":
        expected += [("user", "two"), ("assistant", None)]
    assert [
        (m["role"], m["content"] if m["role"] == "user" else None) for m in messages
    ] == expected
    assert messages[-1]["id"] == answer.json()["id"]
    assert messages[-1]["session_id"] == sid and messages[-1]["status"] == "cancelled"


@pytest.mark.parametrize("outcome", ["completed first", "still ending"])
async def test_stop_answers_what_became_of_the_run(storm_settings, outcome):
    """A stop that lands while the run is storing its whole reply: the run completes.

    The answer must say so (409 with the status), not claim `cancelled`; and when
    the run outlasts the stop wait, 202 `stopping` rather than a premature 200.
    """
    wait = 0.2 if outcome == "still ending" else 10.0
    async with (
        running_app(storm_settings.model_copy(update={"stop_wait_seconds": wait})) as app,
        client_for(app) as http,
    ):
        rt = app.state.runtime
        headers = await token_for(app, "alice")
        cid = (await http.post("/api/v1/conversations", headers=headers)).json()["id"]
        base = f"/api/v1/conversations/{cid}"

        # Hold the run's end where it stores its messages, until the stop has asked.
        storing, go_on = asyncio.Event(), asyncio.Event()
        save_run = rt.store.save_run

        async def held(**kwargs: Any) -> Any:
            storing.set()
            await go_on.wait()
            return await save_run(**kwargs)

        rt.store.__dict__["save_run"] = held
        started = asyncio.create_task(
            http.post(f"{base}/message/?stream=false", headers=headers, data={"content": "hi"})
        )
        await asyncio.wait_for(storing.wait(), 5)
        sid = await rt.redis.get(keys.active(cid))
        stopping = asyncio.create_task(http.post(f"{base}/stop", headers=headers))
        cancel_key = RunKeys(cid, sid).cancel
        await eventually(
            lambda: rt.redis.exists(cancel_key), timeout=5, what=f"the stop to set {cancel_key}"
        )
        async with asyncio.timeout(15):
            if outcome == "still ending":
                stopped = await stopping  # answered while the run is still held
                go_on.set()
            else:
                go_on.set()
                stopped = await stopping
            answer = await started
        del rt.store.__dict__["save_run"]
        run = (await http.get(f"{base}/runs/{sid}", headers=headers)).json()

    assert answer.status_code == 200 and answer.json()["status"] == "complete"
    assert run["status"] == "completed"
    if outcome == "still ending":
        assert (stopped.status_code, stopped.json()) == (
            202,
            {"status": "stopping", "sessionId": sid},
        )
    else:
        assert (stopped.status_code, stopped.json()) == (
            409,
            {
                "error": "The run ended before it could be stopped",
                "status": "completed",
                "sessionId": sid,
                "conversationId": cid,
            },
        )


async def test_stop_ends_a_run_whose_start_never_finished(storm_settings):
    """A run created by a request that then hung (or whose process died) before its
    preparation: a stop still ends it, after the stop wait, instead of leaving the
    conversation blocked by a run that no worker will ever get."""
    settings = storm_settings.model_copy(update={"stop_wait_seconds": 0.3})
    async with running_app(settings) as app, client_for(app) as http:
        store = app.state.runtime.store
        headers = await token_for(app, "alice")
        cid = (await http.post("/api/v1/conversations", headers=headers)).json()["id"]
        base = f"/api/v1/conversations/{cid}"
        hung = asyncio.Event()

        async def hangs(**_kwargs: Any) -> Any:
            hung.set()
            await asyncio.Event().wait()  # never returns

        store.__dict__["append"] = hangs
        starting = asyncio.create_task(
            http.post(f"{base}/message/?stream=false", headers=headers, data={"content": "a"})
        )
        await asyncio.wait_for(hung.wait(), 5)
        async with asyncio.timeout(10):
            stopped = await http.post(f"{base}/stop", headers=headers)
        status = (await http.get(f"{base}/task-status", headers=headers)).json()
        starting.cancel()
        del store.__dict__["append"]
        again = await http.post(
            f"{base}/message/?stream=false", headers=headers, data={"content": "b"}
        )

    assert stopped.status_code == 200, stopped.text
    assert status["isActive"] is False and status["sessionId"] == stopped.json()["sessionId"]
    assert again.status_code == 200 and again.json()["status"] == "complete"
