"""A SIGKILLed `turnstream worker` strands none of its queued runs.

A worker that is killed while it holds a run waiting for the run before it
(`multitask=enqueue`) leaves that message pending in the consumer group,
where taskiq-redis would reclaim it only after 10 minutes idle. The run is in
`chat:queued`: once the run it waited for has ended (`worker_lost`), a worker
hands it out again after TURNSTREAM_CLAIM_SECONDS, and it completes.
"""

from __future__ import annotations

import contextlib
import signal
import time

import httpx
import pytest
from helpers import wait_until
from sse import follow

pytestmark = pytest.mark.on_cluster_too  # and once more on a Redis Cluster (conftest.py)


def test_a_killed_workers_waiting_run_is_handed_out_again_and_completes(cluster):
    deployment = cluster(TURNSTREAM_CLAIM_SECONDS="2", TURNSTREAM_DEMO_WORDS="60")
    api, doomed, headers = deployment.api(), deployment.worker(), deployment.token()
    base = f"{api.url}/api/v1/conversations"
    with httpx.Client(headers=headers, timeout=30) as client:
        cid = client.post(base).json()["id"]
        stream = follow(client, "POST", f"{base}/{cid}/message/?stream=true", data={"content": "a"})
        with contextlib.closing(stream):
            seen = [next(stream) for _ in range(4)]  # queued, start, deltas: it is going
        first = seen[0][2]["sessionId"]
        url = f"{base}/{cid}/message/?stream=true&multitask=enqueue"
        with contextlib.closing(follow(client, "POST", url, data={"content": "b"})) as stream:
            second = next(stream)[2]["sessionId"]
        # The worker holds both messages: the first run's, and the second's, waiting.
        wait_until(
            lambda: deployment.pending() == 2,
            timeout=10,
            what="the worker to take the waiting run's message",
        )
        doomed.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        deployment.worker()

        def run(sid: str) -> dict:
            return client.get(f"{base}/{cid}/runs/{sid}").json()

        wait_until(
            lambda: run(second)["status"] == "completed",
            timeout=60,
            what="the waiting run of the killed worker to complete on another",
        )
        completed_after = time.monotonic() - killed_at
        lost, done = run(first), run(second)
        messages = client.get(f"{base}/{cid}/messages").json()["items"]
    assert lost["status"] == "error" and lost["error"]
    assert done["startedAt"] >= lost["endedAt"]
    assert completed_after < 30  # not taskiq-redis's 10 minutes
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"),
        ("assistant", "error"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert len(messages[-1]["content"].split()) == 60
