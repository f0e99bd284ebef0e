"""Runs across real processes: embedded `serve`, and API A + API B + a worker in production mode."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator

import httpx
import pytest
from servers import Server
from sse import follow


def _conversation(client: httpx.Client, base: str) -> str:
    response = client.post(f"{base}/api/v1/conversations")
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _post_stream(client: httpx.Client, base: str, cid: str) -> Iterator[tuple]:
    """The live events of the message "hello", posted with `stream=true`."""
    url = f"{base}/api/v1/conversations/{cid}/message/?stream=true"
    return follow(client, "POST", url, data={"content": "hello"})


def _resume(client: httpx.Client, base: str, cid: str, sid: str, **kwargs) -> Iterator[tuple]:
    return follow(client, "GET", f"{base}/api/v1/conversations/{cid}/resume/{sid}", **kwargs)


def test_embedded_serve_streams_and_a_second_client_resumes(tmp_path):
    env = {
        "TURNSTREAM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/ts.db",
        "TURNSTREAM_DATA_DIR": str(tmp_path / "data"),
        "TURNSTREAM_REDIS_URL": "",
        "TURNSTREAM_DEMO_WORDS": "25",
        "TURNSTREAM_DEMO_DELAY_MS": "30",
    }
    with Server(env, tmp_path / "serve.log") as server:
        token = re.search(r"ts_[A-Za-z0-9_-]+", server.output()).group(0)
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            assert client.get(f"{server.url}/api/v1/conversations").json() == {
                "items": [],
                "total": 0,
            }
            cid = _conversation(client, server.url)
            first_client = _post_stream(client, server.url, cid)
            seen = [next(first_client)]
            sid = seen[0][2]["sessionId"]
            resumed = list(_resume(client, server.url, cid, sid, params={"cursor": seen[0][0]}))
            seen += list(first_client)
    assert resumed == seen[1:]
    assert [data["seq"] for _id, _type, data in seen] == list(range(1, len(seen) + 1))
    assert [t for _id, t, _data in seen].count("end") == 1 and seen[-1][1] == "end"
    text = "".join(data["text"] for _id, t, data in seen if t == "delta")
    assert len(text.split()) == 25


@pytest.fixture
def production(cluster):
    """API A and API B and one worker."""
    deployment = cluster()
    a, b = deployment.apis(2)
    processes = {"a": a, "b": b, "worker": deployment.worker()}
    return processes, deployment.token()


def test_start_on_one_api_process_and_resume_on_another(production):
    processes, headers = production
    a, b = processes["a"].url, processes["b"].url
    with httpx.Client(headers=headers, timeout=30) as client:
        cid = _conversation(client, a)
        dropped = _post_stream(client, a, cid)
        assembled = [next(dropped) for _ in range(8)]
        dropped.close()  # the client goes away mid-reply
        sid = assembled[0][2]["sessionId"]
        assembled += list(_resume(client, b, cid, sid, headers={"Last-Event-ID": assembled[-1][0]}))
        full = list(_resume(client, b, cid, sid))
        messages = client.get(f"{b}/api/v1/conversations/{cid}/messages").json()["items"]
    assert assembled == full
    assert [data["seq"] for _id, _type, data in full] == list(range(1, len(full) + 1))
    assert full[-1][2]["status"] == "completed"
    text = "".join(data["text"] for _id, t, data in full if t == "delta")
    assert messages[-1]["content"] == text and len(text.split()) == 120


def test_sigkilled_worker_ends_the_run_with_error_within_10_seconds(cluster):
    deployment = cluster()
    a, worker, headers = deployment.api().url, deployment.worker(), deployment.token()
    with httpx.Client(headers=headers, timeout=30) as client:
        cid = _conversation(client, a)
        stream = _post_stream(client, a, cid)
        seen = [next(stream) for _ in range(10)]
        worker.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        seen += list(stream)  # the client is still streaming: it must see the end
        ended_after = time.monotonic() - killed_at
        sid = seen[0][2]["sessionId"]
        run = client.get(f"{a}/api/v1/conversations/{cid}/runs/{sid}").json()
        messages = client.get(f"{a}/api/v1/conversations/{cid}/messages").json()["items"]
    assert ended_after < 10
    assert run["status"] == "error"
    types = [t for _id, t, _data in seen]
    assert types[-2:] == ["error", "end"] and types.count("end") == 1
    assert seen[-2][2]["code"] == "worker_lost"
    assert seen[-1][2]["status"] == "error"
    partial = "".join(data["text"] for _id, t, data in seen if t == "delta")
    assert messages[-1]["status"] == "error" and messages[-1]["content"] == partial
    assert 0 < len(partial.split()) < 120


def test_sigkilled_api_process_mid_stream_the_client_resumes_on_another(production):
    processes, headers = production
    a, b = processes["a"], processes["b"].url
    with httpx.Client(headers=headers, timeout=30) as client:
        cid = _conversation(client, a.url)
        stream = _post_stream(client, a.url, cid)
        assembled = [next(stream) for _ in range(8)]
        a.signal(signal.SIGKILL)
        killed_at_ms = time.time_ns() // 1_000_000
        with pytest.raises(httpx.TransportError):  # the client sees its connection fail
            for event in stream:  # what was already on the wire still counts
                assembled.append(event)
        assert a.proc.wait(5) == -signal.SIGKILL
        sid = assembled[0][2]["sessionId"]
        assembled += list(_resume(client, b, cid, sid, headers={"Last-Event-ID": assembled[-1][0]}))
        full = list(_resume(client, b, cid, sid))
        run = client.get(f"{b}/api/v1/conversations/{cid}/runs/{sid}").json()
        messages = client.get(f"{b}/api/v1/conversations/{cid}/messages").json()["items"]
    assert assembled == full
    assert [data["seq"] for _id, _type, data in full] == list(range(1, len(full) + 1))
    assert [t for _id, t, _data in full].count("end") == 1
    assert full[-1][2]["ts"] > killed_at_ms  # the run was still going when A died
    assert run["status"] == "completed" and full[-1][2]["status"] == "completed"
    text = "".join(data["text"] for _id, t, data in full if t == "delta")
    assert messages[-1]["content"] == text and len(text.split()) == 120
