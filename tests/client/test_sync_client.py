"""`turnstream.client.Client` against a real `turnstream serve` (tests/client/conftest.py)."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import httpx
import pytest
from client_support import FILE_LIMIT, WORDS, Served
from tcp_proxy import Proxy

from turnstream.client import (
    ActiveSession,
    ApiError,
    Client,
    Conversation,
    Event,
    FileList,
    FileNotFound,
    InvalidPath,
    Retry,
    StopResult,
    WorkspaceFull,
)


def _assert_one_whole_run(events: list[Event]) -> None:
    """seq 1..n with no gap and no repeat, `queued` first, exactly one `end`, last."""
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    assert events[0].type == "queued"
    assert [event.type for event in events].count("end") == 1
    assert events[-1].type == "end"


def _reply(events: list[Event]) -> str:
    return "".join(event.text for event in events if event.type == "delta")


def test_send_yields_the_whole_run_and_its_deltas_are_the_stored_reply(served: Served, alice):
    with Client(served.url, alice) as client:
        conversation = client.create_conversation(title="Trip", metadata={"lang": "en"})
        assert isinstance(conversation, Conversation)
        assert (conversation.title, conversation.metadata) == ("Trip", {"lang": "en"})
        assert conversation.user_id == "alice"

        events = list(client.send(conversation.id, "hello"))

        _assert_one_whole_run(events)
        assert events[-1].data["status"] == "completed"
        assert len(_reply(events).split()) == WORDS
        question, answer = client.messages(conversation.id)
        assert (question.role, question.content) == ("user", "hello")
        assert answer.content == _reply(events)
        assert answer.id == events[-1].data["messageId"]
        assert answer.session_id == events[0].data["sessionId"]
        # The conversation with its messages, the list, a rename.
        loaded = client.get_conversation(conversation.id)
        assert [m.id for m in loaded.messages] == [question.id, answer.id]
        assert conversation.id in [c.id for c in client.list_conversations().items]
        assert client.rename_conversation(conversation.id, "Lisbon").title == "Lisbon"


def test_a_connection_cut_mid_reply_is_resumed_with_no_gap_and_no_repeat(served: Served, alice):
    """A real TCP connection shut down twice in the middle of the reply (once during the
    message's own POST, once during the resume that followed it)."""
    proxy = Proxy(httpx.URL(served.url).port or 80)
    try:
        with Client(proxy.url, alice, retry=Retry(first=0.05)) as client:
            cid = client.create_conversation().id
            events = []
            for event in client.send(cid, "a dropped network"):
                events.append(event)
                if len(events) in (8, 20):
                    proxy.cut()
            stored = client.messages(cid)[-1]
    finally:
        proxy.close()

    _assert_one_whole_run(events)
    assert events[-1].data["status"] == "completed"
    assert _reply(events) == stored.content
    assert len(_reply(events).split()) == WORDS
    # The first connection, then a new one for the resume after each cut.
    assert proxy.connections >= 3


def test_leaving_a_stream_leaves_the_run_going_and_resume_picks_it_up(served: Served, alice):
    with Client(served.url, alice) as client:
        cid = client.create_conversation().id
        stream = client.send(cid, "leave and come back")
        first = list(itertools.islice(stream, 5))
        stream.close()  # the client goes away; the run does not

        active = client.active_session(cid)
        assert isinstance(active, ActiveSession) and active.is_active
        assert active.session_id == first[0].data["sessionId"]
        status = client.task_status(cid)
        assert status is not None and status.is_active
        assert status.session_id == active.session_id

        rest = list(client.resume(cid, active.session_id, cursor=first[-1].id))
        replayed = list(client.resume(cid, active.session_id))  # from the start, "0-0"

        _assert_one_whole_run(first + rest)
        assert replayed == first + rest
        assert _reply(first + rest) == client.messages(cid)[-1].content
        after = client.active_session(cid)
        assert after is not None and after.status == "completed"
        done = client.task_status(cid)
        assert done is not None and not done.is_active


def test_stop_ends_the_running_reply_and_keeps_what_was_written(served: Served, alice):
    with Client(served.url, alice) as client:
        cid = client.create_conversation().id
        assert client.active_session(cid) is None  # no run yet: 404 is "nothing"
        assert client.task_status(cid) is None
        stream = client.send(cid, "stop me")
        events = list(itertools.islice(stream, 6))

        result = client.stop(cid)

        assert isinstance(result, StopResult)
        assert result == StopResult("cancelled", events[0].data["sessionId"])
        events += list(stream)  # the same stream goes on to the `end`
        _assert_one_whole_run(events)
        assert events[-1].data["status"] == "cancelled"
        stored = client.messages(cid)[-1]
        assert (stored.status, stored.content) == ("cancelled", _reply(events))
        active = client.active_session(cid)
        assert active is not None and active.status == "idle"
        with pytest.raises(ApiError) as nothing:
            client.stop(cid)
        assert nothing.value.status == 404
        assert nothing.value.body == {"error": "No active run", "conversationId": cid}


def test_errors_are_exceptions_that_carry_the_servers_json(served: Served, alice, bob):
    with Client(served.url, alice) as client, Client(served.url, bob) as other:
        cid = client.create_conversation().id

        with pytest.raises(ApiError) as foreign:
            other.get_conversation(cid)
        assert foreign.value.status == 403
        assert foreign.value.body == {"detail": "Access denied to conversation"}
        assert foreign.value.detail == "Access denied to conversation"
        with pytest.raises(ApiError) as foreign_send:
            next(other.send(cid, "not mine"))
        assert foreign_send.value.status == 403

        stream = client.send(cid, "first")
        queued = next(stream)
        with pytest.raises(ApiError) as busy:
            next(client.send(cid, "second"))  # multitask=reject, the default
        assert busy.value.status == 409
        assert busy.value.error == "A run is already active in this conversation"
        assert busy.value.body["sessionId"] == queued.data["sessionId"]
        list(stream)

        with pytest.raises(ApiError) as bad_cursor:
            next(client.resume(cid, queued.data["sessionId"], cursor="not-a-cursor"))
        assert (bad_cursor.value.status, bad_cursor.value.error) == (400, "Invalid cursor")

    with Client(served.url, "ts_not-a-token") as stranger, pytest.raises(ApiError) as refused:
        stranger.list_conversations()
    assert refused.value.status == 401
    assert "detail" in refused.value.body


def test_the_workspace_from_the_blocking_client(served: Served, alice, tmp_path: Path):
    on_disk = tmp_path / "plan.txt"
    on_disk.write_text("day 1: Lisbon\n")
    with Client(served.url, alice) as client:
        cid = client.create_conversation().id
        stored = client.upload(cid, on_disk, ("photo.png", io.BytesIO(b"\x89PNG..."), "image/png"))
        assert [(f.path, f.media_type, f.version) for f in stored] == [
            ("plan.txt", "text/plain", 1),
            ("photo.png", "image/png", 1),
        ]
        assert all(
            f.url.startswith(f"{served.url}/api/v1/conversations/{cid}/files/") for f in stored
        )
        assert httpx.get(stored[1].url).content == b"\x89PNG..."  # the signed link, no token
        listing = client.files(cid)
        assert isinstance(listing, FileList)
        assert [f.path for f in listing.items] == ["photo.png", "plan.txt"]
        assert client.download(cid, "plan.txt") == b"day 1: Lisbon\n"

        write = json.dumps({"path": "plan.txt", "content": "day 1: Porto\n"})
        (event,) = [e for e in client.send(cid, f"/tool write_file {write}") if e.type == "file"]
        assert event.file is not None and (event.file.path, event.file.version) == ("plan.txt", 2)
        assert event.file.url and httpx.get(event.file.url).content == b"day 1: Porto\n"

        client.delete_file(cid, "photo.png")
        assert [f.path for f in client.files(cid).items] == ["plan.txt"]
        with pytest.raises(FileNotFound):
            client.download(cid, "photo.png")
        with pytest.raises(WorkspaceFull) as full:
            client.upload(cid, ("big.bin", b"x" * (FILE_LIMIT + 1)), path="out/big.bin")
        assert full.value.limit == FILE_LIMIT
        with pytest.raises(InvalidPath):
            client.upload(cid, ("x.txt", b"x"), path="/etc/passwd")
        assert client.files(cid).total == 1
