"""Redis restarted mid-run (a real `redis-server` with AOF on; on the cluster's run, every
master of a cluster of three): nothing hangs, nothing is lost.

Two clients follow one run, on two API processes, while Redis goes away and
comes back. Each behaves as a frontend would: on a broken stream, a 503, or the
API's in-band `redis_unavailable` notice, it waits and resumes from the last id
it saw, on either process.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from helpers import wait_until
from sse import follow

pytestmark = pytest.mark.on_cluster_too  # and once more on a Redis Cluster (conftest.py)

TIMEOUT = 60
WORDS = 150


class Reader(threading.Thread):
    """A client that reads one run to its `end`, resuming whenever its stream is cut."""

    def __init__(self, client: httpx.Client, bases: list[str], cid: str, sid: str, first) -> None:
        super().__init__()
        self.client, self.bases, self.cid, self.sid, self.stream = client, bases, cid, sid, first
        self.seen: list[tuple] = []
        self.interruptions: list[str] = []

    def run(self) -> None:
        for attempt in range(1, 100):
            try:
                for event in self.stream:
                    if "seq" not in event[2]:  # the API's notice that it lost Redis
                        self.interruptions.append(event[2]["code"])
                        continue
                    self.seen.append(event)
                    if event[1] == "end":
                        return
            except (httpx.HTTPError, AssertionError) as exc:  # a cut stream or a 503
                self.interruptions.append(type(exc).__name__)
            time.sleep(0.3)  # a frontend's back-off before it resumes: behaviour, not a wait
            base = self.bases[attempt % len(self.bases)]
            self.stream = follow(
                self.client,
                "GET",
                f"{base}/api/v1/conversations/{self.cid}/resume/{self.sid}",
                headers={"Last-Event-ID": self.seen[-1][0]} if self.seen else {},
            )


@pytest.mark.parametrize("how", ["restart", "crash"])
def test_redis_going_away_mid_run_loses_nothing(own_redis, cluster, how):
    """`restart`: a clean shutdown and start. `crash`: SIGKILL, with `appendfsync always`."""
    if how == "crash":
        own_redis.stop()
        own_redis.fsync = "always"  # with `everysec` a crash may lose the last second
        own_redis.start()
    deployment = cluster(
        TURNSTREAM_REDIS_URL=own_redis.url,
        TURNSTREAM_DEMO_WORDS=str(WORDS),
        TURNSTREAM_DEMO_DELAY_MS="40",
    )
    a, b = deployment.apis(2)
    deployment.worker()
    with httpx.Client(headers=deployment.token(), timeout=TIMEOUT) as client:
        cid = client.post(f"{a.url}/api/v1/conversations").json()["id"]
        earlier = client.post(
            f"{a.url}/api/v1/conversations/{cid}/message/?stream=false", data={"content": "one"}
        )
        assert earlier.status_code == 200, earlier.text
        posted = follow(
            client,
            "POST",
            f"{a.url}/api/v1/conversations/{cid}/message/?stream=true",
            data={"content": "two"},
        )
        first = next(posted)
        sid = first[2]["sessionId"]

        def posted_rest():
            yield first
            yield from posted

        readers = [
            Reader(client, [a.url, b.url], cid, sid, posted_rest()),
            Reader(client, [b.url, a.url], cid, sid, _resume(client, b.url, cid, sid)),
        ]
        for reader in readers:
            reader.start()
        _wait_for_deltas(client, a.url, cid, sid)
        went_away_ms = time.time_ns() // 1_000_000
        if how == "crash":
            own_redis.kill()
        else:
            own_redis.stop()
        own_redis.start()
        back_ms = time.time_ns() // 1_000_000
        for reader in readers:
            reader.join(TIMEOUT)
            assert not reader.is_alive(), f"a client still has no end: {reader.interruptions}"
        # The whole run from its start, as a client arriving now reads it; from one process,
        # which may still be reconnecting its own notices (then it says so, and is asked again).
        latecomer = Reader(client, [b.url], cid, sid, _resume(client, b.url, cid, sid))
        latecomer.run()
        full = latecomer.seen
        messages = client.get(f"{b.url}/api/v1/conversations/{cid}/messages").json()["items"]
        run = client.get(f"{b.url}/api/v1/conversations/{cid}/runs/{sid}").json()

    for reader in readers:
        assert reader.seen == full  # every event once, in order, across the outage
    assert run["startedAt"] < went_away_ms and back_ms < run["endedAt"]  # an outage mid-run
    assert [data["seq"] for _id, _t, data in full] == list(range(1, len(full) + 1))
    assert [t for _id, t, _d in full].count("end") == 1
    # The run itself rode out the outage: complete, every word stored.
    assert run["status"] == "completed"
    text = "".join(data["text"] for _id, t, data in full if t == "delta")
    assert len(text.split()) == WORDS
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0]["content"] == "one" and messages[1]["status"] == "complete"
    assert messages[3]["content"] == text and messages[3]["status"] == "complete"


def _resume(client: httpx.Client, base: str, cid: str, sid: str):
    return follow(client, "GET", f"{base}/api/v1/conversations/{cid}/resume/{sid}")


def _wait_for_deltas(client: httpx.Client, base: str, cid: str, sid: str) -> None:
    """Until the run is well under way (its cursor has moved past a few deltas)."""

    def under_way() -> bool:
        run = client.get(f"{base}/api/v1/conversations/{cid}/runs/{sid}").json()
        return (
            run["status"] == "running" and int(run["cursor"].split("-")[0]) > run["startedAt"] + 500
        )

    wait_until(under_way, timeout=20, what=f"run {sid} to be 0.5 s under way")
