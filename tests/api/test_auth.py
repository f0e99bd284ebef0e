"""Authentication (SPEC §6): every /api/v1 route needs a valid bearer token; /health does not."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest
from api_support import client_for, running_app, served_routes, token_for
from sqlalchemy import select

from turnstream.store.models import User

# PyJWT warns about HMAC keys shorter than the hash (64 bytes for HS512); warnings are errors.
JWT_SECRET = "turnstream-test-secret-" + "0123456789abcdef" * 4
SESSION_ID = "conversation:alice:019953dd-7000-7a00-8000-000000000001"
BAD_HEADERS = {
    "no header": {},
    "basic scheme": {"Authorization": "Basic x"},
    "bearer without token": {"Authorization": "Bearer"},
    "bearer with blank token": {"Authorization": "Bearer    "},
    "wrong opaque token": {"Authorization": "Bearer ts_not-a-real-token"},
    "wrong other token": {"Authorization": "Bearer definitely-wrong"},
    "oversized token": {"Authorization": "Bearer ts_" + "x" * 5000},
}


def _api_routes(app) -> list[tuple[str, str]]:
    return sorted(served_routes(app, "/api/v1"))


def _fill(path: str, cid: str) -> str:
    # The catch-all below /conversations (routes/fallback.py) answers paths no route has.
    path = path.replace("{rest:path}", "{cid}/no-such-path")
    return path.replace("{cid}", cid).replace("{session_id}", SESSION_ID)


def _assert_401(response: httpx.Response, what: str) -> None:
    assert response.status_code == 401, f"{what}: {response.status_code} {response.text}"
    assert response.headers.get("www-authenticate") == "Bearer", what
    assert response.headers["content-type"].startswith("application/json"), what
    body = response.json()
    assert isinstance(body, dict) and body.get("detail"), what


def _jwt(claims: dict, secret: str = JWT_SECRET, algorithm: str = "HS256") -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt.encode(claims, secret, algorithm=algorithm)}"}


@pytest.fixture
async def jwt_app(settings):
    async with running_app(settings.model_copy(update={"jwt_secret": JWT_SECRET})) as application:
        yield application


@pytest.fixture
async def jwt_client(jwt_app):
    async with client_for(jwt_app) as http:
        yield http


async def _users(app) -> dict[str, str | None]:
    async with app.state.runtime.sessions() as db:
        return {u.id: u.email for u in await db.scalars(select(User))}


# -- opaque tokens -------------------------------------------------------------


async def test_every_api_route_refuses_requests_without_a_valid_token(app, client, make_token):
    alice = await make_token("alice")
    cid = (await client.post("/api/v1/conversations", headers=alice)).json()["id"]
    routes = _api_routes(app)
    assert len(routes) >= 12, routes  # the enumeration must not silently check nothing
    for method, template in routes:
        url = _fill(template, cid)
        for name, headers in BAD_HEADERS.items():
            response = await client.request(method, url, headers=headers)
            _assert_401(response, f"{method} {template} with {name}")
    # None of those requests changed anything.
    listed = (await client.get("/api/v1/conversations", headers=alice)).json()
    assert listed["total"] == 1
    assert listed["items"][0]["title"] == "New conversation"
    messages = await client.get(f"/api/v1/conversations/{cid}/messages", headers=alice)
    assert messages.json()["items"] == []


async def test_a_valid_token_is_accepted_with_any_case_of_the_scheme(client, make_token):
    token = (await make_token("alice"))["Authorization"].split(" ", 1)[1]
    for scheme in ("Bearer", "bearer", "BEARER"):
        response = await client.get(
            "/api/v1/conversations", headers={"Authorization": f"{scheme} {token}"}
        )
        assert response.status_code == 200, (scheme, response.text)


async def test_a_token_of_one_user_is_not_a_token_of_another(client, make_token):
    alice = await make_token("alice")
    bob = await make_token("bob")
    await client.post("/api/v1/conversations", headers=alice, json={"title": "alice's"})
    listed = (await client.get("/api/v1/conversations", headers=bob)).json()
    assert listed == {"items": [], "total": 0}


async def test_unauthenticated_post_with_a_malformed_body_gets_401_not_422(client, make_token):
    alice = await make_token("alice")
    cid = (await client.post("/api/v1/conversations", headers=alice)).json()["id"]
    for url, method in (
        ("/api/v1/conversations", "POST"),
        (f"/api/v1/conversations/{cid}", "PATCH"),
    ):
        response = await client.request(
            method, url, content=b'{"title": ', headers={"Content-Type": "application/json"}
        )
        _assert_401(response, f"{method} {url} with broken JSON")


async def test_unauthenticated_request_with_invalid_query_gets_401_not_422(client):
    response = await client.get("/api/v1/conversations?limit=0")
    _assert_401(response, "GET /conversations?limit=0")


# -- /health -------------------------------------------------------------------


async def test_health_needs_no_auth_and_reports_redis_and_database(client):
    for headers in ({}, {"Authorization": "Bearer nonsense"}):
        response = await client.get("/health", headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "ok"
        assert body["redis"] == "ok"
        assert body["database"] == "ok"


async def test_openapi_document_is_public(client):
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert "/api/v1/conversations" in response.json()["paths"]


# -- JWT -------------------------------------------------------------------------


async def test_jwt_with_sub_and_email_authenticates_and_creates_the_user(jwt_app, jwt_client):
    assert "bob" not in await _users(jwt_app)
    headers = _jwt({"sub": "bob", "email": "bob@example.com", "exp": int(time.time()) + 600})
    created = await jwt_client.post("/api/v1/conversations", headers=headers, json={"title": "x"})
    assert created.status_code == 201, created.text
    assert created.json()["user_id"] == "bob"
    assert (await _users(jwt_app))["bob"] == "bob@example.com"
    # The same identity again: the same user, who sees their conversation.
    listed = await jwt_client.get("/api/v1/conversations", headers=_jwt({"sub": "bob"}))
    assert listed.status_code == 200, listed.text
    assert listed.json()["total"] == 1
    assert list(await _users(jwt_app)) == ["bob"]


async def test_jwt_user_and_opaque_token_user_are_the_same_account(jwt_app, jwt_client):
    opaque = await token_for(jwt_app, "carol")
    cid = (await jwt_client.post("/api/v1/conversations", headers=opaque)).json()["id"]
    response = await jwt_client.get(f"/api/v1/conversations/{cid}", headers=_jwt({"sub": "carol"}))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(_jwt({"sub": "bob"}, secret="another-secret-0123456789abcdefgh"), id="other"),
        pytest.param(_jwt({"sub": "bob", "exp": int(time.time()) - 3600}), id="expired"),
        pytest.param(_jwt({"sub": "bob", "nbf": int(time.time()) + 3600}), id="not-yet-valid"),
        pytest.param(_jwt({"email": "bob@example.com"}), id="no-sub"),
        pytest.param(_jwt({"sub": ""}), id="empty-sub"),
        pytest.param(_jwt({"sub": "a b"}), id="sub-with-space"),
        pytest.param(_jwt({"sub": "a" * 65}), id="sub-65-chars"),
        pytest.param(_jwt({"sub": "bob/../x"}), id="sub-with-slash"),
        pytest.param(_jwt({"sub": "bób"}), id="sub-non-ascii"),
        pytest.param(_jwt({"sub": 12345}), id="sub-not-a-string"),
        pytest.param(_jwt({"sub": "bob"}, algorithm="HS512"), id="hs512"),
        pytest.param(_jwt({"sub": "bob"}, secret=None, algorithm="none"), id="alg-none"),
        pytest.param({"Authorization": "Bearer a.b.c"}, id="garbage-jwt"),
    ],
)
async def test_invalid_jwts_are_refused(jwt_app, jwt_client, headers):
    response = await jwt_client.get("/api/v1/conversations", headers=headers)
    _assert_401(response, "invalid JWT")
    assert await _users(jwt_app) == {}


async def test_jwt_sub_with_a_trailing_newline_is_refused(jwt_app, jwt_client):
    response = await jwt_client.get("/api/v1/conversations", headers=_jwt({"sub": "bob\n"}))
    _assert_401(response, "sub with trailing newline")
    assert await _users(jwt_app) == {}


async def test_jwt_is_refused_when_no_secret_is_configured(app, client):
    assert app.state.runtime.settings.jwt_secret is None
    for secret in (JWT_SECRET, "another-secret-0123456789abcdefgh"):
        response = await client.get("/api/v1/conversations", headers=_jwt({"sub": "bob"}, secret))
        _assert_401(response, "JWT without a configured secret")
    assert await _users(app) == {}
