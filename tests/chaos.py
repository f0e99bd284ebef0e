"""Browser tabs that keep losing their connection while replies stream, and resume.

Each client posts messages and, while each reply streams, keeps losing the connection
at random points: before the response headers, right after them, in the middle of an
SSE frame, or between two frames. Each time it resumes from the last id it saw, by
`Last-Event-ID` or `?cursor=`, on a randomly chosen API process; sometimes only once
the run has ended. Used by tests/reliability/test_resume_chaos.py (one Redis) and
tests/cluster/ (a Redis Cluster).

The decisions of each client follow from the seed; the interleaving of the clients
does not. Reproduce with `TURNSTREAM_TEST_SEED=<seed>`.
"""

from __future__ import annotations

import asyncio
import enum
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from helpers import eventually
from sse import SSEEvent, frame_ends, parse_received

SEED = int(os.environ.get("TURNSTREAM_TEST_SEED") or 6_2026)
DROPS_PER_RUN = (9, 16)  # planned; a drop that would come after the `end` does not happen
MAX_FRAMES_KEPT = 5  # a between-events drop keeps 1..this many frames
MAX_BYTES_KEPT = 600  # a mid-event drop keeps 1..this many bytes (frames are ~100-170)
WAIT_FOR_END_SHARE = 0.04  # drops after which the client comes back only once the run ended
WORDS = 60  # the demo agent writes one every 25 ms: a run lasts about 1.5 s
LIVE = ("queued", "running")


class Drop(enum.StrEnum):
    BEFORE_HEADERS = "before_headers"  # the request went out; hung up before any response
    AFTER_HEADERS = "after_headers"  # status and headers read, not a byte of the body
    MID_EVENT = "mid_event"  # cut inside an SSE frame: the partial frame is thrown away
    BETWEEN_EVENTS = "between_events"  # cut right after a complete frame


@dataclass
class Tally:
    drops: Counter[Drop] = field(default_factory=Counter)
    resumes: Counter[str] = field(default_factory=Counter)  # how and where
    served: Counter[str] = field(default_factory=Counter)  # connections per API process


@dataclass
class Reply:
    """What one client has assembled of one run."""

    idempotency_key: str = field(default_factory=lambda: uuid.uuid4().hex)
    sid: str | None = None
    events: list[SSEEvent] = field(default_factory=list)
    connected_at: list[int] = field(default_factory=list)  # Unix ms; `end` has a ts too
    full: list[SSEEvent] = field(default_factory=list)  # a full replay after the end

    @property
    def done(self) -> bool:
        return bool(self.events) and self.events[-1].event == "end"


