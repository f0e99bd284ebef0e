"""Posting a message (SPEC §6): the body formats that work and a clear 4xx for the rest.

Whatever is refused must not store a message or start a run.
"""

from __future__ import annotations

import pytest
from api_support import client_for

API = "/api/v1/conversations"
MAX_CHARS = 100
# Bytes that are no text: not UTF-8, and without NUL, so that only their encoding can refuse them.
BINARY = bytes(range(1, 256)) * 4


def _multipart_field(value: bytes, content_type: str | None = None) -> bytes:
    """A multipart body whose `content` is a text field (no filename) holding `value`."""
    head = b'--xyz\r\nContent-Disposition: form-data; name="content"\r\n'
    if content_type:
        head += f"Content-Type: {content_type}\r\n".encode()
    return head + b"\r\n" + value + b"\r\n--xyz--\r\n"


@pytest.fixture
def settings(settings):
    """A small message limit, so that the 413 cases stay small."""
    return settings.model_copy(update={"max_message_chars": MAX_CHARS})


def _url(cid: str) -> str:
    return f"{API}/{cid}/message/?stream=false"


async def _assert_nothing_started(client, alice, cid: str) -> None:
    messages = await client.get(f"{API}/{cid}/messages", headers=alice)
    assert messages.json() == {"items": []}
    for path in ("active-session", "task-status"):
        response = await client.get(f"{API}/{cid}/{path}", headers=alice)
        assert response.status_code == 404, (path, response.text)
    conversation = (await client.get(f"{API}/{cid}", headers=alice)).json()
    assert conversation["messages"] == []


def _assert_error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"]
    assert isinstance(body.get("detail"), str) and body["detail"]
    return body


async def _assert_reply(client, alice, cid: str, response, content: str) -> None:
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["role"] == "assistant"
    assert reply["status"] == "complete"
    assert reply["content"]
    session_id = response.headers["x-session-id"]
    assert session_id.startswith("conversation:alice:")
    assert reply["session_id"] == session_id
    items = (await client.get(f"{API}/{cid}/messages", headers=alice)).json()["items"]
    assert [(m["role"], m["content"]) for m in items] == [
        ("user", content),
        ("assistant", reply["content"]),
    ]
    assert items[0]["session_id"] in (None, session_id)


# -- what works ------------------------------------------------------------------


async def test_form_field_content_works(client, alice, cid):
    response = await client.post(_url(cid), headers=alice, data={"content": "hello form"})
    await _assert_reply(client, alice, cid, response, "hello form")


async def test_json_content_works(client, alice, cid):
    response = await client.post(_url(cid), headers=alice, json={"content": "hello json"})
    await _assert_reply(client, alice, cid, response, "hello json")


async def test_json_with_charset_works(client, alice, cid):
    response = await client.post(
        _url(cid),
        headers={**alice, "Content-Type": "application/json; charset=utf-8"},
        content='{"content": "héllo"}'.encode(),
    )
    await _assert_reply(client, alice, cid, response, "héllo")


async def test_multipart_form_works(client, alice, cid):
    response = await client.post(
        _url(cid), headers=alice, data={"content": "hello multipart"}, files={"x": b"ignored"}
    )
    await _assert_reply(client, alice, cid, response, "hello multipart")


async def test_the_path_without_a_trailing_slash_works_too(client, alice, cid):
    response = await client.post(
        f"{API}/{cid}/message?stream=false", headers=alice, data={"content": "no slash"}
    )
    await _assert_reply(client, alice, cid, response, "no slash")


async def test_content_is_stored_exactly_as_sent(client, alice, cid):
    content = '  Ünïcødé 🎉\n\tsecond line, <b>html</b> & "quotes"  '
    response = await client.post(_url(cid), headers=alice, json={"content": content})
    await _assert_reply(client, alice, cid, response, content)


async def test_content_of_exactly_the_limit_is_accepted(client, alice, cid):
    response = await client.post(_url(cid), headers=alice, data={"content": "a" * MAX_CHARS})
    await _assert_reply(client, alice, cid, response, "a" * MAX_CHARS)


async def test_the_limit_counts_characters_not_bytes(client, alice, cid):
    content = "😀" * MAX_CHARS  # 400 bytes of UTF-8, 100 characters
    response = await client.post(_url(cid), headers=alice, json={"content": content})
    await _assert_reply(client, alice, cid, response, content)


