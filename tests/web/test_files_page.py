"""The conversation's workspace on the chat page, in real headless Chromium.

Against a real `turnstream serve` with the workspace tools, so that a demo turn
`/tool write_file {...}` writes a file and streams its `file` event. Every link
the page shows is opened the way a browser opens it: fetched in the page with
no Authorization header (its signed url is all it has); every thumbnail must
actually load under the page's Content-Security-Policy.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, Request, expect
from web_support import Served, User, open_chat, send, serve

# Replies to plain messages are short here: these tests are about files.
DEMO = {"TURNSTREAM_DEMO_WORDS": "6", "TURNSTREAM_WORKSPACE_FILE_BYTES": "100000"}
WRITE_REPORT = '/tool write_file {"path": "out/report.md", "content": "# hi"}'
PANEL = "#file-list .file-ref"
# Any Unicode, and markup that must stay text.
ODD_NAME = "Grüße <b>東京</b> & co.txt"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One `turnstream serve` for the module, with the workspace tools."""
    tmp = tmp_path_factory.mktemp("files")
    with serve(tmp, TURNSTREAM_TOOLS="basic,workspace", **DEMO) as served:
        yield served


def png(width: int, height: int) -> bytes:
    """A real PNG: `width` x `height` red pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(b"\0" + b"\xcc\x22\x22\xff" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def bmp_text() -> str:
    """A real 2x1 BMP whose every byte is ASCII: the demo agent's write_file takes text."""
    pixels = bytes([0x20, 0x40, 0x70, 0x70, 0x40, 0x20, 0, 0])  # two BGR pixels, a row of 8
    header = struct.pack("<IiiHHIIiiII", 40, 2, 1, 1, 24, 0, len(pixels), 0, 0, 0, 0)
    data = b"BM" + struct.pack("<IHHI", 14 + len(header) + len(pixels), 0, 0, 14 + len(header))
    data += header + pixels
    assert max(data) < 0x80
    return data.decode("ascii")


def payload(name: str, data: bytes, mime: str = "text/plain") -> dict[str, Any]:
    return {"name": name, "mimeType": mime, "buffer": data}


def fetch(page: Page, href: str) -> list[Any]:
    """[status, text] of `href`, fetched by the page itself, with no Authorization header."""
    result: list[Any] = page.evaluate(
        "async (href) => { const r = await fetch(href); return [r.status, await r.text()]; }", href
    )
    return result


def assert_loads(image: Locator, width: int) -> None:
    """The one <img> loads (or fails), and it is an image `width` pixels across."""
    expect(image).to_have_count(1)
    handle = image.element_handle()
    image.page.wait_for_function("(img) => img.complete", arg=handle)
    assert handle.evaluate("(img) => [img.naturalWidth, img.src]")[0] == width


def uploads(page: Page) -> list[Request]:
    """The upload requests (POST …/files) the page makes from now on."""
    seen: list[Request] = []
    page.on(
        "request",
        lambda r: seen.append(r) if r.method == "POST" and r.url.endswith("/files") else None,
    )
    return seen


def drop(page: Page, name: str, text: str) -> None:
    """Drop a file on the message box, as a drag from the desktop would."""
    page.evaluate(
        """([name, text]) => {
            const data = new DataTransfer();
            data.items.add(new File([text], name, { type: "text/plain" }));
            const target = document.getElementById("composer-input");
            const init = { bubbles: true, cancelable: true, dataTransfer: data };
            for (const type of ["dragenter", "dragover", "drop"]) {
                target.dispatchEvent(new DragEvent(type, init));
            }
        }""",
        [name, text],
    )


def open_new(page: Page, served: Served, user: User) -> str:
    cid = user.conversation()
    open_chat(page, served, user, cid)
    return cid


def test_attached_files_are_uploaded_with_the_message_and_listed(served, context):
    user = served.user("fiona")
    page = context.new_page()
    cid = open_new(page, served, user)
    expect(page.locator("#no-files")).to_be_visible()  # nothing in the workspace yet
    posted = uploads(page)
    page.locator("#attach-input").set_input_files(
        [
            payload(ODD_NAME, b"some notes\n"),
            payload("pic.png", png(3, 2), "image/png"),
            payload("not-this.txt", b"x"),
        ]
    )
    chips = page.locator("#attachments .chip-name")
    expect(chips).to_have_text([ODD_NAME, "pic.png", "not-this.txt"])
    expect(page.locator("#attachments .chip-size")).to_have_text(
        ["11 B", f"{len(png(3, 2))} B", "1 B"]
    )
    page.get_by_role("button", name="Remove not-this.txt").click()
    drop(page, "dropped.txt", "dropped on the box")
    expect(chips).to_have_text([ODD_NAME, "pic.png", "dropped.txt"])
    assert posted == []  # nothing is uploaded before Send

    reply = send(page, "here are my files")
    expect(reply).to_have_attribute("data-status", "completed")
    assert len(posted) == 1  # one multipart POST for the three
    expect(page.locator("#attachments")).to_be_hidden()
    names = sorted([ODD_NAME, "dropped.txt", "pic.png"])
    # The user message shows its files, linked; the Files panel lists them.
    mine = page.locator(".msg.user .file-ref")
    expect(mine.locator(".file-link")).to_have_count(3)
    assert sorted(mine.locator(".file-link").all_inner_texts()) == names
    expect(page.locator(f"{PANEL} .file-link")).to_have_text(names)
    expect(page.locator("#files-summary")).to_contain_text("3 files")
    expect(page.get_by_role("button", name="Files (3)")).to_be_visible()
    notes = mine.filter(has_text="Grüße").locator(".file-link").get_attribute("href")
    assert notes and fetch(page, notes) == [200, "some notes\n"]
    # The PNG shows as a thumbnail that loads, in the message and in the panel.
    assert_loads(page.locator(".msg.user img"), 3)
    assert_loads(page.locator("#file-list img"), 3)
    expect(page.locator("#messages b, #file-list b")).to_have_count(0)  # names are text
    # As stored: the user message carries the files uploaded before it.
    first, *_ = user.messages(cid)
    assert first["role"] == "user" and first["content"] == "here are my files"
    assert sorted(f["path"] for f in first["files"]) == names


