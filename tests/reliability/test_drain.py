"""A `serve --no-worker` SIGTERMed mid-stream: its streams end with a notice, it exits.

Real processes (sse-starlette's shutdown flag is process-wide): API A and API B
and a worker. Three clients follow one run on A: the message's own stream, a
resume, and the AI SDK's reconnect. A gets SIGTERM. Each stream ends at once
with the `server_shutdown` notice (no `id`; in the UI stream an `error` chunk
and no `[DONE]`), A takes no new connection and exits within its drain time,
and the native clients resume on B and get exactly the rest.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator

import httpx
from helpers import wait_until
from sse import follow

DRAIN = 4
WORDS = 150  # 40 ms apart: the run lasts about 6 s, and goes on while A shuts down


class Reader(threading.Thread):
    """Reads one stream until the server ends it; keeps what came and how it ended."""

    def __init__(self, events: Iterator[tuple]) -> None:
        super().__init__(daemon=True)
        self.events = events
        self.seen: list[tuple] = []
        self.failure: Exception | None = None
        self.ended_at: float | None = None

    def run(self) -> None:
        try:
            self.seen.extend(self.events)
        except Exception as exc:  # reported by the test
            self.failure = exc
        self.ended_at = time.monotonic()


class LineReader(Reader):
    """The AI SDK's stream: its `data:` lines, as sent."""

    def __init__(self, client: httpx.Client, url: str) -> None:
        super().__init__(self._lines(client, url))

    @staticmethod
    def _lines(client: httpx.Client, url: str) -> Iterator[tuple]:
        with client.stream("GET", url) as response:
            assert response.status_code == 200, response.read()
            for line in response.iter_lines():
                if line.startswith("data: "):
                    yield ("", "data", line.removeprefix("data: "))


def test_a_sigtermed_api_process_tells_its_streams_to_reconnect_and_exits(cluster):
    deployment = cluster(
        TURNSTREAM_DRAIN_SECONDS=str(DRAIN),
        TURNSTREAM_DEMO_WORDS=str(WORDS),
        TURNSTREAM_PING_SECONDS="1",
    )
    a, b = deployment.apis(2)
    deployment.worker()
    headers = deployment.token()
    with httpx.Client(headers=headers, timeout=30) as client:
        cid = client.post(f"{a.url}/api/v1/conversations").json()["id"]
        url = f"{a.url}/api/v1/conversations/{cid}"
        posted = Reader(follow(client, "POST", f"{url}/message/", data={"content": "hi"}))
        posted.start()
        wait_until(lambda: posted.seen, timeout=10, what="the run's first event")
        sid = posted.seen[0][2]["sessionId"]
        resumed = Reader(follow(client, "GET", f"{url}/resume/{sid}"))
        ui = LineReader(client, f"{a.url}/api/v1/chat/{cid}/stream")
        resumed.start()
        ui.start()
        readers = [posted, resumed, ui]
        wait_until(lambda: all(len(r.seen) >= 5 for r in readers), timeout=10, what="5 events each")

        a.signal(signal.SIGTERM)
        signalled = time.monotonic()
        for reader in readers:
            reader.join(DRAIN + 5)
            assert not reader.is_alive(), "a stream outlived the drain"
        with_notice = [r.ended_at - signalled for r in readers if r.ended_at is not None]
        # uvicorn closes its listening socket on its next tick (0.1 s), maybe after the notices.
        refused = wait_until(lambda: _refuses_connections(a.url), timeout=2, what="A to refuse")
        exit_code = a.proc.wait(DRAIN + 5)
        exited_after = time.monotonic() - signalled

        # The native clients: the last thing each got is the notice, and no `end` before it.
        assembled = {}
        for reader in (posted, resumed):
            assert reader.failure is None, reader.failure  # ended by the server, not cut
            *events, (notice_id, notice_type, notice) = reader.seen
            # No `id` of its own: an SSE client's last event id stays that of the event before.
            assert (notice_id, notice_type) == (events[-1][0], "error")
            assert notice["code"] == "server_shutdown" and "seq" not in notice
            assert "end" not in [t for _id, t, _data in events]
            rest = follow(client, "GET", f"{b.url}/api/v1/conversations/{cid}/resume/{sid}",
                          headers={"Last-Event-ID": events[-1][0]})  # fmt: skip
            assembled[reader] = events + list(rest)
        full = list(follow(client, "GET", f"{b.url}/api/v1/conversations/{cid}/resume/{sid}"))
        messages = client.get(f"{b.url}/api/v1/conversations/{cid}/messages").json()["items"]

    assert ui.failure is None, ui.failure
    chunks = [data for _id, _type, data in ui.seen]
    assert "[DONE]" not in chunks
    assert json.loads(chunks[-1]) == {
        "type": "error",
        "errorText": "Server shutting down; reconnect.",
    }

    print(f"\nstreams ended {[f'{t:.2f}' for t in with_notice]} s after SIGTERM; "
          f"A exited after {exited_after:.2f} s with {exit_code}")  # fmt: skip
    assert max(with_notice) < 2, with_notice  # sse-starlette looks every 0.5 s
    assert refused
    assert exit_code in (0, -signal.SIGTERM), exit_code
    assert exited_after < DRAIN, exited_after  # nothing else was left to drain
    log = a.output()
    assert not any(w in log for w in ("Traceback", "ERROR", "Cancel")), log[-3000:]

    for events in assembled.values():
        assert events == full
    assert [data["seq"] for _id, _type, data in full] == list(range(1, len(full) + 1))
    assert [t for _id, t, _data in full].count("end") == 1
    assert full[-1][2]["status"] == "completed"  # the run went on, on its worker
    text = "".join(data["text"] for _id, t, data in full if t == "delta")
    assert messages[-1]["content"] == text and len(text.split()) == WORDS


def _refuses_connections(base: str) -> bool:
    """Whether a new connection to `base` is refused (the listening socket is closed)."""
    try:
        httpx.get(f"{base}/health", timeout=5)
    except httpx.ConnectError:
        return True
    return False
