"""Metrics and logs of real processes: `serve` with JSON log lines, and the metrics
of `turnstream worker --workers 2` summed on its own port."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
from helpers import free_port, wait_until
from prometheus_client.parser import text_string_to_metric_families
from servers import Process, Server, create_token

TESTS_DIR = str(Path(__file__).resolve().parent.parent)


def _value(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def test_serve_writes_json_lines_that_carry_the_request_and_run_ids(tmp_path):
    env = {
        "TURNSTREAM_REDIS_URL": "",  # embedded mode
        "TURNSTREAM_DATA_DIR": str(tmp_path / "data"),
        "TURNSTREAM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/ts.db",
        "TURNSTREAM_AGENT": "fake_agents:failing",
        "TURNSTREAM_LOG_FORMAT": "json",
        "PYTHONPATH": os.pathsep.join(filter(None, [TESTS_DIR, os.environ.get("PYTHONPATH")])),
    }
    with Server(env, tmp_path / "serve.log", "--log-level", "info") as server:
        token = create_token(env["TURNSTREAM_DATABASE_URL"], "alice")
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url, timeout=10) as http:
            cid = http.post("/api/v1/conversations", headers=auth).json()["id"]
            sent = http.post(
                f"/api/v1/conversations/{cid}/message/",
                headers={**auth, "X-Request-Id": "req-run-1"},
                data={"content": "hi"},
            )
            assert sent.headers["X-Request-Id"] == "req-run-1"
            sid = sent.headers["X-Session-Id"]
    lines = server.output().splitlines()
    # No log line in text form: uvicorn's own lines go through the JSON formatter too.
    assert not [line for line in lines if line.startswith(("INFO", "WARNING", "ERROR"))], lines
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    access = [
        line
        for line in logged
        if line["logger"] == "uvicorn.access" and line.get("request_id") == "req-run-1"
    ]
    assert len(access) == 1, logged
    assert (access[0]["user_id"], access[0]["conversation_id"]) == ("alice", cid)
    assert "POST /api/v1/conversations/" in access[0]["message"]
    failed = [line for line in logged if line["message"] == f"run {sid} failed"]
    assert len(failed) == 1, logged
    ids = (failed[0]["conversation_id"], failed[0]["session_id"], failed[0]["user_id"])
    assert ids == (cid, sid, "alice")
    assert failed[0]["request_id"] == "req-run-1"  # in-process: the request that started it
    assert "the model fell over" in failed[0]["exc"]


def test_the_workers_metrics_are_summed_on_the_worker_port(tmp_path, redis_url):
    port = free_port()
    env = {
        "TURNSTREAM_REDIS_URL": redis_url,
        "TURNSTREAM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/ts.db",
        "TURNSTREAM_QUEUE_NAME": f"turnstream:test:{tmp_path.name}",
        "TURNSTREAM_DEMO_WORDS": "5",
        "TURNSTREAM_DEMO_DELAY_MS": "10",
        "TURNSTREAM_WORKER_METRICS_PORT": str(port),
        "TURNSTREAM_METRICS_TOKEN": "scrape-me",
    }
    scraper = {"Authorization": "Bearer scrape-me"}
    worker_metrics = f"http://127.0.0.1:{port}/metrics"
    with Server(env, tmp_path / "api.log", "--no-worker") as server:
        worker = Process(["worker", "--workers", "2"], env, tmp_path / "worker.log")
        try:

            def answers() -> bool:
                try:
                    return httpx.get(worker_metrics, timeout=1).status_code == 401
                except httpx.HTTPError:
                    return False

            wait_until(answers, timeout=30, what="the worker's metrics port to answer 401")
            token = create_token(env["TURNSTREAM_DATABASE_URL"], "alice")
            auth = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=server.url, timeout=30) as http:
                for _ in range(3):
                    cid = http.post("/api/v1/conversations", headers=auth).json()["id"]
                    sent = http.post(
                        f"/api/v1/conversations/{cid}/message/?stream=false",
                        headers=auth,
                        data={"content": "hi"},
                    )
                    assert sent.status_code == 200, sent.text

                def idle() -> httpx.Response | None:
                    # The lease index is dropped just after the `end` a reply waits for
                    # (in another slot on a cluster): the gauge reaches 0 a moment later.
                    scraped = http.get("/metrics", headers=scraper)
                    return scraped if "turnstream_active_runs 0.0" in scraped.text else None

                api = wait_until(idle, timeout=10, what="turnstream_active_runs to be 0")
            workers = httpx.get(worker_metrics, headers=scraper, timeout=5)
        finally:
            worker.stop()
    assert workers.status_code == 200, workers.text
    # The runs ran in the worker processes, whichever of the two took each.
    assert _value(workers.text, "turnstream_runs_total", status="completed") == 3
    assert _value(workers.text, "turnstream_time_to_first_event_seconds_count") == 3
    assert api.status_code == 200
    assert _value(api.text, "turnstream_runs_total", status="completed") == 0
    assert "turnstream_active_runs 0.0" in api.text and "turnstream_queued_runs 0.0" in api.text