async def test_streamed_post_ends_and_carries_the_session_header(client, alice, cid):
    response = await client.post(
        f"{API}/{cid}/message/?stream=true", headers=alice, data={"content": "stream me"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-session-id"].startswith("conversation:alice:")
    assert "event: end" in response.text


# -- what is refused ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"data": {"content": ""}}, id="form-empty"),
        pytest.param({"data": {"content": "   \n\t  "}}, id="form-whitespace"),
        pytest.param({"json": {"content": ""}}, id="json-empty"),
        pytest.param({"json": {"content": " \u00a0\u2003\r\n"}}, id="json-unicode-whitespace"),
    ],
)
async def test_empty_content_is_400(client, alice, cid, kwargs):
    _assert_error(await client.post(_url(cid), headers=alice, **kwargs), 400)
    await _assert_nothing_started(client, alice, cid)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"data": {"content": "a" * (MAX_CHARS + 1)}}, id="form-limit+1"),
        pytest.param({"json": {"content": "é" * (MAX_CHARS + 1)}}, id="json-limit+1"),
        pytest.param({"json": {"content": "x" * 50_000}}, id="json-far-over"),
        pytest.param({"data": {"content": "x" * 50_000}}, id="form-far-over"),
    ],
)
async def test_content_over_the_limit_is_413(client, alice, cid, kwargs):
    body = _assert_error(await client.post(_url(cid), headers=alice, **kwargs), 413)
    assert body.get("maxChars") == MAX_CHARS
    await _assert_nothing_started(client, alice, cid)


async def test_a_huge_declared_content_length_is_refused_with_413(client, alice, cid):
    headers = {
        **alice,
        "Content-Type": "application/x-www-form-urlencoded",
        "Content-Length": str(10**12),
    }
    response = await client.post(_url(cid), headers=headers, content=b"content=hi")
    _assert_error(response, 413)
    await _assert_nothing_started(client, alice, cid)


async def test_a_huge_chunked_body_is_refused_with_413(client, alice, cid):
    sent = 0

    async def chunks():
        nonlocal sent
        yield b"content="
        for _ in range(1000):
            sent += 1
            yield b"x" * 10_000

    headers = {**alice, "Content-Type": "application/x-www-form-urlencoded"}
    response = await client.post(_url(cid), headers=headers, content=chunks())
    _assert_error(response, 413)
    await _assert_nothing_started(client, alice, cid)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        pytest.param("application/json", b'{"content": "hi"', id="json-truncated"),
        pytest.param("application/json", b"", id="json-empty-body"),
        pytest.param("application/json", b"not json", id="json-garbage"),
        pytest.param("application/json", b'{"text": "hi"}', id="json-without-content"),
        pytest.param("application/json", b"{}", id="json-empty-object"),
        pytest.param("application/json", b'["hi"]', id="json-list"),
        pytest.param("application/json", b'"hi"', id="json-string"),
        pytest.param("application/json", b"null", id="json-null"),
        pytest.param("application/json", b'{"content": 5}', id="content-number"),
        pytest.param("application/json", b'{"content": null}', id="content-null"),
        pytest.param("application/json", b'{"content": ["hi"]}', id="content-list"),
        pytest.param("application/json", b'{"content": {"t": "hi"}}', id="content-object"),
        pytest.param("application/json", b'{"content": true}', id="content-bool"),
        pytest.param("application/json", b'{"content": "a\\u0000b"}', id="json-nul-escaped"),
        pytest.param("application/json", b'{"content": "\xff\xfe"}', id="json-invalid-utf8"),
        pytest.param("application/x-www-form-urlencoded", b"content=a%00b", id="form-nul"),
        pytest.param("application/x-www-form-urlencoded", b"content=%FF%FE", id="form-bad-utf8"),
        pytest.param("application/x-www-form-urlencoded", b"content=\xff\xfe", id="form-raw-bytes"),
        pytest.param("application/x-www-form-urlencoded", b"text=hi", id="form-without-content"),
        pytest.param("application/x-www-form-urlencoded", b"", id="form-empty-body"),
        pytest.param("text/plain", b"hello", id="text-plain"),
        pytest.param("application/xml", b"<content>hi</content>", id="xml"),
        pytest.param("", b"content=hi", id="no-content-type"),
        pytest.param("multipart/form-data", b"content=hi", id="multipart-no-boundary"),
        pytest.param(
            "multipart/form-data; boundary=xyz", b"--xyz\r\ngarbage", id="multipart-broken"
        ),
        pytest.param("application/octet-stream", BINARY, id="octet-stream"),
        pytest.param("image/png", b"\x89PNG\r\n\x1a\n" + BINARY, id="png"),
        # Starlette reads such a field as Latin-1: it used to be stored as mojibake.
        pytest.param(
            "multipart/form-data; boundary=xyz", _multipart_field(BINARY), id="multipart-binary"
        ),
        pytest.param(
            "multipart/form-data; boundary=xyz",
            _multipart_field(BINARY, "application/octet-stream"),
            id="multipart-binary-octet-stream",
        ),
    ],
)
async def test_unreadable_bodies_are_400(client, alice, cid, content_type, body):
    headers = {**alice, "Content-Type": content_type} if content_type else alice
    response = await client.post(_url(cid), headers=headers, content=body)
    _assert_error(response, 400)
    await _assert_nothing_started(client, alice, cid)


