"""`turnstream.client.AsyncClient` against a real `turnstream serve` (tests/client/conftest.py)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from client_support import WORDS, Served

from turnstream.client import ApiError, AsyncClient, Event, Retry

FRAME_END = re.compile(rb"\r\n\r\n")


class CutStream(httpx.AsyncByteStream):
    """An event stream that breaks with httpx.ReadError a few bytes into its frame number
    `after + 1`: the client has a half frame it must throw away."""

    def __init__(self, inner: httpx.AsyncByteStream, after: int) -> None:
        self.inner = inner
        self.after = after

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = b""
        async for chunk in self.inner:
            start = len(received)
            received += chunk
            ends = [match.end() for match in FRAME_END.finditer(received)]
            if len(ends) >= self.after and len(received) > ends[self.after - 1] + 10:
                yield received[start : ends[self.after - 1] + 10]
                raise httpx.ReadError("cut by the test")
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class Cutting(httpx.AsyncBaseTransport):
    """Real HTTP, but each of the first event streams is cut after `after[i]` frames."""

    def __init__(self, *after: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.after = list(after)
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = await self.inner.handle_async_request(request)
        is_stream = response.headers.get("content-type", "").startswith("text/event-stream")
        if not (is_stream and self.after):
            return response
        assert isinstance(response.stream, httpx.AsyncByteStream)
        cut = CutStream(response.stream, self.after.pop(0))
        return httpx.Response(response.status_code, headers=response.headers, stream=cut)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _assert_one_whole_run(events: list[Event]) -> None:
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    assert [event.type for event in events].count("end") == 1
    assert events[-1].type == "end"


async def test_read_errors_mid_frame_are_resumed_with_no_gap_and_no_repeat(served: Served, alice):
    cutting = Cutting(6, 3, 10)  # the POST, then the first two resumes
    async with AsyncClient(served.url, alice, retry=Retry(first=0.05), transport=cutting) as client:
        cid = (await client.create_conversation()).id
        events = [event async for event in client.send(cid, "cut me")]
        stored = (await client.messages(cid))[-1]

    _assert_one_whole_run(events)
    reply = "".join(event.text for event in events if event.type == "delta")
    assert reply == stored.content and len(reply.split()) == WORDS
    assert [r.method for r in cutting.requests] == ["POST", "POST", "GET", "GET", "GET", "GET"]
    cursors = [r.url.params["cursor"] for r in cutting.requests[2:5]]
    assert cursors == [events[5].id, events[8].id, events[18].id]


async def test_tool_steps_come_as_events(served: Served, alice):
    async with AsyncClient(served.url, alice) as client:
        cid = (await client.create_conversation()).id
        events = [event async for event in client.send(cid, "/tool 2+2")]
        stored = {message.id: message for message in await client.messages(cid)}

    _assert_one_whole_run(events)
    calls = [event.data for event in events if event.type == "tool_call"]
    results = [event.data for event in events if event.type == "tool_result"]
    assert calls and [r["id"] for r in results] == [c["id"] for c in calls]
    assert {"name", "arguments"} <= calls[0].keys() and "content" in results[0]
    # The run's final answer, stored under `end`'s messageId: the text after the tools.
    last_result = max(i for i, event in enumerate(events) if event.type == "tool_result")
    answer = "".join(event.text for event in events[last_result:] if event.type == "delta")
    assert answer and stored[events[-1].data["messageId"]].content == answer


async def test_active_session_task_status_stop_and_resume(served: Served, alice, bob):
    async with AsyncClient(served.url, alice) as client:
        cid = (await client.create_conversation()).id
        async with contextlib.aclosing(client.send(cid, "hello")) as stream:
            first = [await anext(stream) for _ in range(4)]
        session_id = first[0].data["sessionId"]

        active = await client.active_session(cid)
        status = await client.task_status(cid)
        assert active is not None and active.is_active and active.session_id == session_id
        assert status is not None and status.is_active

        resumed = client.resume(cid, session_id, cursor=first[-1].id)
        more = [await anext(resumed)]
        stopped = await client.stop(cid, session_id)
        assert (stopped.status, stopped.session_id) == ("cancelled", session_id)
        events = first + more + [event async for event in resumed]

        _assert_one_whole_run(events)
        assert events[-1].data["status"] == "cancelled"
        assert not (await client.task_status(cid)).is_active  # type: ignore[union-attr]
        with pytest.raises(ApiError) as foreign:
            async with AsyncClient(served.url, bob) as other:
                await other.active_session(cid)
        assert (foreign.value.status, foreign.value.body) == (
            403,
            {"detail": "Access denied to conversation"},
        )
