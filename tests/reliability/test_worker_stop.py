"""A SIGTERMed `turnstream worker` takes no new runs and leaves none `running`.

SIGTERM goes to the worker's main process only, as Kubernetes sends it. taskiq
then stops reading the queue and waits up to TURNSTREAM_WORKER_GRACE_SECONDS
for the runs in flight; after that the worker ends the runs still going
(`error`, code `worker_stopped`, the partial reply stored) and hands back the
runs still waiting for their turn, so that another worker takes them at once.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest
from helpers import wait_until
from servers import Process
from sse import follow

pytestmark = pytest.mark.on_cluster_too  # and once more on a Redis Cluster (conftest.py)


def _conversation(client: httpx.Client, base: str) -> str:
    response = client.post(f"{base}/api/v1/conversations")
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _sigterm(worker: Process) -> float:
    os.kill(worker.proc.pid, signal.SIGTERM)
    return time.monotonic()


def _exited_after(worker: Process, since: float, timeout: float) -> float:
    """Seconds from `since` until the worker process exited by itself."""
    worker.proc.wait(timeout)
    return time.monotonic() - since


def _until_ended(client: httpx.Client, run_url: str, timeout: float) -> None:
    """Wait for the run's end, so that reading its stream to the end cannot hang."""

    def ended() -> bool:
        return client.get(run_url).json()["status"] not in ("queued", "running")

    wait_until(ended, timeout=timeout, what=f"{run_url} to end")


def _text(events: list[tuple]) -> str:
    return "".join(data["text"] for _id, t, data in events if t == "delta")


def test_sigterm_lets_the_run_in_flight_finish_and_leaves_new_runs_to_other_workers(cluster):
    deployment = cluster(TURNSTREAM_DEMO_WORDS="60", TURNSTREAM_WORKER_GRACE_SECONDS="20")
    api, first, headers = deployment.api(), deployment.worker(), deployment.token()
    base = f"{api.url}/api/v1/conversations"
    with httpx.Client(headers=headers, timeout=30) as client:
        busy, later = _conversation(client, api.url), _conversation(client, api.url)
        stream = follow(
            client, "POST", f"{base}/{busy}/message/?stream=true", data={"content": "a"}
        )
        seen = [next(stream) for _ in range(6)]  # queued, start, deltas: the run is going
        busy_url = f"{base}/{busy}/runs/{seen[0][2]['sessionId']}"
        sigterm_at = _sigterm(first)
        # Once the worker says so, it reads the queue no more (taskiq's own log line).
        wait_until(
            lambda: "Stopping prefetching" in first.output(),
            timeout=10,
            what="the worker to stop reading the queue",
        )
        queued = follow(
            client, "POST", f"{base}/{later}/message/?stream=true", data={"content": "b"}
        )
        later_events = [next(queued)]  # `queued`: its message is on the queue
        _until_ended(client, busy_url, 20)
        seen += list(stream)
        exited_after = _exited_after(first, sigterm_at, 30)
        later_sid = later_events[0][2]["sessionId"]
        untaken = client.get(f"{base}/{later}/runs/{later_sid}").json()

        second = deployment.worker()
        _until_ended(client, f"{base}/{later}/runs/{later_sid}", 20)
        later_events += list(queued)
        busy_run = client.get(busy_url).json()
        later_run = client.get(f"{base}/{later}/runs/{later_sid}").json()
        busy_messages = client.get(f"{base}/{busy}/messages").json()["items"]
    print(f"\nSIGTERMed worker exited after {exited_after:.1f} s (grace 20 s)")

    # The run in flight finished whole, and the worker then left without waiting out the grace.
    assert [t for _id, t, _data in seen].count("end") == 1
    assert seen[-1][1] == "end" and seen[-1][2]["status"] == "completed"
    assert len(_text(seen).split()) == 60
    assert busy_messages[-1]["status"] == "complete" and busy_messages[-1]["content"] == _text(seen)
    assert busy_run["status"] == "completed"
    assert first.proc.returncode == 0 and exited_after < 20

    # The message sent after the SIGTERM waited for the next worker, which ran it.
    assert (untaken["status"], untaken["worker"]) == ("queued", None)
    assert later_events[-1][1] == "end" and later_events[-1][2]["status"] == "completed"
    assert later_run["status"] == "completed" and later_run["worker"] != busy_run["worker"]
    assert second.proc.poll() is None


def test_a_run_longer_than_the_grace_ends_worker_stopped_and_a_waiting_run_is_handed_back(
    cluster,
):
    deployment = cluster(TURNSTREAM_WORKER_GRACE_SECONDS="1")  # replies take about 5 s
    api, first, headers = deployment.api(), deployment.worker(), deployment.token()
    base = f"{api.url}/api/v1/conversations"
    with httpx.Client(headers=headers, timeout=30) as client:
        cid = _conversation(client, api.url)
        stream = follow(client, "POST", f"{base}/{cid}/message/?stream=true", data={"content": "a"})
        seen = [next(stream) for _ in range(6)]
        waiting = follow(
            client,
            "POST",
            f"{base}/{cid}/message/?stream=true&multitask=enqueue",
            data={"content": "b"},
        )
        waiting_events = [next(waiting)]  # queued behind the first run
        # The worker holds both: one running, one waiting for it.
        wait_until(
            lambda: deployment.pending() == 2,
            timeout=10,
            what="the worker to take both messages",
        )

        run_url = f"{base}/{cid}/runs/{seen[0][2]['sessionId']}"
        sigterm_at = _sigterm(first)
        _until_ended(client, run_url, 15)
        ended_after = time.monotonic() - sigterm_at
        seen += list(stream)
        exited_after = _exited_after(first, sigterm_at, 20)
        left_pending = deployment.pending()
        waiting_url = f"{base}/{cid}/runs/{waiting_events[0][2]['sessionId']}"
        meanwhile = client.get(waiting_url).json()

        deployment.worker()
        _until_ended(client, waiting_url, 20)
        waiting_events += list(waiting)
        run = client.get(run_url).json()
        after = client.get(f"{base}/{cid}/task-status").json()
        messages = client.get(f"{base}/{cid}/messages").json()["items"]
    print(f"\nrun ended {ended_after:.1f} s, worker exited {exited_after:.1f} s after SIGTERM")

    # The long run ended as stopped by its worker, once, with its partial reply stored.
    types = [t for _id, t, _data in seen]
    assert types[-2:] == ["error", "end"] and types.count("end") == 1
    assert seen[-2][2]["code"] == "worker_stopped" and seen[-1][2]["status"] == "error"
    partial = _text(seen)
    assert 0 < len(partial.split()) < 120
    assert run["status"] == "error"
    assert first.proc.returncode == 0 and ended_after < 10 and exited_after < 10

    # The waiting run was handed back, not left pending with the stopped worker:
    # it stays queued until the next worker takes it and completes it.
    assert left_pending == 0
    assert (meanwhile["status"], meanwhile["worker"]) == ("queued", None)
    assert waiting_events[-1][1] == "end" and waiting_events[-1][2]["status"] == "completed"
    assert after["isActive"] is False
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"),
        ("assistant", "error"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert messages[1]["content"] == partial and messages[3]["content"] == _text(waiting_events)
