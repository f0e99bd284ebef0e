"""A wrong method on an existing route is 405 with `Allow` and a JSON body (SPEC §6).

The allowed methods come from the app's own routes, so every route is
checked, with and without its trailing slash where both are served. A 405
depends on nothing but the method and the path template: it comes before the
401 and 403 checks, whoever asks and whatever conversation id is in the path.
An unknown path below a conversation keeps its 403 / 404.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

API = "/api/v1/conversations"
DENIED = {"detail": "Access denied to conversation"}
NOT_ALLOWED = {"detail": "Method Not Allowed"}
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE")
SID = "conversation:alice:019953dd-7000-7a00-8000-000000000001"
MALFORMED_CID = "not-a-uuid"


def _routes_by_path(app) -> dict[str, set[str]]:
    """Path template -> the methods served on it, from the app's routes (catch-alls aside)."""
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI >= 0.120 nests routers
    except ImportError:
        candidates = list(app.routes)
    else:
        candidates = list(iter_route_contexts(app.routes))
    served: dict[str, set[str]] = defaultdict(set)
    for route in candidates:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if path and methods and ":path}" not in path:
            served[path] |= set(methods)
    return dict(served)


def _allow(response) -> set[str]:
    return {m.strip() for m in response.headers["allow"].split(",")}


def _assert_405(response, allowed: set[str], what: str) -> None:
    assert response.status_code == 405, f"{what}: {response.status_code} {response.text}"
    assert _allow(response) == allowed, f"{what}: Allow {response.headers['allow']}"
    if response.request.method != "HEAD":
        assert response.headers["content-type"].startswith("application/json"), what
        assert response.json() == NOT_ALLOWED, what


@pytest.mark.parametrize(
    ("method", "suffix", "allowed"),
    [
        ("GET", "/message/", {"POST"}),
        ("GET", "/message", {"POST"}),
        ("PUT", "/message/", {"POST"}),
        ("GET", "/stop", {"POST"}),
        ("GET", "/regenerate", {"POST"}),
        ("GET", "/stream-token", {"POST"}),
        ("PUT", "", {"GET", "PATCH", "DELETE"}),
        ("POST", "", {"GET", "PATCH", "DELETE"}),
        ("POST", "/messages", {"GET"}),
        ("DELETE", "/active-session", {"GET"}),
        ("PUT", f"/resume/{SID}", {"GET", "POST"}),
        ("DELETE", f"/runs/{SID}", {"GET"}),
    ],
)
async def test_a_wrong_method_below_a_conversation_is_405(
    client, alice, cid, method, suffix, allowed
):
    response = await client.request(method, f"{API}/{cid}{suffix}", headers=alice)
    _assert_405(response, allowed, f"{method} {suffix}")


async def test_a_wrong_method_on_the_collection_is_405(client, alice):
    for method in ("DELETE", "PUT", "PATCH"):
        response = await client.request(method, API, headers=alice)
        _assert_405(response, {"GET", "POST"}, f"{method} {API}")


async def test_every_route_answers_every_other_method_with_405(app, client, alice, cid, make_token):
    """Derived from the app: every path, every method it does not serve, whoever asks."""
    bob = await make_token("bob")
    callers = {"owner": alice, "another user": bob, "no token": {}}
    routes = _routes_by_path(app)
    assert len([p for p in routes if p.startswith(API)]) >= 10, routes
    checked = 0
    for template, allowed in sorted(routes.items()):
        for conversation in (cid, MALFORMED_CID):
            url = template.replace("{cid}", conversation).replace("{session_id}", SID)
            for method in METHODS:
                if method in allowed:
                    continue
                for caller, headers in callers.items():
                    response = await client.request(method, url, headers=headers)
                    _assert_405(response, allowed, f"{method} {template} as {caller}")
                    checked += 1
    assert checked > 100


async def test_the_right_method_still_works_after_a_wrong_one(client, alice, cid):
    assert (await client.get(f"{API}/{cid}/stop", headers=alice)).status_code == 405
    stopped = await client.post(f"{API}/{cid}/stop", headers=alice)
    assert stopped.status_code == 404, stopped.text  # nothing is running
    assert stopped.json()["error"] == "No active run"


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("suffix", ["/no-such-path", "/stop/extra", "/messages/"])
async def test_an_unknown_path_below_ones_own_conversation_is_404(
    client, alice, cid, method, suffix
):
    response = await client.request(method, f"{API}/{cid}{suffix}", headers=alice)
    assert response.status_code == 404, response.text
    assert response.json() == {"detail": "Not Found"}


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "OPTIONS"])
async def test_an_unknown_path_below_someone_elses_conversation_is_403(
    client, cid, make_token, method
):
    bob = await make_token("bob")
    for conversation in (cid, MALFORMED_CID):
        response = await client.request(method, f"{API}/{conversation}/no-such-path", headers=bob)
        assert response.status_code == 403, response.text
        assert response.json() == DENIED


async def test_an_unknown_path_below_a_conversation_needs_a_token(client, cid):
    response = await client.get(f"{API}/{cid}/no-such-path")
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
