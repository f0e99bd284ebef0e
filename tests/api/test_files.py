"""The workspace over HTTP: upload, list, download (headers, ranges, links), replace, delete.

Runs on the in-process app (SQLite and real Redis); the path rules and the
isolation between users are in tests/security/test_workspace_paths.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import unicodedata
from urllib.parse import quote

import pytest
from sse import parse_sse

API = "/api/v1/conversations"


def files_url(cid: str, path: str = "") -> str:
    return f"{API}/{cid}/files" + (f"/{quote(path)}" if path else "")


async def upload(client, headers, cid, *parts, path=None):
    data = {"path": path} if path is not None else None
    files = [("file", part) for part in parts]
    return await client.post(files_url(cid), headers=headers, files=files, data=data)


async def test_an_uploaded_file_is_listed_and_downloads_as_the_same_bytes(
    client, alice, cid
) -> None:
    body = b"month,total\n2026-01,10\n2026-02,12\n"
    response = await upload(client, alice, cid, ("data.csv", body, "text/csv"))
    assert response.status_code == 201, response.text
    (stored,) = response.json()
    assert stored["path"] == "data.csv"
    assert stored["size"] == len(body)
    assert stored["mediaType"] == "text/csv"
    assert stored["sha256"] == hashlib.sha256(body).hexdigest()
    assert stored["version"] == 1

    listing = (await client.get(files_url(cid), headers=alice)).json()
    assert listing["total"] == 1 and listing["bytes"] == len(body)
    assert [i["path"] for i in listing["items"]] == ["data.csv"]

    download = await client.get(files_url(cid, "data.csv"), headers=alice)
    assert download.status_code == 200
    assert download.content == body
    assert download.headers["etag"] == f'"{stored["sha256"]}"'
    assert download.headers["content-disposition"].startswith("attachment;")
    assert download.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in download.headers["content-security-policy"]
    assert download.headers["content-type"].startswith("text/csv")


async def test_an_upload_of_several_files_stores_each_under_its_name_or_the_given_folder(
    client, alice, cid
) -> None:
    response = await upload(
        client, alice, cid, ("a.txt", b"A", "text/plain"), ("b.txt", b"BB", "text/plain")
    )
    assert [f["path"] for f in response.json()] == ["a.txt", "b.txt"]
    response = await upload(
        client, alice, cid, ("c.txt", b"C", "text/plain"), ("d.txt", b"D", None), path="in/"
    )
    assert [f["path"] for f in response.json()] == ["in/c.txt", "in/d.txt"]
    response = await upload(client, alice, cid, ("ignored.bin", b"X", None), path="named.md")
    assert response.json()[0]["path"] == "named.md"
    assert response.json()[0]["mediaType"] == "text/markdown"
    response = await upload(client, alice, cid, ("e.txt", b"E", None), path="in/")
    assert response.json()[0]["path"] == "in/e.txt"  # a trailing / names a folder

    listing = await client.get(files_url(cid), headers=alice, params={"prefix": "in/"})
    assert [i["path"] for i in listing.json()["items"]] == ["in/c.txt", "in/d.txt", "in/e.txt"]
    everything = (await client.get(files_url(cid), headers=alice)).json()
    assert [i["path"] for i in everything["items"]] == [
        "a.txt",
        "b.txt",
        "in/c.txt",
        "in/d.txt",
        "in/e.txt",
        "named.md",
    ]
    assert everything["total"] == 6 and everything["bytes"] == 7


async def test_put_creates_then_replaces_and_keeps_the_content_type(client, alice, cid) -> None:
    url = files_url(cid, "notes/plan.md")
    first = await client.put(url, headers=alice | {"Content-Type": "text/markdown"}, content=b"1")
    assert first.status_code == 201 and first.json()["version"] == 1
    second = await client.put(url, headers=alice | {"Content-Type": "text/x-rst"}, content=b"22")
    assert second.status_code == 200
    assert second.json()["version"] == 2 and second.json()["mediaType"] == "text/x-rst"
    assert (await client.get(url, headers=alice)).content == b"22"


async def test_a_decomposed_name_names_the_same_file_as_the_composed_one(
    client, alice, cid
) -> None:
    """macOS' file names come decomposed (NFD): `café` is the same file however it is sent."""
    nfd = unicodedata.normalize("NFD", "dossier/café.txt")
    put = await client.put(files_url(cid, nfd), headers=alice, content=b"one")
    assert put.status_code == 201 and put.json()["path"] == "dossier/café.txt"
    again = await upload(client, alice, cid, ("café.txt", b"two", "text/plain"), path="dossier/")
    assert again.status_code == 201 and again.json()[0]["version"] == 2
    download = await client.get(files_url(cid, nfd), headers=alice)
    assert download.content == b"two"
    listing = await client.get(files_url(cid), headers=alice, params={"prefix": "dossier/"})
    assert [i["path"] for i in listing.json()["items"]] == ["dossier/café.txt"]
    assert (await client.delete(files_url(cid, nfd), headers=alice)).status_code == 204


