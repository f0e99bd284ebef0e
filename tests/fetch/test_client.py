"""The fetch against real HTTP servers on loopback: pages, redirects, limits, the deadline.

`fetch_private` lets the tests reach 127.0.0.0/8 (or less, to show a refusal); every
connection goes through LoopbackTransport, which refuses any other address.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from helpers import eventually

from turnstream.config import Settings
from turnstream.fetch.client import USER_AGENT, fetch
from turnstream.fetch.guard import FetchFailed, FetchRefused
from turnstream.fetch.text import readable

from .loopback import (
    FakeResolver,
    LoopbackTransport,
    answer,
    certificate,
    head,
    redirect,
    serving,
)

HTML = """<html><head><title>Notes</title><style>h1 {color: red}</style>
<script>alert("steal")</script></head>
<body><h1>Release notes</h1><noscript>enable JS</noscript><p>Version <b>2</b> is out.</p>



<ul><li>faster</li><li>smaller</li></ul><a href="/more">More</a>
<svg><text>drawing</text></svg><iframe src="/ad">ad</iframe></body></html>"""


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "fetch_private": "127.0.0.0/8",
        "fetch_allow": None,
        "fetch_timeout_seconds": 5.0,
        "fetch_bytes": 64 * 1024,
    }
    return Settings(**(values | overrides))


async def test_an_html_page_becomes_markdown() -> None:
    routes = {"/": answer(HTML, content_type="text/html; charset=utf-8")}
    async with serving(routes) as server:
        page = await fetch(server.url("/"), settings(), transport=LoopbackTransport())
    assert (page.url, page.status, page.reason) == (server.url("/"), 200, "OK")
    assert page.content_type == "text/html"
    text = readable(page.content_type, page.text)
    assert "# Release notes" in text
    assert "Version **2** is out." in text
    assert "* faster\n* smaller" in text
    assert "[More](/more)" in text
    for dropped in ("alert", "color: red", "enable JS", "drawing", "ad"):
        assert dropped not in text.split("Release notes", 1)[1]
    assert "\n\n\n" not in text


async def test_json_and_plain_text_come_as_they_are() -> None:
    data = json.dumps({"a": [1, 2], "b": "<p>not html</p>"}, indent=2)
    routes = {
        "/data": answer(data, content_type="application/json"),
        "/feed": answer("<feed/>", content_type="application/atom+xml"),
        "/latin": answer("café".encode("latin-1"), content_type="text/plain; charset=ISO-8859-1"),
        "/bad": answer(b"caf\xe9", content_type="text/plain; charset=no-such-charset"),
    }
    async with serving(routes) as server:
        pages = [
            await fetch(server.url(path), settings(), transport=LoopbackTransport())
            for path in routes
        ]
    assert [readable(p.content_type, p.text) for p in pages] == [
        data,
        "<feed/>",
        "café",
        "caf\N{REPLACEMENT CHARACTER}",  # unknown charset: UTF-8, errors replaced
    ]


async def test_an_error_status_is_a_page() -> None:
    async with serving({}) as server:
        page = await fetch(server.url("/missing"), settings(), transport=LoopbackTransport())
    assert (page.status, page.text) == (404, "not here")


async def test_the_request_names_turnstream_and_keeps_no_cookie() -> None:
    set_cookie = {"Set-Cookie": "session=secret; Path=/"}
    routes = {
        "/start": answer(status=302, content_type=None, headers={"Location": "/end", **set_cookie}),
        "/end": answer("done"),
    }
    async with serving(routes) as server:
        page = await fetch(server.url("/start"), settings(), transport=LoopbackTransport())
    assert page.text == "done"
    start, end = server.requests
    assert start.headers["user-agent"] == USER_AGENT == end.headers["user-agent"]
    assert start.headers["host"] == f"127.0.0.1:{server.port}"
    assert "cookie" not in end.headers


async def test_no_connection_carries_a_request_for_another_name() -> None:
    # A connection whose TLS was checked for one name must not serve another one. (The
    # fetch's own transport here: LoopbackTransport's pool is httpx's default.)
    resolver = FakeResolver({"a.test": ["127.0.0.1"], "b.test": ["127.0.0.1"]})
    keep = {"Connection": "keep-alive"}
    routes = {"/b": answer("b", headers=keep)}
    async with serving(routes) as server:
        server.keep_alive = True
        routes["/"] = answer(status=302, headers={"Location": server.url("/b", "b.test"), **keep})
        page = await fetch(server.url("/", "a.test"), settings(), resolver=resolver)
    assert page.text == "b"
    assert (server.connections, len(server.requests)) == (2, 2)


async def test_five_redirects_are_followed_and_a_sixth_is_refused() -> None:
    routes = {f"/hop/{n}": redirect(f"/hop/{n - 1}") for n in range(1, 7)}
    routes["/hop/0"] = answer("arrived")
    async with serving(routes) as server:
        page = await fetch(server.url("/hop/5"), settings(), transport=LoopbackTransport())
        assert (page.url, page.text) == (server.url("/hop/0"), "arrived")
        server.requests.clear()
        with pytest.raises(FetchFailed, match="redirects more than 5 times") as refused:
            await fetch(server.url("/hop/6"), settings(), transport=LoopbackTransport())
    assert "/hop/0" in str(refused.value)
    assert [r.path for r in server.requests] == [f"/hop/{n}" for n in range(6, 0, -1)]


@pytest.mark.parametrize(
    "location",
    ["http://127.0.0.2:{port}/", "http://[::1]:{port}/", "http://169.254.169.254/latest/"],
)
async def test_a_redirect_to_a_refused_address_is_not_followed(location: str) -> None:
    async with (
        serving({}, host="127.0.0.2") as elsewhere,
        serving({"/": redirect(location.format(port=elsewhere.port))}) as server,
    ):
        transport = LoopbackTransport()
        only_one = settings(fetch_private="127.0.0.1/32")
        with pytest.raises(FetchRefused, match="web_fetch reaches public hosts only"):
            await fetch(server.url("/"), only_one, transport=transport)
    assert [r.url.host for r in transport.requests] == ["127.0.0.1"]
    assert elsewhere.connections == 0


async def test_the_allowlist_refuses_other_hosts_and_their_redirects() -> None:
    resolver = FakeResolver({"allowed.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    allow = settings(fetch_allow="allowed.test")
    routes = {"/": answer("hi")}
    async with serving(routes) as server:
        away = f"http://other.test:{server.port}/"
        routes["/away"] = redirect(away)
        transport = LoopbackTransport()
        page = await fetch(
            server.url("/", "allowed.test"), allow, resolver=resolver, transport=transport
        )
        assert page.text == "hi"
        assert server.requests[0].headers["host"] == f"allowed.test:{server.port}"
        assert transport.requests[0].url.host == "127.0.0.1"
        for url in (away, server.url("/away", "allowed.test")):
            with pytest.raises(FetchRefused, match=r"other\.test is not in TURNSTREAM_FETCH_ALLOW"):
                await fetch(url, allow, resolver=resolver, transport=LoopbackTransport())
    assert resolver.asked == ["allowed.test", "allowed.test"]  # never other.test
    assert [r.path for r in server.requests] == ["/", "/away"]


async def test_a_body_past_the_cap_stops_the_download() -> None:
    chunk = b"x" * 65536
    total = 512 * len(chunk)  # 32 MiB, more than the socket buffers hold

    async def endless(writer: asyncio.StreamWriter) -> None:
        writer.write(head(200, {"Content-Type": "text/plain", "Connection": "close"}))
        for _ in range(total // len(chunk)):
            writer.write(chunk)
            await writer.drain()

    async with serving({"/big": endless}) as server:
        with pytest.raises(
            FetchFailed, match=r"larger than 65,536 bytes \(TURNSTREAM_FETCH_BYTES\)"
        ):
            await fetch(server.url("/big"), settings(), transport=LoopbackTransport())
        # The server sees its client leave long before it wrote the whole body.
        await eventually(lambda: server.cut_off, timeout=5, what="the download to stop")
    assert server.cut_off == ["/big"]


async def test_a_declared_length_past_the_cap_is_refused_before_reading() -> None:
    async def promise(writer: asyncio.StreamWriter) -> None:
        writer.write(head(200, {"Content-Type": "text/plain", "Content-Length": str(10**9)}))
        await writer.drain()
        await asyncio.sleep(60)  # the body never comes: the fetch must not wait for it

    async with serving({"/": promise}) as server:
        started = time.monotonic()
        with pytest.raises(FetchFailed, match="TURNSTREAM_FETCH_BYTES"):
            await fetch(
                server.url("/"), settings(fetch_timeout_seconds=30), transport=LoopbackTransport()
            )
    assert time.monotonic() - started < 10  # far from the deadline: it did not wait


async def test_a_slow_drip_is_cut_at_the_deadline() -> None:
    async def drip(writer: asyncio.StreamWriter) -> None:
        writer.write(head(200, {"Content-Type": "text/plain", "Content-Length": "1000"}))
        for _ in range(1000):
            writer.write(b".")
            await writer.drain()
            await asyncio.sleep(0.2)

    async with serving({"/": drip}) as server:
        started = time.monotonic()
        with pytest.raises(
            FetchFailed, match=r"longer than 1 s \(TURNSTREAM_FETCH_TIMEOUT_SECONDS\)"
        ):
            await fetch(
                server.url("/"), settings(fetch_timeout_seconds=1), transport=LoopbackTransport()
            )
        elapsed = time.monotonic() - started
    assert 0.9 < elapsed < 3  # 1 s, and room for a loaded machine


@pytest.mark.parametrize(
    ("content_type", "shown"),
    [
        ("image/png", "image/png"),
        ("application/octet-stream", "application/octet-stream"),
        (None, "of no stated type"),
    ],
)
async def test_a_page_that_is_not_text_is_refused(content_type: str | None, shown: str) -> None:
    routes = {"/": answer(b"\x89PNG\r\n", content_type=content_type)}
    async with serving(routes) as server:
        with pytest.raises(FetchFailed, match=f"is {shown}, not text"):
            await fetch(server.url("/"), settings(), transport=LoopbackTransport())


async def test_https_verifies_the_name_on_a_connection_to_the_checked_address(tmp_path) -> None:
    server_tls, client_tls, sni = certificate("secure.test", tmp_path)
    resolver = FakeResolver({"secure.test": ["127.0.0.1"], "wrong.test": ["127.0.0.1"]})
    async with serving({"/": answer("private matters")}, tls=server_tls) as server:
        url = f"https://secure.test:{server.port}/"
        transport = LoopbackTransport(verify=client_tls)
        page = await fetch(url, settings(), resolver=resolver, transport=transport)
        assert (page.url, page.text) == (url, "private matters")
        assert sni == ["secure.test"]
        assert transport.requests[0].url.host == "127.0.0.1"
        # The certificate names secure.test only: another name on that address fails.
        with pytest.raises(FetchFailed, match="CERTIFICATE_VERIFY_FAILED"):
            await fetch(
                f"https://wrong.test:{server.port}/",
                settings(),
                resolver=resolver,
                transport=LoopbackTransport(verify=client_tls),
            )
