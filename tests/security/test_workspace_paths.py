"""The workspace's attack list: bad paths on every route and tool, cut-off uploads, other users.

A path that breaks a rule of store/paths.py gets 400 (an error result for a
tool) and is never stored, whether it comes in the URL (decoded or not), as a
multipart filename, as a `path` field, or as a tool's argument. Another user's
conversation is 403 on every files route (tests/security/test_isolation.py
enumerates them all), and a tool only ever holds its own run's conversation.
"""

from __future__ import annotations

import json
import re
import unicodedata

import pytest
from api_support import token_for
from sse import parse_sse

from turnstream.api.schemas import PATH_PATTERN
from turnstream.errors import InvalidPath
from turnstream.store.paths import MAX_PATH_BYTES, check_path

API = "/api/v1/conversations"

BAD_PATHS = [
    "",
    "../x",
    "a/../../x",
    "a/./b",
    "./a",
    "..",
    ".",
    "/etc/passwd",
    "~/x",
    "~root/.ssh/id_rsa",
    "a//b",
    "a/",
    "a\\..\\b",
    "C:\\x",
    "nul\x00byte",
    "tab\there",
    "line\nbreak",
    "esc\x1b[31m",
    "del\x7f",
    "x" * 256,
    "/".join(["a" * 200] * 6),
]
GOOD_PATHS = [
    "data.csv",
    "out/report.md",
    "a/b/c/d.txt",
    "café.txt",
    "名前/ファイル.txt",
    "...",
    "..x",
    "x..",
    ".hidden",
    "with space.txt",
    "%2e%2e%2f",  # stored as these characters: nothing decodes a stored path again
    "x" * 255,
    "/".join(["a" * 200] * 5),
]


@pytest.mark.parametrize("path", BAD_PATHS, ids=repr)
def test_the_path_check_refuses_each_escape(path: str) -> None:
    with pytest.raises(InvalidPath):
        check_path(path)


@pytest.mark.parametrize("path", GOOD_PATHS, ids=repr)
def test_the_path_check_keeps_ordinary_names(path: str) -> None:
    assert check_path(path) == path


def test_the_documents_pattern_says_the_same_but_for_bytes() -> None:
    """What the OpenAPI document states (pattern, maxLength) agrees with the check."""
    pattern = re.compile(rf"^{PATH_PATTERN}$")
    for path in GOOD_PATHS:
        assert pattern.match(path) and len(path) <= MAX_PATH_BYTES, path
    for path in BAD_PATHS:
        assert not (pattern.match(path) and len(path) <= MAX_PATH_BYTES), path
    # A pattern counts characters: a segment of 255 three-byte ones is a 400 it cannot state.
    assert pattern.match("€" * 255)
    with pytest.raises(InvalidPath, match="255 bytes"):
        check_path("€" * 255)


def test_a_name_in_another_normalization_form_is_taken_in_nfc() -> None:
    assert check_path(unicodedata.normalize("NFD", "dé/café.txt")) == "dé/café.txt"
    # The byte limits apply to the NFC form: 128 é decomposed take 384 bytes, composed 256.
    with pytest.raises(InvalidPath, match="255 bytes"):
        check_path(unicodedata.normalize("NFD", "é" * 128))
    assert check_path(unicodedata.normalize("NFD", "é" * 127)) == "é" * 127


async def _stored(client, headers, cid) -> list[str]:
    listing = await client.get(f"{API}/{cid}/files", headers=headers)
    return [item["path"] for item in listing.json()["items"]]


@pytest.mark.parametrize(
    "raw",
    ["%2e%2e%2fx", "a/%2e%2e/%2e%2e/x", "%2fetc%2fpasswd", "~", "a%00b", "a%5cb", "a//b", "a/"],
)
async def test_bad_paths_in_the_url_are_400_on_every_files_route(client, alice, cid, raw) -> None:
    url = f"{API}/{cid}/files/{raw}"
    for method in ("PUT", "GET", "DELETE"):
        response = await client.request(method, url, headers=alice, content=b"x")
        assert response.status_code == 400, (method, raw, response.text)
        assert response.json()["error"] == "Invalid path"
    assert await _stored(client, alice, cid) == []


@pytest.mark.parametrize("filename", ["../evil.txt", "/abs.txt", "~x", "a\\b.txt", "dir/../x"])
async def test_a_multipart_filename_is_checked_like_any_path(client, alice, cid, filename) -> None:
    response = await client.post(
        f"{API}/{cid}/files", headers=alice, files=[("file", (filename, b"x", "text/plain"))]
    )
    assert response.status_code == 400, response.text
    assert await _stored(client, alice, cid) == []


async def test_a_bad_path_field_stores_nothing_of_the_upload(client, alice, cid) -> None:
    response = await client.post(
        f"{API}/{cid}/files",
        headers=alice,
        files=[("file", ("a.txt", b"a", None)), ("file", ("b.txt", b"b", None))],
        data={"path": "../up"},
    )
    assert response.status_code == 400
    assert await _stored(client, alice, cid) == []