async def test_multipart_content_as_a_file_is_400(client, alice, cid):
    response = await client.post(_url(cid), headers=alice, files={"content": b"as a file"})
    _assert_error(response, 400)
    await _assert_nothing_started(client, alice, cid)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"content": "\\ud800"}', id="lone-high-surrogate"),
        pytest.param(b'{"content": "ok \\udfff"}', id="lone-low-surrogate"),
    ],
)
async def test_json_with_a_lone_surrogate_is_400(app, client, alice, cid, body):
    headers = {**alice, "Content-Type": "application/json"}
    async with client_for(app, raise_app_exceptions=False) as http:
        response = await http.post(_url(cid), headers=headers, content=body)
    await _assert_nothing_started(client, alice, cid)
    _assert_error(response, 400)


async def test_refused_posts_leave_the_conversation_usable(client, alice, cid):
    await client.post(_url(cid), headers=alice, data={"content": ""})
    await client.post(_url(cid), headers=alice, data={"content": "x" * (MAX_CHARS + 1)})
    await client.post(_url(cid), headers={**alice, "Content-Type": "text/plain"}, content=b"x")
    response = await client.post(_url(cid), headers=alice, data={"content": "now a real one"})
    await _assert_reply(client, alice, cid, response, "now a real one")


# -- who hears about a bad body ----------------------------------------------------
# FastAPI reads a JSON body before the route's dependencies: the 401 and 403 checks
# must still come first, as they do for a readable body.

NOT_UTF8_JSON = b'{"title": "\xff"}'  # FastAPI's own 400, before any dependency ran


@pytest.mark.parametrize("body", [NOT_UTF8_JSON, b'{"title": 5}'], ids=["not-utf8", "invalid"])
async def test_a_bad_json_body_without_a_token_is_401(client, body):
    response = await client.post(API, headers={"Content-Type": "application/json"}, content=body)
    assert response.status_code == 401, response.text
    assert response.json()["detail"].startswith("Missing bearer token")


@pytest.mark.parametrize("body", [NOT_UTF8_JSON, b'{"title": 5}'], ids=["not-utf8", "invalid"])
async def test_a_bad_json_body_on_another_users_conversation_is_403(
    client, make_token, alice, cid, body
):
    bob = await make_token("bob")
    before = (await client.get(f"{API}/{cid}", headers=alice)).json()
    headers = {**bob, "Content-Type": "application/json"}
    response = await client.patch(f"{API}/{cid}", headers=headers, content=body)
    assert response.status_code == 403, response.text
    assert response.json() == {"detail": "Access denied to conversation"}
    assert (await client.get(f"{API}/{cid}", headers=alice)).json() == before


async def test_json_that_is_not_utf8_is_400_for_the_owner(client, alice, cid):
    before = (await client.get(f"{API}/{cid}", headers=alice)).json()
    headers = {**alice, "Content-Type": "application/json"}
    response = await client.patch(f"{API}/{cid}", headers=headers, content=NOT_UTF8_JSON)
    assert response.status_code == 400, response.text
    assert isinstance(response.json()["detail"], str)
    assert (await client.get(f"{API}/{cid}", headers=alice)).json() == before
