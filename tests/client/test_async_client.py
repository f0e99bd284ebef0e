"""`turnstream.client.AsyncClient` against a real `turnstream serve` (tests/client/conftest.py)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from client_support import FILE_LIMIT, WORDS, Served

from turnstream.client import (
    ApiError,
    AsyncClient,
    Event,
    FileChange,
    FileEntry,
    FileNotFound,
    InvalidPath,
    Retry,
    WorkspaceFull,
)

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


async def test_files_are_uploaded_listed_downloaded_and_deleted(
    served: Served, alice, tmp_path: Path
):
    on_disk = tmp_path / "data.csv"
    on_disk.write_bytes(b"month,total\n2026-01,10\n")
    note = "naïve notes\n".encode()
    async with AsyncClient(served.url, alice) as client:
        cid = (await client.create_conversation()).id
        csv, md = await client.upload(cid, on_disk, ("docs/note.md", note, "text/markdown"))

        assert isinstance(csv, FileEntry) and isinstance(md, FileEntry)
        assert (csv.path, csv.size, csv.version) == ("data.csv", on_disk.stat().st_size, 1)
        assert csv.media_type.startswith("text/csv")
        assert csv.sha256 == hashlib.sha256(on_disk.read_bytes()).hexdigest()
        assert (md.path, md.media_type, md.size) == ("docs/note.md", "text/markdown", len(note))
        # The signed link is a full URL under the client's base URL; it needs no token.
        assert md.url.startswith(f"{served.url}/api/v1/conversations/{cid}/files/docs/note.md?")
        assert await _without_auth(md.url) == note

        listing = await client.files(cid)
        assert [f.path for f in listing.items] == ["data.csv", "docs/note.md"]
        assert (listing.total, listing.bytes) == (2, csv.size + len(note))
        assert [f.path for f in (await client.files(cid, prefix="docs/")).items] == [md.path]
        assert await client.download(cid, "docs/note.md") == note
        assert await client.download(cid, "data.csv") == on_disk.read_bytes()

        # Several files into a folder; the same name again replaces the file.
        into = await client.upload(cid, ("a.txt", b"A"), ("b.txt", b"B"), path="in")
        assert [f.path for f in into] == ["in/a.txt", "in/b.txt"]
        (again,) = await client.upload(cid, ("renamed.csv", b"x,y\n"), path="data.csv")
        assert (again.path, again.version) == ("data.csv", 2)
        assert await client.download(cid, "data.csv") == b"x,y\n"

        await client.delete_file(cid, "docs/note.md")
        assert "docs/note.md" not in [f.path for f in (await client.files(cid)).items]
        with pytest.raises(FileNotFound) as gone:
            await client.download(cid, "docs/note.md")
        assert (gone.value.status, gone.value.path) == (404, "docs/note.md")
        with pytest.raises(FileNotFound):
            await client.delete_file(cid, "docs/note.md")


async def test_a_file_the_run_writes_comes_as_a_file_event_whose_link_downloads_it(
    served: Served, alice
):
    write = {"path": "out/report.md", "content": "# hi\n"}
    async with AsyncClient(served.url, alice) as client:
        cid = (await client.create_conversation()).id
        events = [e async for e in client.send(cid, f"/tool write_file {json.dumps(write)}")]

        _assert_one_whole_run(events)
        (event,) = [e for e in events if e.type == "file"]
        assert isinstance(event, Event) and event.data["path"] == "out/report.md"
        written = event.file
        assert isinstance(written, FileChange) and not written.deleted
        assert (written.path, written.size, written.version) == ("out/report.md", 5, 1)
        assert written.sha256 == hashlib.sha256(b"# hi\n").hexdigest()
        assert written.url is not None and written.url == event.data["url"]
        link = f"{served.url}/api/v1/conversations/{cid}/files/out/report.md?token="
        assert written.url.startswith(link)
        assert await _without_auth(written.url) == b"# hi\n"
        assert events[0].file is None  # the other events name no file

        deleting = {"path": "out/report.md"}
        gone = [e async for e in client.send(cid, f"/tool delete_file {json.dumps(deleting)}")]
        stored = await client.messages(cid)

    (deletion,) = [e.file for e in gone if e.type == "file"]
    assert deletion == FileChange(
        "out/report.md", 5, written.media_type, written.sha256, 1, url=None, deleted=True
    )
    # The run's reply keeps the files it wrote, without their links.
    replies = [m for m in stored if m.role == "assistant" and m.files]
    assert [m.files[0]["path"] for m in replies] == ["out/report.md", "out/report.md"]  # type: ignore[index]


async def test_workspace_refusals_are_their_own_api_errors(served: Served, alice, bob):
    async with AsyncClient(served.url, alice) as client, AsyncClient(served.url, bob) as other:
        cid = (await client.create_conversation()).id
        with pytest.raises(WorkspaceFull) as full:
            await client.upload(cid, ("big.bin", b"x" * (FILE_LIMIT + 1)))
        assert (full.value.status, full.value.error) == (413, "Workspace limit reached")
        assert (full.value.limit, full.value.setting) == (
            FILE_LIMIT,
            "TURNSTREAM_WORKSPACE_FILE_BYTES",
        )
        assert full.value.detail and "nothing was stored" in full.value.detail

        with pytest.raises(InvalidPath) as outside:
            await client.upload(cid, ("x.txt", b"x"), path="../escape.txt")
        assert (outside.value.status, outside.value.error) == (400, "Invalid path")
        # `..` reaches the server as it is: no URL normalisation turns it into another route.
        for path in ("../escape.txt", ".."):
            with pytest.raises(InvalidPath):
                await client.download(cid, path)
            with pytest.raises(InvalidPath):
                await client.delete_file(cid, path)
        assert (await client.get_conversation(cid)).id == cid
        assert (await client.files(cid)).total == 0  # nothing of the refused uploads stored

        with pytest.raises(ApiError) as foreign:
            await other.files(cid)
        assert type(foreign.value) is ApiError and foreign.value.status == 403


async def _without_auth(url: str) -> bytes:
    """What a signed link downloads with no Authorization header (as a browser's <a href>)."""
    async with httpx.AsyncClient() as anonymous:
        response = await anonymous.get(url)
    assert response.status_code == 200, response.text
    return response.content