async def test_a_listing_prefix_is_checked_too(client, alice, cid) -> None:
    response = await client.get(f"{API}/{cid}/files", headers=alice, params={"prefix": "../"})
    assert response.status_code == 400


async def test_an_upload_cut_off_mid_body_stores_nothing(app, alice, cid) -> None:
    """The client goes away after half the body: no file, and the request ends as 499."""
    boundary = "cutoffboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="half.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + b"x" * 200_000
        + f"\r\n--{boundary}--\r\n".encode()
    )
    chunks = [body[:100_000], None]  # then the client disconnects
    sent: list[dict] = []

    async def receive() -> dict:
        chunk = chunks.pop(0) if chunks else None
        if chunk is None:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    headers = [
        (b"authorization", alice["Authorization"].encode()),
        (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
        (b"content-length", str(len(body)).encode()),
        (b"host", b"test"),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"{API}/{cid}/files",
        "raw_path": f"{API}/{cid}/files".encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("test", 80),
        "root_path": "",
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 499
    listing = await app.state.runtime.files.listing(cid)
    assert listing.items == []


async def test_another_users_conversation_is_403_on_every_files_route(
    client, alice, make_token, cid
) -> None:
    await client.put(f"{API}/{cid}/files/secret.txt", headers=alice, content=b"alice's")
    bob = await make_token("bob")
    calls = [
        ("POST", f"{API}/{cid}/files", {"files": [("file", ("x.txt", b"x", None))]}),
        ("GET", f"{API}/{cid}/files", {}),
        ("PUT", f"{API}/{cid}/files/secret.txt", {"content": b"bob's"}),
        ("GET", f"{API}/{cid}/files/secret.txt", {}),
        ("DELETE", f"{API}/{cid}/files/secret.txt", {}),
    ]
    for method, url, kwargs in calls:
        response = await client.request(method, url, headers=bob, **kwargs)
        assert response.status_code == 403, (method, url, response.text)
        assert response.json() == {"detail": "Access denied to conversation"}
    # Alice's link opens her file for anyone holding it, but names her conversation only.
    link = (await client.get(f"{API}/{cid}/files", headers=alice)).json()["items"][0]["url"]
    bobs_cid = (await client.post(API, headers=bob)).json()["id"]
    token = link.split("token=", 1)[1]
    moved = await client.get(f"{API}/{bobs_cid}/files/secret.txt", params={"token": token})
    assert moved.status_code == 401
    assert (await client.get(link)).content == b"alice's"


async def _tool_turn(client, headers, cid, name: str, arguments: dict) -> dict:
    message = f"/tool {name} {json.dumps(arguments)}"
    response = await client.post(
        f"{API}/{cid}/message/", headers=headers, data={"content": message}
    )
    (result,) = [e.data for e in parse_sse(response.text) if e.event == "tool_result"]
    return result


async def test_a_tool_touches_only_its_own_runs_conversation(api) -> None:
    async with api(tools="workspace") as (client, alice, app):
        alices = (await client.post(API, headers=alice)).json()["id"]
        await client.put(f"{API}/{alices}/files/secret.txt", headers=alice, content=b"alice's")
        bob = await token_for(app, "bob")
        bobs = (await client.post(API, headers=bob)).json()["id"]
        # Bob's run sees his own (empty) workspace whatever path it names.
        for path in ("secret.txt", f"../{alices}/secret.txt", f"{alices}/secret.txt"):
            read = await _tool_turn(client, bob, bobs, "read_file", {"path": path})
            assert read["isError"] is True, read
            assert "alice's" not in read["content"]
        listing = await _tool_turn(client, bob, bobs, "list_files", {})
        assert listing["content"] == "No files."
        arguments = {"path": "secret.txt", "content": "bob's"}
        written = await _tool_turn(client, bob, bobs, "write_file", arguments)
        assert written["isError"] is False
        # Alice's file is untouched; Bob's went to his conversation.
        mine = await client.get(f"{API}/{alices}/files/secret.txt", headers=alice)
        assert mine.content == b"alice's"
        his = await client.get(f"{API}/{bobs}/files/secret.txt", headers=bob)
        assert his.content == b"bob's"


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "~/x", "a\\b", "a/../../b", "x\x00"])
async def test_a_tool_given_a_bad_path_gets_an_error_result_and_nothing_is_stored(
    api, path
) -> None:
    async with api(tools="workspace") as (client, alice, _):
        cid = (await client.post(API, headers=alice)).json()["id"]
        result = await _tool_turn(client, alice, cid, "write_file", {"path": path, "content": "x"})
        assert result["isError"] is True
        assert "Invalid path" in result["content"]
        assert await _stored(client, alice, cid) == []