class Client:
    """One browser tab: posts messages and keeps losing its connection while replies stream."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        apis: list[str],
        headers: dict[str, str],
        cid: str,
        rng: random.Random,
        tally: Tally,
    ) -> None:
        self.http, self.apis, self.headers, self.cid = http, apis, headers, cid
        self.rng, self.tally = rng, tally
        self.last_api: str | None = None
        self.replies: list[Reply] = []
        self.messages: list[dict[str, Any]] = []  # the conversation, once every run has ended

    async def chat(self, runs: int) -> None:
        for turn in range(runs):
            reply = Reply()
            await self._assemble(reply, f"message {turn} of {self.cid}")
            reply.full = await self._full_replay(reply)
            self.replies.append(reply)
        response = await self.http.get(self._url("/messages"), headers=self.headers)
        assert response.status_code == 200, response.text
        self.messages = response.json()["items"]

    async def _assemble(self, reply: Reply, content: str) -> None:
        for _ in range(self.rng.randint(*DROPS_PER_RUN)):
            await self._connect(reply, content, self.rng.choice(list(Drop)))
            if reply.done:
                return
            if reply.sid is not None and self.rng.random() < WAIT_FOR_END_SHARE:
                await self._wait_ended(reply)
        await self._connect(reply, content, None)

    async def _connect(self, reply: Reply, content: str, drop: Drop | None) -> None:
        """One connection: cut as `drop` says, or read to the end (drop None)."""
        request = self._request(reply, content)
        if drop is Drop.BEFORE_HEADERS:
            await _send_and_hang_up(request)
            self.tally.drops[drop] += 1
            return
        response = await self.http.send(request, stream=True)
        try:
            assert response.status_code == 200, (response.status_code, await response.aread())
            reply.sid = reply.sid or response.headers["x-session-id"]
            if drop is Drop.AFTER_HEADERS:
                self.tally.drops[drop] += 1
                return
            received, hung_up = await _read_until(response, self._cut(drop))
        finally:
            await response.aclose()  # with body left unread, httpx closes the connection
        events, partial = parse_received(received)
        reply.events += events
        if not hung_up:  # the server ended the response: only ever right after `end`
            assert reply.done and not partial, f"seed {SEED}: {reply.sid} ended by {events[-1:]}"
        elif not reply.done:
            self.tally.drops[Drop.MID_EVENT if partial else Drop.BETWEEN_EVENTS] += 1

    def _cut(self, drop: Drop | None) -> Callable[[bytes], int | None]:
        """Where in the body this client goes away, once it has received that much."""
        if drop is Drop.MID_EVENT:
            budget = self.rng.randint(1, MAX_BYTES_KEPT)
            return lambda raw: budget if len(raw) >= budget else None
        if drop is Drop.BETWEEN_EVENTS:
            count = self.rng.randint(1, MAX_FRAMES_KEPT)
            return lambda raw: ends[count - 1] if len(ends := frame_ends(raw)) >= count else None
        return lambda raw: None

    def _request(self, reply: Reply, content: str) -> httpx.Request:
        api, previous = self.rng.choice(self.apis), self.last_api
        self.last_api = api
        self.tally.served[api] += 1
        if reply.sid is None:
            # Nothing came back yet, not even the session id: send the message (again).
            # The Idempotency-Key makes a retry return the run the first try started.
            if reply.connected_at:
                self.tally.resumes["message sent again"] += 1
            reply.connected_at.append(_now_ms())
            return self.http.build_request(
                "POST",
                self._url("/message/?stream=true", api),
                data={"content": content},
                headers={**self.headers, "Idempotency-Key": reply.idempotency_key},
            )
        reply.connected_at.append(_now_ms())
        self.tally.resumes["on another process" if api != previous else "on the same"] += 1
        headers, params = dict(self.headers), {}
        if not reply.events:
            self.tally.resumes["from the start"] += 1
        elif self.rng.random() < 0.5:
            headers["Last-Event-ID"] = reply.events[-1].id
            self.tally.resumes["Last-Event-ID"] += 1
        else:
            params["cursor"] = reply.events[-1].id
            self.tally.resumes["cursor"] += 1
        method = self.rng.choice(["GET", "POST"])  # SPEC §6 offers both
        url = self._url(f"/resume/{reply.sid}", api)
        return self.http.build_request(method, url, params=params, headers=headers)

    async def _wait_ended(self, reply: Reply) -> None:
        """Poll the run record until the run has ended (bounded)."""
        url = self._url(f"/runs/{reply.sid}")

        async def ended() -> bool:
            return (await self.http.get(url, headers=self.headers)).json()["status"] not in LIVE

        await eventually(ended, timeout=30, what=f"seed {SEED}: {reply.sid} to end")

    async def _full_replay(self, reply: Reply) -> list[SSEEvent]:
        response = await self.http.get(self._url(f"/resume/{reply.sid}"), headers=self.headers)
        assert response.status_code == 200, response.text
        events, partial = parse_received(response.content)
        assert partial == b""
        return events

    def _url(self, path: str, api: str | None = None) -> str:
        return f"{api or self.rng.choice(self.apis)}/api/v1/conversations/{self.cid}{path}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _send_and_hang_up(request: httpx.Request) -> None:
    """Send `request` on a socket of its own and close it before reading any response."""
    url = request.url
    head = f"{request.method} {url.raw_path.decode()} HTTP/1.1\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in request.headers.items())
    _reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(head.encode() + b"\r\n" + request.read())
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def _read_until(
    response: httpx.Response, cut: Callable[[bytes], int | None]
) -> tuple[bytes, bool]:
    """The body up to where `cut` says the client hangs up, and whether it did so
    (False: the server ended the response first)."""
    raw = b""
    async for chunk in response.aiter_raw():
        raw += chunk
        if (at := cut(raw)) is not None:
            return raw[:at], True
    return raw, False


async def storm(
    apis: list[str], tokens: list[dict[str, str]], tally: Tally, *, clients: int, runs: int
) -> list[Client]:
    """`clients` tabs, each with a conversation of its own (the users' tokens in turn),
    each sending `runs` messages one after another, all at once."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        tabs = []
        for i in range(clients):
            headers = tokens[i % len(tokens)]
            created = await http.post(f"{apis[0]}/api/v1/conversations", headers=headers)
            assert created.status_code == 201, created.text
            rng = random.Random(f"{SEED}:{i}")
            tabs.append(Client(http, apis, headers, created.json()["id"], rng, tally))
        await asyncio.gather(*(tab.chat(runs) for tab in tabs))
    return tabs


def lost_and_duplicated(clients: list[Client]) -> tuple[int, int]:
    """Events a client never assembled, and events it assembled twice, over every run."""
    lost = duplicated = 0
    for client in clients:
        for reply in client.replies:
            ids = [e.id for e in reply.events]
            lost += len({e.id for e in reply.full} - set(ids))
            duplicated += len(ids) - len(set(ids))
    return lost, duplicated
