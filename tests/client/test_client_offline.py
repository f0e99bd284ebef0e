"""The client's protocol rules against scripted answers (httpx.MockTransport), no server.

What a real server rarely does on cue: a 503 with Retry-After, a refused
connection, a stream that closes cleanly before `end`, Redis's out-of-band
`error` notice, an expired cursor (409 with `resync`), a body that is not
JSON, and a server that never comes back. And the file routes behind a
reverse proxy's path prefix.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from turnstream.client import (
    ApiError,
    Client,
    ConnectionFailed,
    CursorExpired,
    FileNotFound,
    Retry,
    StreamBroken,
)
from turnstream.client.sse import Frame, SSEDecoder

SID = "conversation:al:01a22c69-927f-7a35-b315-552e09b0ae49"
FAST = Retry(attempts=3, first=0.0)


def frame(seq: int, type: str, **data: object) -> bytes:
    body = {"seq": seq, "type": type, "ts": 1000 + seq, **data}
    return f"id: {1000 + seq}-0\r\nevent: {type}\r\ndata: {json.dumps(body)}\r\n\r\n".encode()


RUN = [
    frame(1, "queued", sessionId=SID),
    frame(2, "start", worker="w"),
    frame(3, "delta", text="Hello"),
    frame(4, "delta", text=" world"),
    frame(5, "end", status="completed", messageId="m1"),
]


def stream(*chunks: bytes, status: int = 200) -> httpx.Response:
    headers = {"content-type": "text/event-stream; charset=utf-8", "x-session-id": SID}
    return httpx.Response(status, headers=headers, content=b"".join(chunks))


class Broken(httpx.SyncByteStream):
    """A body that breaks after its chunks, as a dropped connection does."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        raise httpx.ReadError("connection reset")


def client_for(*answers: Callable[[httpx.Request], httpx.Response]) -> tuple[Client, list]:
    """A client whose n-th request gets the n-th answer; and the list of its requests."""
    requests: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return answers[len(requests) - 1](request)

    return Client(
        "http://ts.test", "ts_x", retry=FAST, transport=httpx.MockTransport(handle)
    ), requests


def test_a_stream_broken_mid_frame_is_resumed_from_the_last_whole_event():
    half = RUN[3][:20]  # the start of the fourth frame, then the connection breaks
    client, requests = client_for(
        lambda _: httpx.Response(200, headers=stream().headers, stream=Broken(*RUN[:3], half)),
        lambda _: stream(*RUN[3:]),
    )
    events = list(client.send("c1", "hi"))
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert "".join(e.text for e in events) == "Hello world"
    assert (
        requests[0].method == "POST" and requests[0].url.path == "/api/v1/conversations/c1/message/"
    )
    assert json.loads(requests[0].content) == {"content": "hi"}
    assert requests[0].headers["authorization"] == "Bearer ts_x"
    resume = requests[1]
    assert resume.method == "GET"
    assert resume.url.raw_path.startswith(b"/api/v1/conversations/c1/resume/conversation%3Aal%3A")
    assert resume.url.params["cursor"] == "1003-0"


def test_a_message_whose_answer_never_came_is_sent_again_with_the_same_key():
    """Before the response headers nothing is known; the Idempotency-Key makes a repeat safe,
    and events the repeat replays from the first are not handed out twice."""

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client, requests = client_for(
        refused,
        lambda _: httpx.Response(
            503, headers={"retry-after": "0"}, json={"error": "Redis unavailable"}
        ),
        lambda _: stream(*RUN),
    )
    events = list(client.send("c1", "hi"))
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert [r.method for r in requests] == ["POST", "POST", "POST"]
    keys = {r.headers["idempotency-key"] for r in requests}
    assert len(keys) == 1 and keys != {""}


def test_replayed_events_pings_and_the_out_of_band_redis_notice_are_not_handed_out():
    notice = (
        b"event: error\r\n"
        b'data: {"type":"error","message":"Redis unavailable; resume later.",'
        b'"code":"redis_unavailable"}\r\n\r\n'
    )
    client, requests = client_for(
        lambda _: stream(RUN[0], b": ping\r\n\r\n", RUN[1], notice),  # then closes cleanly
        lambda _: stream(RUN[1], *RUN[2:]),  # a server that repeats one: skipped by seq
    )
    events = list(client.send("c1", "hi"))
    assert [(e.seq, e.type) for e in events] == [
        (1, "queued"), (2, "start"), (3, "delta"), (4, "delta"), (5, "end"),
    ]  # fmt: skip
    assert requests[1].url.params["cursor"] == "1002-0"


