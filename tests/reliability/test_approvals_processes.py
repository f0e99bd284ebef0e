"""Approvals that survive anything, across real processes.

A run asks about `calculator` (TURNSTREAM_TOOL_APPROVAL) and waits with no
worker. Then: embedded `serve` is SIGKILLed and started again before the
decision; or the decision goes to API process B while the run started on A,
with a separate worker. Either way the run goes on in the same session: a
resume from the last cursor the client saw shows the decision, the tool's
result, the reply and exactly one `end`, and the stored transcript is one a
provider accepts.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator

import httpx
import pytest
from helpers import wait_until
from openai_rules import assert_valid
from servers import Server
from sse import follow

from turnstream.store.history import to_openai

pytestmark = pytest.mark.on_cluster_too  # and once more on a Redis Cluster (conftest.py)

SIX_TIMES_SEVEN = '/tool calculator {"expression": "6*7"}'


def _until_asked(client: httpx.Client, base: str, cid: str) -> list[tuple]:
    """Post the message and read its stream up to its `approval_request`; then leave."""
    url = f"{base}/api/v1/conversations/{cid}/message/?stream=true"
    stream: Iterator[tuple] = follow(client, "POST", url, data={"content": SIX_TIMES_SEVEN})
    seen = []
    for event in stream:
        seen.append(event)
        if event[1] == "approval_request":
            break
    stream.close()  # type: ignore[attr-defined]
    assert seen[-1][1] == "approval_request", seen
    return seen


def _go_on(client: httpx.Client, base: str, cid: str, seen: list[tuple], approved: bool):
    """Decide on `base`, resume there from the last cursor seen: the rest, and the messages."""
    asked = seen[-1][2]
    body = {"approved": approved, "reason": "" if approved else "not now"}
    url = f"{base}/api/v1/conversations/{cid}/approvals/{asked['approvalId']}"
    decided = client.post(url, json=body)
    assert decided.status_code == 200, decided.text
    sid = seen[0][2]["sessionId"]
    url = f"{base}/api/v1/conversations/{cid}/resume/{sid}"
    rest = list(follow(client, "GET", url, params={"cursor": seen[-1][0]}))
    messages = client.get(f"{base}/api/v1/conversations/{cid}/messages").json()["items"]
    return asked, rest, messages


def _check(asked: dict, seen: list[tuple], rest: list[tuple], messages: list, approved: bool):
    events = seen + rest
    assert [data["seq"] for _id, _t, data in events] == list(range(1, len(events) + 1))
    types = [t for _id, t, _data in events]
    assert types.count("end") == 1 and types[-1] == "end"
    assert rest[-1][2]["status"] == "completed"
    decision = next(data for _id, t, data in rest if t == "approval")
    assert decision["approved"] is approved
    result = next(data for _id, t, data in rest if t == "tool_result")
    assert result["id"] == asked["toolCallId"]
    if approved:
        assert (result["content"], result["isError"]) == ("42", False)
        assert messages[-1]["content"] == "6*7 = 42."
    else:
        assert result["isError"] is True and "not now" in result["content"]
    reply = "".join(data["text"] for _id, t, data in rest if t == "delta")
    assert messages[-1]["content"] == reply and messages[-1]["status"] == "complete"
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert_valid(to_openai(messages))


def test_waiting_runs_go_on_after_embedded_serve_is_sigkilled(tmp_path):
    """Two conversations wait when serve dies: one call is approved after the restart, the
    other denied."""
    env = {
        "TURNSTREAM_REDIS_URL": "",  # embedded: Valkey's append-only file in the data dir
        "TURNSTREAM_DATA_DIR": str(tmp_path / "data"),
        "TURNSTREAM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/ts.db",
        "TURNSTREAM_TOOLS": "basic",
        "TURNSTREAM_TOOL_APPROVAL": "calculator",
        "TURNSTREAM_DEMO_DELAY_MS": "5",
    }
    waiting = {}
    with Server(env, tmp_path / "serve1.log") as first:
        token = re.search(r"ts_[A-Za-z0-9_-]+", first.output()).group(0)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(headers=headers, timeout=30) as client:
            for approved in (True, False):
                cid = client.post(f"{first.url}/api/v1/conversations").json()["id"]
                waiting[approved] = cid, _until_asked(client, first.url, cid)
            first.signal(signal.SIGKILL)
            assert first.proc.wait(5) == -signal.SIGKILL

    with Server(env, tmp_path / "serve2.log") as second:
        with httpx.Client(headers=headers, timeout=30) as client:
            for approved, (cid, seen) in waiting.items():
                status = client.get(f"{second.url}/api/v1/conversations/{cid}/task-status")
                assert status.json()["isActive"] is True  # nothing ended it at the start
                asked, rest, messages = _go_on(client, second.url, cid, seen, approved)
                _check(asked, seen, rest, messages, approved)


def test_a_decision_sent_to_api_b_goes_on_for_a_run_started_on_api_a(cluster):
    deployment = cluster(TURNSTREAM_TOOL_APPROVAL="calculator", TURNSTREAM_DEMO_DELAY_MS="5")
    a, b = deployment.apis(2)
    worker = deployment.worker()
    headers = deployment.token()
    with httpx.Client(headers=headers, timeout=30) as client:
        cid = client.post(f"{a.url}/api/v1/conversations").json()["id"]
        seen = _until_asked(client, a.url, cid)
        # The worker let go: a run whose worker is gone is not ended while it waits.
        worker.signal(signal.SIGKILL)
        second_worker = deployment.worker()
        sid = seen[0][2]["sessionId"]
        record = f"{b.url}/api/v1/conversations/{cid}/runs/{sid}"
        wait_until(
            lambda: client.get(record).json()["status"] == "waiting",
            timeout=10,
            what="the run to be waiting for the decision",
        )
        asked, rest, messages = _go_on(client, b.url, cid, seen, True)
    assert second_worker.proc.poll() is None
    _check(asked, seen, rest, messages, True)