async def test_delete_removes_the_file_and_a_second_delete_is_404(client, alice, cid) -> None:
    await client.put(files_url(cid, "x.txt"), headers=alice, content=b"x")
    assert (await client.delete(files_url(cid, "x.txt"), headers=alice)).status_code == 204
    assert (await client.get(files_url(cid, "x.txt"), headers=alice)).status_code == 404
    again = await client.delete(files_url(cid, "x.txt"), headers=alice)
    assert again.status_code == 404
    assert again.json() == {"error": "File not found", "path": "x.txt"}
    assert (await client.get(files_url(cid), headers=alice)).json()["total"] == 0


async def test_ranges_and_if_none_match_are_honoured(client, alice, cid) -> None:
    body = bytes(range(100))
    etag = (await client.put(files_url(cid, "r.bin"), headers=alice, content=body)).json()
    url = files_url(cid, "r.bin")
    part = await client.get(url, headers=alice | {"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == body[10:20]
    assert part.headers["content-range"] == "bytes 10-19/100"
    tail = await client.get(url, headers=alice | {"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == body[-5:]
    rest = await client.get(url, headers=alice | {"Range": "bytes=95-"})
    assert rest.content == body[95:]
    outside = await client.get(url, headers=alice | {"Range": "bytes=100-"})
    assert outside.status_code == 416 and outside.headers["content-range"] == "bytes */100"
    same = await client.get(url, headers=alice | {"If-None-Match": f'"{etag["sha256"]}"'})
    assert same.status_code == 304 and same.content == b""
    changed = await client.get(url, headers=alice | {"If-None-Match": '"other"'})
    assert changed.status_code == 200 and changed.content == body


@pytest.mark.parametrize(
    ("path", "disposition"),
    [
        ("page.html", "attachment; filename=\"page.html\"; filename*=UTF-8''page.html"),
        (
            'dir/é "q".svg',
            "attachment; filename=\"_ _q_.svg\"; filename*=UTF-8''%C3%A9%20%22q%22.svg",
        ),
    ],
)
async def test_a_download_is_never_served_inline(client, alice, cid, path, disposition) -> None:
    script = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"
    await client.put(
        files_url(cid, path), headers=alice | {"Content-Type": "image/svg+xml"}, content=script
    )
    download = await client.get(files_url(cid, path), headers=alice)
    assert download.headers["content-disposition"] == disposition
    assert download.headers["content-security-policy"] == "sandbox; default-src 'none'"
    assert download.headers["x-content-type-options"] == "nosniff"


async def test_a_listing_link_opens_its_file_without_the_bearer_token_and_nothing_else(
    client, alice, cid
) -> None:
    await client.put(files_url(cid, "a.txt"), headers=alice, content=b"A")
    await client.put(files_url(cid, "b.txt"), headers=alice, content=b"B")
    items = (await client.get(files_url(cid), headers=alice)).json()["items"]
    link_a = items[0]["url"]
    assert link_a.startswith(files_url(cid, "a.txt") + "?token=")
    assert (await client.get(link_a)).content == b"A"
    token = link_a.split("token=", 1)[1]
    # The same token opens no other file, no other route, and nothing when tampered with.
    other = await client.get(files_url(cid, "b.txt"), params={"token": token})
    assert other.status_code == 401
    resume = await client.get(f"{API}/{cid}/resume/conversation:alice:x", params={"token": token})
    assert resume.status_code == 401
    tampered = await client.get(files_url(cid, "a.txt"), params={"token": token[:-2] + "xx"})
    assert tampered.status_code == 401
    assert (
        await client.delete(files_url(cid, "a.txt"), params={"token": token})
    ).status_code == 401


async def test_an_upload_over_a_limit_stores_nothing_of_that_request(api) -> None:
    async with api(workspace_file_bytes=10, workspace_files=3, workspace_bytes=25) as (
        client,
        alice,
        _,
    ):
        cid = (await client.post(API, headers=alice)).json()["id"]
        big = await upload(client, alice, cid, ("ok.txt", b"1", None), ("big.txt", b"x" * 11, None))
        assert big.status_code == 413
        assert big.json()["setting"] == "TURNSTREAM_WORKSPACE_FILE_BYTES"
        assert big.json()["limit"] == 10
        many = await upload(client, alice, cid, *[(f"{i}.txt", b"1", None) for i in range(4)])
        assert many.status_code == 413 and many.json()["setting"] == "TURNSTREAM_WORKSPACE_FILES"
        assert (await upload(client, alice, cid, ("a", b"x" * 10, None))).status_code == 201
        assert (await upload(client, alice, cid, ("b", b"x" * 10, None))).status_code == 201
        full = await upload(client, alice, cid, ("c", b"x" * 10, None))
        assert full.status_code == 413 and full.json()["setting"] == "TURNSTREAM_WORKSPACE_BYTES"
        # Replacing a file counts its new size, not both.
        assert (await upload(client, alice, cid, ("a", b"y" * 5, None))).status_code == 201
        put = await client.put(files_url(cid, "p"), headers=alice, content=b"z" * 11)
        assert put.status_code == 413
        listing = (await client.get(files_url(cid), headers=alice)).json()
        assert [(i["path"], i["size"]) for i in listing["items"]] == [("a", 5), ("b", 10)]
        assert listing["bytes"] == 15


async def test_ten_thousand_tiny_files_are_refused_whole(api) -> None:
    async with api() as (client, alice, _):
        cid = (await client.post(API, headers=alice)).json()["id"]
        parts = [(f"f{i}.txt", b"", None) for i in range(10_000)]
        response = await upload(client, alice, cid, *parts)
        assert response.status_code == 413
        assert response.json()["setting"] == "TURNSTREAM_WORKSPACE_FILES"
        assert (await client.get(files_url(cid), headers=alice)).json()["total"] == 0


async def test_a_file_and_a_folder_cannot_share_a_name(client, alice, cid) -> None:
    await client.put(files_url(cid, "a/b.txt"), headers=alice, content=b"1")
    clash = await client.put(files_url(cid, "a"), headers=alice, content=b"2")
    assert clash.status_code == 409 and clash.json()["error"] == "Path conflict"
    under = await client.put(files_url(cid, "a/b.txt/c"), headers=alice, content=b"3")
    assert under.status_code == 409
    both = await upload(client, alice, cid, ("x", b"1", None), ("x/y", b"2", None), path=None)
    assert both.status_code in (400, 409)
    listing = (await client.get(files_url(cid), headers=alice)).json()
    assert [i["path"] for i in listing["items"]] == ["a/b.txt"]


async def test_two_writes_of_one_path_at_once_both_land_whole_one_after_the_other(
    client, alice, cid
) -> None:
    url = files_url(cid, "same.txt")
    one, two = b"1" * 50_000, b"2" * 60_000
    answers = await asyncio.gather(
        client.put(url, headers=alice, content=one), client.put(url, headers=alice, content=two)
    )
    assert sorted(a.json()["version"] for a in answers) == [1, 2]
    newest = max(answers, key=lambda a: a.json()["version"]).json()
    stored = (await client.get(url, headers=alice)).content
    assert stored in (one, two)  # whole, never a mix
    assert hashlib.sha256(stored).hexdigest() == newest["sha256"]


async def test_an_upload_needs_a_multipart_body_with_a_file(client, alice, cid) -> None:
    raw = await client.post(files_url(cid), headers=alice, content=b"x")
    assert raw.status_code == 400 and "multipart" in raw.json()["detail"]
    fields_only = await client.post(files_url(cid), headers=alice, files={"path": (None, "a")})
    assert fields_only.status_code == 400


async def test_deleting_the_conversation_deletes_its_files(app, client, alice, cid) -> None:
    await client.put(files_url(cid, "doomed.txt"), headers=alice, content=b"bye")
    assert (await client.delete(f"{API}/{cid}", headers=alice)).status_code == 204
    listing = await app.state.runtime.files.listing(cid)
    assert listing.items == []


async def test_the_next_message_tells_the_agent_which_files_arrived(client, alice, cid) -> None:
    await upload(client, alice, cid, ("data.csv", b"a,b\n1,2\n", "text/csv"))
    reply = await client.post(
        f"{API}/{cid}/message/?stream=false", headers=alice, data={"content": "plot it"}
    )
    assert reply.status_code == 200, reply.text
    await client.post(
        f"{API}/{cid}/message/?stream=false", headers=alice, data={"content": "and again"}
    )
    messages = (await client.get(f"{API}/{cid}/messages", headers=alice)).json()["items"]
    users = [m for m in messages if m["role"] == "user"]
    assert [f["path"] for f in users[0]["files"]] == ["data.csv"]
    assert users[1]["files"] is None  # announced once


async def test_a_run_that_writes_a_file_streams_a_file_event_whose_link_downloads_it(
    api,
) -> None:
    async with api(tools="basic,workspace") as (client, alice, _):
        cid = (await client.post(API, headers=alice)).json()["id"]
        message = '/tool write_file {"path": "out/report.md", "content": "# hi"}'
        streamed = parse_sse(
            (
                await client.post(f"{API}/{cid}/message/", headers=alice, data={"content": message})
            ).text
        )
        (file_event,) = [e.data for e in streamed if e.event == "file"]
        assert file_event["path"] == "out/report.md"
        assert file_event["size"] == 4 and file_event["version"] == 1
        assert file_event["mediaType"] == "text/markdown"
        assert (await client.get(file_event["url"])).content == b"# hi"
        messages = (await client.get(f"{API}/{cid}/messages", headers=alice)).json()["items"]
        assert messages[-1]["files"][0]["path"] == "out/report.md"
        assert "url" not in messages[-1]["files"][0]
