"""The production topology, for real, on loopback, while two of its processes go away.

Two `serve --no-worker`, two `turnstream worker`, the test's own `redis-server`
(AOF, `appendfsync always`) and a fresh PostgreSQL database migrated with
`turnstream migrate`. 50 clients, one conversation each, send a message at
once, half through each API process, and follow the reply. Each client
switches process once mid-stream, resuming from its last id. Halfway through,
one worker is SIGKILLed and API A is SIGTERMed: A's clients get the
`server_shutdown` notice (or a dropped connection) and resume on B, the killed
worker's runs end with `worker_lost`, the others complete. (A first, then, once
it has exited, the worker: so that every run is ended, and counted, by a process
that is still there at the end.)

Then: every run has ended; every client's events equal the full replay from
`0-0` (seq 1..n, one `end`, nothing lost or doubled); every conversation holds
its question and one reply, the one the client assembled; and the `/metrics`
of the surviving processes account for it: the runs by status, the lost
worker's runs reaped, and every resume B answered.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest
from helpers import free_port, wait_until
from prometheus_client.parser import text_string_to_metric_families
from sse import SSEEvent, frame_ends, parse_sse

pytestmark = pytest.mark.on_cluster_too  # and once more on a Redis Cluster (conftest.py)

CONVERSATIONS = 50
USERS = 5
WORDS = 120  # 50 ms apart: a run lasts about 6 s, more under this load
HALFWAY = 30  # events every client has seen when the two processes go away
CONNECTIONS = 40  # per client: a bound, never reached
SEED = 15


@dataclass
class Tab:
    """One client: a conversation, its message, and the events it assembled."""

    cid: str
    headers: dict[str, str]
    api: int  # the API process it talks to now (0: A, 1: B)
    switch_at: int  # after this many events it goes over to the other process
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    sid: str | None = None
    events: list[SSEEvent] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    drops: list[str] = field(default_factory=list)
    full: list[SSEEvent] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        return bool(self.events) and self.events[-1].event == "end"


class Fleet:
    def __init__(self, http: httpx.AsyncClient, apis: list[str]) -> None:
        self.http, self.apis = http, apis
        self.tally: Counter[str] = Counter()
        # Resumes answered, as the metrics count them: (process, cursor kind, status).
        self.resumes: Counter[tuple[int, str, int]] = Counter()
        self.halfway = asyncio.Event()  # every client has seen HALFWAY events
        self._past_halfway = 0

    async def follow(self, tab: Tab) -> None:
        """Read the run to its end, switching process as planned and whenever cut off."""
        for _ in range(CONNECTIONS):
            planned = await self._connect(tab)
            if tab.ended:
                return
            tab.api = 1 - tab.api  # a planned switch, or resume on the other process
            self.tally["switch" if planned else "resume after a cut"] += 1
            if not planned:
                await asyncio.sleep(0.2)  # a client's back-off: behaviour, not a wait
        raise AssertionError(f"{tab.cid}: no end after {CONNECTIONS} connections")

    async def _connect(self, tab: Tab) -> bool:
        """One connection; True if the client left it on purpose (its planned switch)."""
        try:
            method, url, options = self._request(tab)
            async with self.http.stream(method, url, **options) as response:
                if method == "GET":
                    kind = "last_event_id" if tab.events else "start"
                    self.resumes[(tab.api, kind, response.status_code)] += 1
                if response.status_code != 200:
                    tab.drops.append(str(response.status_code))
                    return False
                tab.sid = tab.sid or response.headers["x-session-id"]
                return await self._read(tab, response)
        except httpx.TransportError as exc:
            tab.drops.append(type(exc).__name__)
            return False

    def _request(self, tab: Tab) -> tuple[str, str, dict]:
        base = f"{self.apis[tab.api]}/api/v1/conversations/{tab.cid}"
        if tab.sid is None:  # the message (again: its Idempotency-Key starts no second run)
            headers = {**tab.headers, "Idempotency-Key": tab.key}
            return ("POST", f"{base}/message/", {"data": {"content": "hello"}, "headers": headers})
        headers = dict(tab.headers)
        if tab.events:
            headers["Last-Event-ID"] = tab.events[-1].id
        return ("GET", f"{base}/resume/{tab.sid}", {"headers": headers})

    async def _read(self, tab: Tab, response: httpx.Response) -> bool:
        buffer = b""
        async for chunk in response.aiter_raw():
            buffer += chunk
            ends = frame_ends(buffer)
            if not ends:
                continue
            frames, buffer = parse_sse(buffer[: ends[-1]].decode()), buffer[ends[-1] :]
            for event in frames:
                if not event.id:  # the server's notice: it goes away, the run goes on
                    tab.notices.append(event.data["code"])
                    continue
                tab.events.append(event)
                if len(tab.events) == HALFWAY:
                    self._past_halfway += 1
                    if self._past_halfway == CONVERSATIONS:
                        self.halfway.set()
                if tab.switch_at and len(tab.events) >= tab.switch_at and not tab.ended:
                    tab.switch_at = 0
                    return True
        return False


async def _open(http: httpx.AsyncClient, apis: list[str], tokens: list[dict]) -> list[Tab]:
    rng = random.Random(SEED)
    tabs = []
    for i in range(CONVERSATIONS):
        headers = tokens[i % USERS]
        created = await http.post(f"{apis[i % 2]}/api/v1/conversations", headers=headers)
        assert created.status_code == 201, created.text
        tabs.append(Tab(created.json()["id"], headers, i % 2, rng.randint(5, HALFWAY - 5)))
    return tabs


async def _close(fleet: Fleet, tab: Tab) -> None:
    """The full replay from 0-0 and the stored messages, from B (the surviving process)."""
    url = f"{fleet.apis[1]}/api/v1/conversations/{tab.cid}"
    response = await fleet.http.get(f"{url}/resume/{tab.sid}", headers=tab.headers)
    fleet.resumes[(1, "start", response.status_code)] += 1
    assert response.status_code == 200, response.text
    tab.full = parse_sse(response.text)
    messages = await fleet.http.get(f"{url}/messages", headers=tab.headers)
    tab.messages = messages.json()["items"]


async def _storm(deployment, apis, workers, tokens) -> tuple[list[Tab], Fleet, dict]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        fleet = Fleet(http, [api.url for api in apis])
        tabs = await _open(http, fleet.apis, tokens)
        started = time.monotonic()
        following = asyncio.gather(*(fleet.follow(tab) for tab in tabs))
        halfway = asyncio.ensure_future(fleet.halfway.wait())
        await asyncio.wait([following, halfway], timeout=30, return_when="FIRST_COMPLETED")
        if following.done():
            following.result()  # a client failed: its error
        assert halfway.done(), f"the runs did not get going: {[len(t.events) for t in tabs]}"
        times = {"halfway": time.monotonic() - started}
        apis[0].signal(signal.SIGTERM)
        await asyncio.to_thread(apis[0].proc.wait, 10)
        times["A exited"] = time.monotonic() - started
        workers[0].signal(signal.SIGKILL)
        times["killed (epoch ms)"] = time.time() * 1000  # ms, as the events' `ts`
        await asyncio.wait_for(following, 60)
        times["all ended"] = time.monotonic() - started
        await asyncio.gather(*(_close(fleet, tab) for tab in tabs))
    return tabs, fleet, times


def test_two_apis_two_workers_fifty_streams_one_worker_killed_one_api_stopped(cluster, own_redis):
    own_redis.stop()
    own_redis.fsync = "always"  # what the Deploy section recommends
    own_redis.start()
    deployment = cluster(
        TURNSTREAM_REDIS_URL=own_redis.url,
        TURNSTREAM_DEMO_WORDS=str(WORDS),
        TURNSTREAM_DEMO_DELAY_MS="50",
        TURNSTREAM_RUNS_PER_MINUTE="1000",
        TURNSTREAM_MAX_ACTIVE_RUNS="100",
        TURNSTREAM_CLAIM_SECONDS="3",
        TURNSTREAM_DRAIN_SECONDS="5",
    )
    apis = deployment.apis(2)
    ports = [free_port(), free_port()]  # each worker's metrics
    workers = [deployment.worker(TURNSTREAM_WORKER_METRICS_PORT=str(p)) for p in ports]
    tokens = [deployment.token(f"user{u}") for u in range(USERS)]

    tabs, fleet, times = asyncio.run(_storm(deployment, apis, workers, tokens))
    statuses = Counter(t.full[-1].data["status"] for t in tabs)
    print(f"\ntimes (s): {times}; runs: {dict(statuses)}; clients: {dict(fleet.tally)}")
    print(f"notices: {Counter(n for t in tabs for n in t.notices)}, "
          f"cuts: {Counter(d for t in tabs for d in t.drops)}")  # fmt: skip

    for tab in tabs:
        assert tab.events == tab.full, tab.cid  # nothing lost, nothing twice
        assert [e.data["seq"] for e in tab.full] == list(range(1, len(tab.full) + 1))
        types = [e.event for e in tab.full]
        assert types.count("end") == 1 and types[-1] == "end"
        end = tab.full[-1].data
        if end["status"] == "error":
            assert tab.full[-2].data["code"] == "worker_lost", tab.full[-2]
        else:
            assert end["status"] == "completed"
        text = "".join(e.data["text"] for e in tab.full if e.event == "delta")
        assert [m["role"] for m in tab.messages] == ["user", "assistant"]  # stored once
        reply = tab.messages[1]
        stored_status = {"completed": "complete"}.get(end["status"], end["status"])
        assert (reply["id"], reply["status"], reply["content"]) == (
            end["messageId"],
            stored_status,
            text,
        )
    assert sum(statuses.values()) == CONVERSATIONS
    assert statuses["error"] >= 1, "the killed worker held no run"
    assert statuses["completed"] >= 1, "the surviving worker held no run"
    assert fleet.tally["switch"] == CONVERSATIONS  # each client switched once, as planned
    on_a = [t for t in tabs if t.notices or t.drops]
    assert on_a, "no client was on A when it went away"
    assert all(set(t.notices) <= {"server_shutdown"} for t in tabs)
    assert apis[0].proc.wait(10) in (0, -signal.SIGTERM)
    for process in (apis[1], workers[1]):
        assert "Traceback" not in process.output(), process.output()[-3000:]
    assert "ERROR" not in apis[0].output(), apis[0].output()[-3000:]

    _check_metrics(
        [apis[1].url, f"http://127.0.0.1:{ports[1]}"], fleet, tabs, times["killed (epoch ms)"]
    )


def _check_metrics(survivors: list[str], fleet: Fleet, tabs: list[Tab], killed_at: float) -> None:
    """B's and the surviving worker's /metrics, summed, against what the clients saw.

    Runs the killed worker ended itself, before it was killed, were counted in its own
    metrics, which went with it; those ended after it by a reaper are counted here.
    """

    def worker(tab: Tab) -> str:
        return next(e.data["worker"] for e in tab.full if e.event == "start")

    killed = {worker(t) for t in tabs if t.full[-1].data["status"] == "error"}
    # A reaper ends a lost run a lease (3 s) after its last renewal, so not within 1 s.
    before = [t for t in tabs if worker(t) in killed and t.full[-1].data["ts"] < killed_at + 1000]
    statuses = Counter(t.full[-1].data["status"] for t in tabs if t not in before)
    reaped = sum(worker(t) in killed for t in tabs if t not in before)
    if httpx.get(f"{survivors[0]}/metrics").status_code == 404:
        print("no /metrics on this build: the metrics are not checked")
        return

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        total: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        for base in survivors:
            text = httpx.get(f"{base}/metrics", timeout=5).text
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    total[(sample.name, tuple(sorted(sample.labels.items())))] += sample.value
        return total

    def value(name: str, **labels: str) -> float:
        return scraped.get((name, tuple(sorted(labels.items()))), 0.0)

    def settled() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        numbers = scrape()  # the clients are done; B's last streams may still be closing
        return numbers if numbers.get(("turnstream_sse_clients", ()), 0) == 0 else None

    scraped = wait_until(settled, timeout=5, what="no SSE client left on B")
    for status, count in statuses.items():
        assert value("turnstream_runs_total", status=status) == count, status
    total = sum(v for (n, _), v in scraped.items() if n == "turnstream_runs_total")
    assert total == CONVERSATIONS - len(before)
    assert value("turnstream_reaper_actions_total", action="worker_lost") == reaped
    on_b = {(kind, status): n for (api, kind, status), n in fleet.resumes.items() if api == 1}
    for (kind, status), count in on_b.items():
        assert value("turnstream_resumes_total", cursor=kind, status=str(status)) == count
    assert value("turnstream_active_runs") == value("turnstream_queued_runs") == 0
    print(f"metrics of B and the surviving worker: resumes on B {on_b}, runs {dict(statuses)}")