def test_an_expired_cursor_is_a_cursor_expired_error_carrying_resync():
    body = {
        "error": "Cursor expired",
        "sessionId": SID,
        "resync": {"cursor": "1796041541920-0", "detail": "Events up to this cursor were trimmed."},
    }
    client, _ = client_for(lambda _: httpx.Response(409, json=body))
    with pytest.raises(CursorExpired) as expired:
        list(client.resume("c1", SID))
    assert expired.value.status == 409
    assert expired.value.body == body
    assert expired.value.resync_cursor == "1796041541920-0"
    assert expired.value.session_id == SID
    assert isinstance(expired.value, ApiError)


def test_a_server_that_never_comes_back_ends_in_stream_broken():
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client, requests = client_for(lambda _: stream(*RUN[:3]), *[refused] * 4)
    events = []
    with pytest.raises(StreamBroken) as broken:
        for event in client.send("c1", "hi"):
            events.append(event)
    assert len(events) == 3
    assert (broken.value.session_id, broken.value.cursor) == (SID, "1003-0")
    assert isinstance(broken.value.__cause__, httpx.ConnectError)
    assert isinstance(broken.value, ConnectionFailed)
    assert len(requests) == 1 + FAST.attempts


def test_plain_calls_raise_api_error_with_the_body_or_connection_failed():
    client, _ = client_for(lambda _: httpx.Response(502, text="<html>Bad gateway</html>"))
    with pytest.raises(ApiError) as refused:
        client.get_conversation("c1")
    assert (refused.value.status, refused.value.body) == (502, "<html>Bad gateway</html>")

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client, _ = client_for(unreachable)
    with pytest.raises(ConnectionFailed):
        client.list_conversations()
    # An httpx error that no retry mends fails at once, as a ConnectionFailed too.
    with Client("ftp://ts.test", "ts_x") as wrong, pytest.raises(ConnectionFailed) as failed:
        next(wrong.send("c1", "hi"))
    assert isinstance(failed.value.__cause__, httpx.UnsupportedProtocol)


def test_the_sse_decoder_reads_turnstreams_framing():
    decoder = SSEDecoder()
    lines = [": ping", "", "id: 1-0", "event: delta", 'data: {"a":', "data: 1}", "", "data: x", ""]
    frames = [f for f in map(decoder.feed, lines) if f is not None]
    assert frames == [Frame("1-0", "delta", '{"a":\n1}'), Frame("", "", "x")]
    # Retry delays double from `first` up to `longest`.
    assert [Retry(first=0.25, longest=1).delay(n) for n in (1, 2, 3, 4)] == [0.25, 0.5, 1, 1]


def test_file_paths_and_signed_links_under_a_base_url_with_a_path():
    """Behind a proxy at /chat/, the server's links (`/api/v1/…?token=`) are joined under the
    base URL, as the client's own paths are; a file path keeps its `/`, and `..` is sent
    encoded, so that no URL normalisation turns a file into another route."""
    link = "/api/v1/conversations/c1/files/out/a%20b.md?token=t1"
    entry = {
        "path": "out/a b.md", "size": 1, "mediaType": "text/markdown", "sha256": "0" * 64,
        "modifiedAt": "2026-01-02T03:04:05+00:00", "version": 1, "url": link,
    }  # fmt: skip
    answers = iter(
        [
            httpx.Response(200, json={"items": [entry], "total": 1, "bytes": 1}),
            stream(
                frame(1, "file", **{k: v for k, v in entry.items() if k != "modifiedAt"}),
                frame(2, "end", status="completed", messageId="m1"),
            ),
            httpx.Response(404, json={"error": "File not found", "path": "../x"}),
        ]
    )
    requests: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return next(answers)

    transport = httpx.MockTransport(handle)
    with Client("http://ts.test/chat/", "ts_x", retry=FAST, transport=transport) as client:
        (listed,) = client.files("c1", prefix="out/").items
        event, _ = client.resume("c1", SID)
        with pytest.raises(FileNotFound) as missing:
            client.download("c1", "../x")

    full = f"http://ts.test/chat{link}"
    assert listed.url == full and listed.modified_at.year == 2026
    assert event.file is not None and event.file.url == full == event.data["url"]
    assert requests[0].url.raw_path == b"/chat/api/v1/conversations/c1/files?prefix=out%2F"
    assert requests[2].url.raw_path == b"/chat/api/v1/conversations/c1/files/%2E%2E/x"
    assert (missing.value.status, missing.value.path) == (404, "../x")
