"""Turns with tool calls, end to end: real `turnstream` processes and the openai agent against a
loopback OpenAI-compatible server that checks OpenAI's transcript rules on every request.

The fake server (tests/fake_openai.py) runs in a thread of the test, the API and the
worker as OS processes, with `TURNSTREAM_AGENT=openai` pointed at it and the tools of
tests/e2e_tools.py. The model's replies are scripted, one per request; the server answers
`400` to a request whose `messages` break the rules (tests/openai_rules.py), as OpenAI
does, and the tests assert that none was refused and that the second turn's requests carry
the first turn as valid OpenAI messages:

1. two turns that each call a tool and answer with its result (embedded `serve`);
2. a turn stopped while its tool runs, then a new turn (`serve` on Redis + PostgreSQL);
3. a turn whose worker is SIGKILLed while its tool runs, then a new turn
   (`serve --no-worker` + `turnstream worker`, as in production).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_tools import answer, calls
from fake_openai import FakeServer, serving, text_reply, tool_reply
from helpers import wait_until
from openai_rules import check_transcript
from servers import Server, create_token
from sse import follow

from turnstream.runs.reply import CANCELLED_CALL, FAILED_CALL

TESTS_DIR = str(Path(__file__).resolve().parents[1])
TOOLS = {"lookup", "slow_lookup"}


@contextlib.contextmanager
def fake_openai_thread() -> Iterator[FakeServer]:
    """The fake OpenAI server, on its own event loop in a thread: the tests here are sync."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        box["loop"], box["stop"] = asyncio.get_running_loop(), stop
        async with serving() as state:
            box["state"] = state
            ready.set()
            await stop.wait()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced to the test below
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, name="fake-openai", daemon=True)
    thread.start()
    assert ready.wait(10), "the fake OpenAI server did not start"
    if "error" in box:
        raise box["error"]
    try:
        yield box["state"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)
    if "error" in box:
        raise box["error"]


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    with fake_openai_thread() as state:
        yield state


@pytest.fixture
def tools_dir(tmp_path: Path) -> Path:
    path = tmp_path / "tools"
    path.mkdir()
    return path


def agent_env(fake: FakeServer, tools_dir: Path) -> dict[str, str]:
    """The openai agent on the fake server, with the tools of e2e_tools importable."""
    path = [TESTS_DIR, *filter(None, [os.environ.get("PYTHONPATH")])]
    return {
        "TURNSTREAM_AGENT": "openai",
        "TURNSTREAM_OPENAI_BASE_URL": fake.base_url,
        "TURNSTREAM_OPENAI_API_KEY": "x",
        "TURNSTREAM_OPENAI_MODEL": "test-model",
        "TURNSTREAM_TOOLS": "e2e_tools:TOOLS",
        "E2E_TOOLS_DIR": str(tools_dir),
        "PYTHONPATH": os.pathsep.join(path),
    }


# --- what a client does -------------------------------------------------------------------


def conversation(client: httpx.Client, base: str) -> str:
    response = client.post(f"{base}/api/v1/conversations")
    assert response.status_code == 201, response.text
    return response.json()["id"]


def send(client: httpx.Client, base: str, cid: str, content: str) -> Iterator[tuple]:
    """The live events (id, type, data) of a new user message."""
    url = f"{base}/api/v1/conversations/{cid}/message/?stream=true"
    return follow(client, "POST", url, data={"content": content})


def until(stream: Iterator[tuple], kind: str) -> list[tuple]:
    """The events up to and including the first of type `kind`."""
    seen = []
    for event in stream:
        seen.append(event)
        if event[1] == kind:
            return seen
    raise AssertionError(f"the stream ended with no {kind!r} event: {seen}")


def messages(client: httpx.Client, base: str, cid: str) -> list[dict[str, Any]]:
    response = client.get(f"{base}/api/v1/conversations/{cid}/messages")
    assert response.status_code == 200, response.text
    return response.json()["items"]


def run_record(client: httpx.Client, base: str, cid: str, sid: str) -> dict[str, Any]:
    response = client.get(f"{base}/api/v1/conversations/{cid}/runs/{sid}")
    assert response.status_code == 200, response.text
    return response.json()


# --- what the events and the stored messages should be ------------------------------------


def steps(events: list[tuple]) -> list[str]:
    """The event types without `usage`, each run of `delta`s as one (they may be merged)."""
    out: list[str] = []
    for _id, kind, _data in events:
        if kind == "usage" or (kind == "delta" and out and out[-1] == "delta"):
            continue
        out.append(kind)
    return out


def text(events: list[tuple]) -> str:
    return "".join(data["text"] for _id, kind, data in events if kind == "delta")