def test_an_upload_the_server_refuses_shows_why_and_sends_nothing(served, context):
    user = served.user("gustav")
    page = context.new_page()
    cid = open_new(page, served, user)
    page.locator("#attach-input").set_input_files(
        payload("big.bin", b"\0" * 150_000, "application/octet-stream")
    )
    box = page.get_by_label("Your message")
    box.fill("a big one")
    box.press("Enter")
    expect(page.locator("#notice")).to_contain_text("over the limit for one file")
    expect(page.locator(".msg")).to_have_count(0)
    expect(box).to_have_value("a big one")  # to try again
    expect(page.locator("#attachments .chip-name")).to_have_text(["big.bin"])
    expect(page.locator("#no-files")).to_be_visible()
    assert user.messages(cid) == []


def test_a_file_the_agent_writes_is_a_download_link_in_the_reply(served, context):
    user = served.user("hana")
    page = context.new_page()
    open_new(page, served, user)
    send(page, WRITE_REPORT)
    reply = page.locator(".msg.assistant").first  # this one, also once another follows
    expect(reply).to_have_attribute("data-status", "completed")
    link = reply.locator(".turn-files .file-link")
    expect(link).to_have_text("out/report.md")
    expect(link).to_have_attribute("download", "")
    href = link.get_attribute("href")
    assert href and "token=" in href
    assert fetch(page, href) == [200, "# hi"]
    expect(page.locator(f"{PANEL} .file-link")).to_have_text(["out/report.md"])

    gone = send(page, '/tool delete_file {"path": "out/report.md"}')
    expect(gone).to_have_attribute("data-status", "completed")
    expect(gone.locator(".turn-files .file-ref")).to_have_text("deleted out/report.md")
    # The file is gone: the first reply names it as plain text, the panel is empty.
    expect(reply.locator(".turn-files .file-ref")).to_have_attribute("data-state", "missing")
    expect(reply.locator(".turn-files a")).to_have_count(0)
    expect(page.locator("#no-files")).to_be_visible()
    page.reload()
    expect(page.locator(".msg.assistant")).to_have_count(2)
    expect(page.locator(".msg.assistant .turn-files .file-ref")).to_have_count(2)
    first, second = page.locator(".msg.assistant .turn-files .file-ref").all()
    expect(first).to_have_attribute("data-state", "missing")
    expect(first).to_have_text("out/report.md 4 B")
    expect(first.locator("a")).to_have_count(0)
    expect(second).to_have_text("deleted out/report.md")


def test_an_image_the_agent_writes_shows_as_a_thumbnail_but_never_svg(served, context):
    user = served.user("ivo")
    page = context.new_page()
    open_new(page, served, user)
    reply = send(page, "/tool write_file " + json.dumps({"path": "pic.bmp", "content": bmp_text()}))
    expect(reply).to_have_attribute("data-status", "completed")
    expect(reply.locator(".turn-files .file-link")).to_have_text("pic.bmp")
    assert_loads(reply.locator(".turn-files img"), 2)
    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"><rect width="9"/></svg>'
    reply = send(page, "/tool write_file " + json.dumps({"path": "x.svg", "content": svg}))
    expect(reply).to_have_attribute("data-status", "completed")
    expect(reply.locator(".turn-files .file-link")).to_have_text("x.svg")
    expect(reply.locator("img")).to_have_count(0)
    expect(page.locator(f"{PANEL} .file-link")).to_have_text(["pic.bmp", "x.svg"])
    assert_loads(page.locator("#file-list img"), 2)  # the BMP's only


def test_after_a_reload_every_file_is_still_shown_and_linked(served, context):
    user = served.user("jun")
    page = context.new_page()
    open_new(page, served, user)
    page.locator("#attach-input").set_input_files(payload("notes.txt", b"my notes"))
    expect(send(page, "my notes")).to_have_attribute("data-status", "completed")
    expect(send(page, WRITE_REPORT)).to_have_attribute("data-status", "completed")
    page.reload()
    # Stored messages carry no links: they are linked from a fresh listing.
    mine = page.locator(".msg.user .file-link")
    expect(mine).to_have_text(["notes.txt"])
    theirs = page.locator(".msg.assistant .turn-files .file-link")
    expect(theirs).to_have_text(["out/report.md"])
    assert fetch(page, mine.get_attribute("href") or "") == [200, "my notes"]
    assert fetch(page, theirs.get_attribute("href") or "") == [200, "# hi"]
    expect(page.locator(f"{PANEL} .file-link")).to_have_text(["notes.txt", "out/report.md"])
    # Another conversation has its own (empty) workspace; coming back lists this one again.
    page.get_by_role("button", name="New conversation").click()
    expect(page.locator("#no-files")).to_be_visible()
    expect(page.locator(PANEL)).to_have_count(0)
    page.go_back()
    expect(page.locator(f"{PANEL} .file-link")).to_have_text(["notes.txt", "out/report.md"])
    expect(page.locator(".msg.assistant .turn-files .file-link")).to_have_text(["out/report.md"])
