"""Runs across real processes: embedded `serve`, and API A + API B + a worker in production mode."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest
from httpx_sse import connect_sse
from servers import Process, Server, create_token


def _sse(client: httpx.Client, method: str, url: str, **kwargs):
    """Iterate (id, event, data) of a live SSE response, skipping `: ping` comments."""
    with connect_sse(client, method, url, **kwargs) as source:
        assert source.response.status_code == 200, source.response.read()
        for event in source.iter_sse():
            if event.data:
                yield event.id, event.event, json.loads(event.data)


def _conversation(client: httpx.Client, base: str) -> str:
    response = client.post(f"{base}/api/v1/conversations")
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_embedded_serve_streams_and_a_second_client_resumes(tmp_path):
    env = {
        "TURNSTREAM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/ts.db",
        "TURNSTREAM_DATA_DIR": str(tmp_path / "data"),
        "TURNSTREAM_REDIS_URL": "",
        "TURNSTREAM_DEMO_WORDS": "25",
        "TURNSTREAM_DEMO_DELAY_MS": "30",
    }
    server = Server(env, tmp_path / "serve.log")
    try:
        server.wait_ready()
        token = re.search(r"ts_[A-Za-z0-9_-]+", server.output()).group(0)
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            assert client.get(f"{server.url}/api/v1/conversations").json() == {
                "items": [],
                "total": 0,
            }
            cid = _conversation(client, server.url)
            first_client = _sse(
                client,
                "POST",
                f"{server.url}/api/v1/conversations/{cid}/message/?stream=true",
                data={"content": "hello"},
            )
            seen = [next(first_client)]
            sid = seen[0][2]["sessionId"]
            resumed = list(
                _sse(
                    client,
                    "GET",
                    f"{server.url}/api/v1/conversations/{cid}/resume/{sid}",
                    params={"cursor": seen[0][0]},
                )
            )
            seen += list(first_client)
    finally:
        server.stop()
    assert resumed == seen[1:]
    assert [data["seq"] for _id, _type, data in seen] == list(range(1, len(seen) + 1))
    assert [t for _id, t, _data in seen].count("end") == 1 and seen[-1][1] == "end"
    text = "".join(data["text"] for _id, t, data in seen if t == "delta")
    assert len(text.split()) == 25


@pytest.fixture
def production(tmp_path, redis_url, postgres_url):
    """API A and API B (`serve --no-worker`) and one `turnstream worker`, on Redis + PostgreSQL."""
    env = {
        "TURNSTREAM_REDIS_URL": redis_url,
        "TURNSTREAM_DATABASE_URL": postgres_url,
        "TURNSTREAM_DEMO_WORDS": "120",
        "TURNSTREAM_DEMO_DELAY_MS": "40",
        "TURNSTREAM_LEASE_SECONDS": "3",
        "TURNSTREAM_REAPER_INTERVAL": "0.5",
        "TURNSTREAM_QUEUE_NAME": f"turnstream:test:{tmp_path.name}",
    }
    migrate = subprocess.run(
        [sys.executable, "-m", "turnstream", "migrate"],
        env={**__import__("os").environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert migrate.returncode == 0, migrate.stderr
    processes = {
        "a": Server(env, tmp_path / "a.log", "--no-worker"),
        "b": Server(env, tmp_path / "b.log", "--no-worker"),
        "worker": Process(["worker"], env, tmp_path / "worker.log"),
    }
    try:
        processes["a"].wait_ready()
        processes["b"].wait_ready()
        token = create_token(postgres_url, "alice")
        yield processes, {"Authorization": f"Bearer {token}"}
    finally:
        for process in processes.values():
            process.stop()


def test_start_on_one_api_process_and_resume_on_another(production):
    processes, headers = production
    a, b = processes["a"].url, processes["b"].url
    with httpx.Client(headers=headers, timeout=30) as client:
        cid = _conversation(client, a)
        dropped = _sse(
            client,
            "POST",
            f"{a}/api/v1/conversations/{cid}/message/?stream=true",
            data={"content": "hello"},
        )
        assembled = [next(dropped) for _ in range(8)]
        dropped.close()  # the client goes away mid-reply
        sid = assembled[0][2]["sessionId"]
        assembled += list(
            _sse(
                client,
                "GET",
                f"{b}/api/v1/conversations/{cid}/resume/{sid}",
                headers={"Last-Event-ID": assembled[-1][0]},
            )
        )
        full = list(_sse(client, "GET", f"{b}/api/v1/conversations/{cid}/resume/{sid}"))
        messages = client.get(f"{b}/api/v1/conversations/{cid}/messages").json()["items"]
    assert assembled == full
    assert [data["seq"] for _id, _type, data in full] == list(range(1, len(full) + 1))
    assert full[-1][2]["status"] == "completed"
    text = "".join(data["text"] for _id, t, data in full if t == "delta")
    assert messages[-1]["content"] == text and len(text.split()) == 120


def test_sigkilled_worker_ends_the_run_with_error_within_10_seconds(production):
    processes, headers = production
    a = processes["a"].url
    with httpx.Client(headers=headers, timeout=30) as client:
        cid = _conversation(client, a)
        stream = _sse(
            client,
            "POST",
            f"{a}/api/v1/conversations/{cid}/message/?stream=true",
            data={"content": "hello"},
        )
        seen = [next(stream) for _ in range(10)]
        processes["worker"].signal(signal.SIGKILL)
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