def of(events: list[tuple], kind: str) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in data.items() if k not in ("seq", "ts", "type")}
        for _i, t, data in events
        if t == kind
    ]


def call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """One entry of an assistant message's `tool_calls`, as OpenAI has it."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def stored(items: list[dict[str, Any]]) -> list[tuple]:
    """The stored messages as (role, content, tool_calls, tool_call_id, status)."""
    return [
        (m["role"], m["content"], m["tool_calls"], m["tool_call_id"], m["status"]) for m in items
    ]


def sent(fake: FakeServer, index: int) -> list[dict[str, Any]]:
    """The `messages` of the fake server's request `index`."""
    return fake.requests[index]["messages"]


def assert_every_request_accepted(fake: FakeServer, count: int) -> None:
    assert fake.refused == [], f"requests refused with 400: {fake.refused}"
    assert len(fake.requests) == count, [r["messages"] for r in fake.requests]
    for body in fake.requests:
        assert check_transcript(body["messages"]) == []
        assert {t["function"]["name"] for t in body["tools"]} == TOOLS
        assert body["stream"] is True and body["model"] == "test-model"


# --- the tests ----------------------------------------------------------------------------

Q1, Q2 = "How many people live in Paris?", "And in Lyon?"
A1, A2 = "About 2.1 million people live in Paris.", "Lyon has about 522,000."
PARIS = '{"query": "Paris"}'
LYON = '{"query": "Lyon"}'


def test_two_turns_with_tool_calls_through_embedded_serve(fake, tools_dir, tmp_path):
    fake.script = [
        tool_reply(("call_paris", "lookup", PARIS)),  # turn 1, step 1
        text_reply(A1),  # turn 1, step 2: reads the tool's result
        tool_reply(("call_lyon", "lookup", LYON)),  # turn 2, step 1
        text_reply(A2),
    ]
    env = {
        "TURNSTREAM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/ts.db",
        "TURNSTREAM_DATA_DIR": str(tmp_path / "data"),
        "TURNSTREAM_REDIS_URL": "",  # embedded: its own Redis-compatible server
        **agent_env(fake, tools_dir),
    }
    started = time.monotonic()
    with Server(env, tmp_path / "serve.log") as server:
        token = re.search(r"ts_[A-Za-z0-9_-]+", server.output()).group(0)
        base = server.url
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            cid = conversation(client, base)
            first = list(send(client, base, cid, Q1))
            after_first = messages(client, base, cid)
            second = list(send(client, base, cid, Q2))
            after_second = messages(client, base, cid)
    print(f"\ntwo tool turns through embedded serve: {time.monotonic() - started:.1f} s")

    # Turn 1 as the user sees it live: the call, its result, the answer, the end.
    assert steps(first) == ["queued", "start", "tool_call", "tool_result", "delta", "end"]
    assert of(first, "tool_call") == [{"id": "call_paris", "name": "lookup", "arguments": PARIS}]
    assert of(first, "tool_result") == [
        {"id": "call_paris", "content": answer("Paris"), "isError": False}
    ]
    assert text(first) == A1
    assert first[-1][2]["status"] == "completed"
    assert [d["seq"] for _i, _t, d in first] == list(range(1, len(first) + 1))

    # …and as it is stored: the question, the step with its call, the result, the answer.
    turn1 = [
        ("user", Q1, None, None, "complete"),
        ("assistant", None, [call("call_paris", "lookup", PARIS)], None, "complete"),
        ("tool", answer("Paris"), None, "call_paris", "complete"),
        ("assistant", A1, None, None, "complete"),
    ]
    assert stored(after_first) == turn1
    assert after_first[-1]["id"] == first[-1][2]["messageId"]
    sid1 = first[0][2]["sessionId"]
    assert {m["session_id"] for m in after_first[1:]} == {sid1}

    # Turn 2 completed the same way, and was stored after turn 1.
    assert steps(second) == ["queued", "start", "tool_call", "tool_result", "delta", "end"]
    assert of(second, "tool_result") == [
        {"id": "call_lyon", "content": answer("Lyon"), "isError": False}
    ]
    assert text(second) == A2 and second[-1][2]["status"] == "completed"
    assert stored(after_second) == [
        *turn1,
        ("user", Q2, None, None, "complete"),
        ("assistant", None, [call("call_lyon", "lookup", LYON)], None, "complete"),
        ("tool", answer("Lyon"), None, "call_lyon", "complete"),
        ("assistant", A2, None, None, "complete"),
    ]

    # The tools ran in the server, with the model's arguments.
    assert [(c["tool"], c["query"], c["call_id"]) for c in calls(tools_dir)] == [
        ("lookup", "Paris", "call_paris"),
        ("lookup", "Lyon", "call_lyon"),
    ]

    # Every request was accepted, and turn 2's carried turn 1 as valid OpenAI messages.
    assert_every_request_accepted(fake, 4)
    history1 = [
        {"role": "user", "content": Q1},
        {"role": "assistant", "content": None, "tool_calls": [call("call_paris", "lookup", PARIS)]},
        {"role": "tool", "tool_call_id": "call_paris", "content": answer("Paris")},
        {"role": "assistant", "content": A1},
    ]
    assert sent(fake, 0) == history1[:1]
    assert sent(fake, 1) == history1[:3]
    assert sent(fake, 2) == [*history1, {"role": "user", "content": Q2}]
    assert sent(fake, 3) == [
        *history1,
        {"role": "user", "content": Q2},
        {"role": "assistant", "content": None, "tool_calls": [call("call_lyon", "lookup", LYON)]},
        {"role": "tool", "tool_call_id": "call_lyon", "content": answer("Lyon")},
    ]


