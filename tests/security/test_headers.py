"""Oversized request headers against a real `turnstream serve`: a clear 431 with a JSON body.

The HTTP layer is part of the rule, so these tests talk to a real process.
Before the bound existed, uvicorn's httptools parser read any header whole:
1 MiB got a normal 200, and 64 MiB kept a core busy for 9.5 s. Now, with the
default TURNSTREAM_MAX_HEADER_BYTES (16 KiB) and at most 100 header fields,
the app answers 431; past 4 x the bound, `serve` itself answers the same 431,
stops reading and closes the connection.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import NamedTuple

import httpx
import pytest
from api_support import client_for, running_app
from servers import Server, create_token

BOUND = 16 * 1024
HEAD_CAP = 4 * BOUND
TOO_LARGE = "Request headers too large"


class Api(NamedTuple):
    url: str
    alice: dict[str, str]  # a bearer header of a user with no conversations


@pytest.fixture(scope="module")
def server(_redis_server_url, tmp_path_factory) -> Iterator[Api]:
    """One `turnstream serve` with default limits for the whole module."""
    tmp = tmp_path_factory.mktemp("headers")
    database_url = f"sqlite+aiosqlite:///{tmp}/headers.db"
    env = {
        "TURNSTREAM_REDIS_URL": _redis_server_url,
        "TURNSTREAM_DATABASE_URL": database_url,
        "TURNSTREAM_DATA_DIR": str(tmp / "data"),
    }
    with Server(env, tmp / "serve.log") as proc:
        token = create_token(database_url, "alice")
        yield Api(proc.url, {"Authorization": f"Bearer {token}"})


def _get(server: Api, headers: dict[str, str] | list[tuple[str, str]]) -> httpx.Response:
    with httpx.Client(timeout=30) as http:
        return http.get(f"{server.url}/api/v1/conversations", headers=headers)


def _assert_431(response: httpx.Response) -> str:
    assert response.status_code == 431, response.text[:300]
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == TOO_LARGE
    assert "TURNSTREAM_MAX_HEADER_BYTES" in body["detail"]
    return body["detail"]


def _assert_still_serving(server: Api) -> None:
    response = _get(server, server.alice)
    assert response.status_code == 200, response.text
    assert response.json()["total"] == 0


def test_a_10_kib_header_is_served(server):
    response = _get(server, {**server.alice, "X-Big": "a" * 10 * 1024})
    assert response.status_code == 200, response.text
    assert response.json() == {"items": [], "total": 0}


def test_headers_over_the_bound_get_431_naming_their_size_and_the_bound(server):
    response = _get(server, {**server.alice, "X-Big": "a" * 20 * 1024})
    detail = _assert_431(response)
    assert f"at most {BOUND}" in detail
    _assert_still_serving(server)


async def test_the_bound_is_the_setting(settings):
    """TURNSTREAM_MAX_HEADER_BYTES moves it, under any ASGI server (here in-process)."""
    tuned = settings.model_copy(update={"max_header_bytes": 2048})
    async with running_app(tuned) as app, client_for(app) as client:
        assert (await client.get("/health", headers={"X-Pad": "a" * 1500})).status_code == 200
        detail = _assert_431(await client.get("/health", headers={"X-Pad": "a" * 2500}))
        assert "at most 2048" in detail


def test_a_request_with_500_small_headers_gets_431(server):
    headers = [*server.alice.items(), *((f"X-H{i}", "v") for i in range(500))]
    detail = _assert_431(_get(server, headers))
    assert "at most 100 are accepted" in detail
    _assert_still_serving(server)


@pytest.mark.parametrize(
    "size", [pytest.param(64 * 1024, id="64KiB"), pytest.param(1024 * 1024, id="1MiB")]
)
def test_a_huge_header_gets_431_and_the_connection_is_closed(server, size):
    response = _get(server, {**server.alice, "X-Big": "a" * size})
    _assert_431(response)
    assert response.headers["connection"] == "close"
    _assert_still_serving(server)


def test_a_head_that_never_ends_is_refused_before_it_is_read_whole(server):
    """A client that keeps sending one header gets 431 once the cap is passed, not a hang."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        # Twice the cap, and never the blank line that would end the head.
        for _ in range(2 * HEAD_CAP // 1024):
            sock.sendall(b"a" * 1024)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), received[:300]
    assert b"content-type: application/json" in head.lower()
    assert httpx.Response(431, content=body).json()["error"] == TOO_LARGE
    _assert_still_serving(server)