Q_OSLO, Q_BERGEN = "How many people live in Oslo?", "Never mind. And Bergen?"
A_BERGEN = "Bergen has about 292,000 people."
OSLO = '{"query": "Oslo"}'
BERGEN = '{"query": "Bergen"}'


def _second_turn_after_a_cut_off_tool(
    fake: FakeServer, client: httpx.Client, base: str, cid: str, cut_tool: tuple
) -> list[tuple]:
    """Turn 2 after turn 1's `slow_lookup` got no result: it completes, and its requests
    carry turn 1 with the stand-in `tool` message `cut_tool`."""
    second = list(send(client, base, cid, Q_BERGEN))
    assert steps(second) == ["queued", "start", "tool_call", "tool_result", "delta", "end"]
    assert of(second, "tool_result") == [
        {"id": "call_bergen", "content": answer("Bergen"), "isError": False}
    ]
    assert text(second) == A_BERGEN and second[-1][2]["status"] == "completed"

    assert_every_request_accepted(fake, 3)
    history1 = [
        {"role": "user", "content": Q_OSLO},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [call("call_oslo", "slow_lookup", OSLO)],
        },
        cut_tool,
    ]
    assert sent(fake, 0) == history1[:1]
    assert sent(fake, 1) == [*history1, {"role": "user", "content": Q_BERGEN}]
    assert sent(fake, 2) == [
        *history1,
        {"role": "user", "content": Q_BERGEN},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [call("call_bergen", "lookup", BERGEN)],
        },
        {"role": "tool", "tool_call_id": "call_bergen", "content": answer("Bergen")},
    ]
    return second


def _cut_off_script() -> list[list[dict[str, Any]]]:
    return [
        tool_reply(("call_oslo", "slow_lookup", OSLO)),  # turn 1: its tool never returns
        tool_reply(("call_bergen", "lookup", BERGEN)),  # turn 2
        text_reply(A_BERGEN),
    ]


def test_a_turn_stopped_during_a_tool_then_a_new_turn(
    fake, tools_dir, tmp_path, redis_url, migrated_postgres_url
):
    postgres_url = migrated_postgres_url
    fake.script = _cut_off_script()
    env = {
        "TURNSTREAM_REDIS_URL": redis_url,
        "TURNSTREAM_DATABASE_URL": postgres_url,
        "TURNSTREAM_QUEUE_NAME": f"turnstream:test:{tmp_path.name}",
        **agent_env(fake, tools_dir),
    }
    headers = {"Authorization": f"Bearer {create_token(postgres_url, 'alice')}"}
    started = time.monotonic()
    with (
        Server(env, tmp_path / "serve.log") as server,
        httpx.Client(headers=headers, timeout=30) as client,
    ):
        base = server.url
        cid = conversation(client, base)
        stream = send(client, base, cid, Q_OSLO)
        first = until(stream, "tool_call")
        sid = first[0][2]["sessionId"]
        # The tool is running (in the server's worker) when the user presses Stop.
        wait_until(
            lambda: (tools_dir / "call_oslo.started").exists(),
            timeout=10,
            what="slow_lookup to start",
        )
        stop = client.post(f"{base}/api/v1/conversations/{cid}/stop")
        first += list(stream)
        record = run_record(client, base, cid, sid)
        after_first = messages(client, base, cid)
        wait_until(
            lambda: (tools_dir / "call_oslo.cancelled").exists(),
            timeout=10,
            what="slow_lookup to be cancelled",
        )
        second = _second_turn_after_a_cut_off_tool(
            fake,
            client,
            base,
            cid,
            {"role": "tool", "tool_call_id": "call_oslo", "content": CANCELLED_CALL},
        )
        after_second = messages(client, base, cid)
    print(f"\nstopped tool turn + new turn through serve: {time.monotonic() - started:.1f} s")

    # The stop answered once the run had ended; the stream ended `cancelled`, with no result.
    assert stop.status_code == 200, stop.text
    assert stop.json() == {"status": "cancelled", "sessionId": sid}
    assert steps(first) == ["queued", "start", "tool_call", "end"]
    assert of(first, "tool_call") == [{"id": "call_oslo", "name": "slow_lookup", "arguments": OSLO}]
    assert first[-1][2]["status"] == "cancelled"
    assert record["status"] == "cancelled"

    # Stored: the step with its call (the run's last assistant message, cancelled) and a
    # cancelled `tool` message standing in for the result it never got.
    turn1 = [
        ("user", Q_OSLO, None, None, "complete"),
        ("assistant", None, [call("call_oslo", "slow_lookup", OSLO)], None, "cancelled"),
        ("tool", CANCELLED_CALL, None, "call_oslo", "cancelled"),
    ]
    assert stored(after_first) == turn1
    assert after_first[1]["id"] == first[-1][2]["messageId"]
    assert stored(after_second) == [
        *turn1,
        ("user", Q_BERGEN, None, None, "complete"),
        ("assistant", None, [call("call_bergen", "lookup", BERGEN)], None, "complete"),
        ("tool", answer("Bergen"), None, "call_bergen", "complete"),
        ("assistant", A_BERGEN, None, None, "complete"),
    ]
    assert after_second[-1]["id"] == second[-1][2]["messageId"]
    assert [c["call_id"] for c in calls(tools_dir)] == ["call_oslo", "call_bergen"]


def test_a_turn_whose_worker_is_sigkilled_during_a_tool_then_a_new_turn(fake, tools_dir, cluster):
    fake.script = _cut_off_script()
    deployment = cluster(**agent_env(fake, tools_dir))  # leases of 3 s: see conftest.py
    api, doomed, headers = deployment.api(), deployment.worker(), deployment.token()
    base = api.url
    started = time.monotonic()
    with httpx.Client(headers=headers, timeout=30) as client:
        cid = conversation(client, base)
        stream = send(client, base, cid, Q_OSLO)
        first = until(stream, "tool_call")
        sid = first[0][2]["sessionId"]
        wait_until(
            lambda: (tools_dir / "call_oslo.started").exists(),
            timeout=10,
            what="slow_lookup to start in the worker",
        )
        doomed.signal(signal.SIGKILL)  # the worker and its children, mid-tool
        killed_at = time.monotonic()
        successor = deployment.worker()  # starts while the reaper waits out the lease
        first += list(stream)  # the reaper ends the run: the stream ends too
        ended_after = time.monotonic() - killed_at
        wait_until(
            lambda: run_record(client, base, cid, sid)["status"] == "error",
            timeout=15,
            what="the reaper to end the run with error",
        )
        after_first = messages(client, base, cid)
        second = _second_turn_after_a_cut_off_tool(
            fake,
            client,
            base,
            cid,
            {"role": "tool", "tool_call_id": "call_oslo", "content": FAILED_CALL},
        )
        after_second = messages(client, base, cid)
    print(
        f"\nSIGKILLed tool turn + new turn: run ended {ended_after:.1f} s after the kill, "
        f"{time.monotonic() - started:.1f} s in all"
    )

    # The user saw the call, then the run end as lost, with no result.
    assert steps(first) == ["queued", "start", "tool_call", "error", "end"]
    assert of(first, "error")[0]["code"] == "worker_lost"
    assert first[-1][2]["status"] == "error"
    assert not (tools_dir / "call_oslo.cancelled").exists()  # killed, not cancelled
    assert ended_after < 10

    # Stored: the call, as the run's last assistant message (error), and a failed `tool`
    # message standing in for its result.
    turn1 = [
        ("user", Q_OSLO, None, None, "complete"),
        ("assistant", None, [call("call_oslo", "slow_lookup", OSLO)], None, "error"),
        ("tool", FAILED_CALL, None, "call_oslo", "error"),
    ]
    assert stored(after_first) == turn1
    assert after_first[1]["id"] == first[-1][2]["messageId"]
    assert stored(after_second) == [
        *turn1,
        ("user", Q_BERGEN, None, None, "complete"),
        ("assistant", None, [call("call_bergen", "lookup", BERGEN)], None, "complete"),
        ("tool", answer("Bergen"), None, "call_bergen", "complete"),
        ("assistant", A_BERGEN, None, None, "complete"),
    ]
    # Turn 1 was not run again by the new worker: one slow_lookup, one lookup.
    assert [c["call_id"] for c in calls(tools_dir)] == ["call_oslo", "call_bergen"]
    assert after_second[-1]["id"] == second[-1][2]["messageId"]
    assert successor.proc.poll() is None
