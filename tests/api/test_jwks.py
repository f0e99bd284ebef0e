"""Sign-in from an identity provider (TURNSTREAM_JWKS_URL), against a real JWKS endpoint.

The endpoint is a small HTTP server on loopback, in a thread, serving public keys
this module generates; it counts the requests it answers, so that the tests can
see every fetch, refetch and its rate limit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from api_support import client_for, running_app, token_for
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sqlalchemy import select

from turnstream.store.models import User

ISSUER = "https://id.example.test/"
AUDIENCE = "turnstream-test"
# HS256 tokens still work beside the provider's (see test_auth.py for why this long).
JWT_SECRET = "turnstream-test-secret-" + "0123456789abcdef" * 4
# Fetches are at most this often here; "immediately" in a test is well under it.
REFETCH_SECONDS = 1.0
CONVERSATIONS = "/api/v1/conversations"


@dataclass(frozen=True)
class Key:
    kid: str
    alg: str
    private: Any

    @property
    def jwk(self) -> dict[str, Any]:
        algorithm = (
            jwt.algorithms.RSAAlgorithm if self.alg == "RS256" else jwt.algorithms.ECAlgorithm
        )
        public = algorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "alg": self.alg, "use": "sig"}

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _rsa(kid: str) -> Key:
    return Key(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def keys() -> dict[str, Key]:
    """`rsa` and `ec`, published; `rotated`, published later; `intruder`, never."""
    return {
        "rsa": _rsa("rsa-2026-01"),
        "ec": Key("ec-2026-01", "ES256", ec.generate_private_key(ec.SECP256R1())),
        "rotated": _rsa("rsa-2026-02"),
        "intruder": _rsa("intruder"),
    }


class JwksServer:
    """A JWKS endpoint on loopback: `keys` are served; `mode` can break it on purpose."""

    def __init__(self, keys: list[Key]) -> None:
        self.keys = keys
        self.mode = "ok"  # or "http-500", "not-json", "no-keys"
        self.delay = 0.0  # seconds before each answer
        self.requests = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.answer(self)

            def log_message(self, *_args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_port}/.well-known/jwks.json"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests += 1
        time.sleep(self.delay)
        status, body = 200, json.dumps({"keys": [k.jwk for k in self.keys]}).encode()
        if self.mode == "http-500":
            status, body = 500, b'{"error": "down"}'
        elif self.mode == "not-json":
            body = b"<html>maintenance</html>"
        elif self.mode == "no-keys":
            body = b'{"keys": []}'
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def stop(self) -> None:
        """Gone: the port refuses connections from now on."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def jwks(keys):
    server = JwksServer([keys["rsa"], keys["ec"]])
    yield server
    server.stop()


@contextlib.asynccontextmanager
async def provider_client(settings, url: str, **update: Any):
    """A client of an app that accepts the provider's tokens (issuer and audience checked)."""
    update = {
        "jwks_url": url,
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
        "jwks_refetch_seconds": REFETCH_SECONDS,
        **update,
    }
    async with running_app(settings.model_copy(update=update)) as app:
        async with client_for(app) as http:
            http.app = app  # for users_of
            yield http


@pytest.fixture
async def client(settings, jwks):
    async with provider_client(settings, jwks.url) as http:
        yield http


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600}
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


def signed(key: Key, payload: dict[str, Any] | None = None, **header: Any) -> str:
    return jwt.encode(
        claims() if payload is None else payload,
        key.private,
        algorithm=key.alg,
        headers={"kid": key.kid, **header},
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def hs256_with(secret: bytes, payload: dict[str, Any], kid: str) -> str:
    """An HS256 token made by hand: PyJWT refuses to use a public key as an HMAC secret."""
    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    parts = [_b64(json.dumps(part).encode()) for part in (header, payload)]
    signing_input = b".".join(parts)
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + _b64(signature)).decode()


async def users_of(http: httpx.AsyncClient) -> dict[str, str | None]:
    async with http.app.state.runtime.sessions() as db:
        return {u.id: u.email for u in await db.scalars(select(User))}


def assert_401(response: httpx.Response, what: str) -> None:
    assert response.status_code == 401, f"{what}: {response.status_code} {response.text}"
    assert response.headers.get("www-authenticate") == "Bearer", what
    assert response.json().get("detail"), what


def assert_503(response: httpx.Response, what: str) -> None:
    assert response.status_code == 503, f"{what}: {response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/json"), what
    assert response.headers.get("retry-after") == "5", what
    body = response.json()
    assert body["error"] == "Identity provider unavailable", what
    assert "Retry shortly" in body["detail"], what


# -- accepted ----------------------------------------------------------------------------


async def test_rs256_and_es256_tokens_sign_in_and_first_sight_creates_the_user(client, jwks, keys):
    assert await users_of(client) == {}
    alice = bearer(signed(keys["rsa"], claims(sub="alice", email="alice@example.com")))
    created = await client.post(CONVERSATIONS, headers=alice, json={"title": "first"})
    assert created.status_code == 201, created.text
    assert created.json()["user_id"] == "alice"
    assert await users_of(client) == {"alice": "alice@example.com"}

    bob = bearer(signed(keys["ec"], claims(sub="bob")))
    listed = await client.get(CONVERSATIONS, headers=bob)
    assert listed.status_code == 200, listed.text
    assert listed.json() == {"items": [], "total": 0}
    # The same identity again is the same account, with its conversation.
    again = await client.get(CONVERSATIONS, headers=bearer(signed(keys["rsa"])))
    assert again.json()["total"] == 1
    assert set(await users_of(client)) == {"alice", "bob"}
    # One fetch served them all: the keys are cached.
    assert jwks.requests == 1


async def test_exp_nbf_and_iat_allow_a_small_clock_skew(client, keys):
    now = int(time.time())
    for name, payload in {
        "expired 10 s ago": claims(exp=now - 10),
        "valid in 10 s": claims(nbf=now + 10),
        "issued in 10 s": claims(iat=now + 10),
    }.items():
        response = await client.get(CONVERSATIONS, headers=bearer(signed(keys["rsa"], payload)))
        assert response.status_code == 200, f"{name}: {response.text}"


async def test_a_configured_user_claim_names_the_user(settings, jwks, keys):
    # Auth0's `sub` ("auth0|abc…") is no user id; a claim of the app's own can be.
    async with provider_client(settings, jwks.url, jwt_user_claim="https://app.test/uid") as http:
        payload = claims(sub="auth0|64f0c2", **{"https://app.test/uid": "u-64f0c2"})
        created = await http.post(CONVERSATIONS, headers=bearer(signed(keys["rsa"], payload)))
        assert created.status_code == 201, created.text
        assert created.json()["user_id"] == "u-64f0c2"
        missing = await http.get(CONVERSATIONS, headers=bearer(signed(keys["rsa"])))
        assert_401(missing, "no user claim")
        assert list(await users_of(http)) == ["u-64f0c2"]


async def test_without_issuer_and_audience_settings_neither_is_checked(settings, jwks, keys):
    async with provider_client(settings, jwks.url, jwt_issuer=None, jwt_audience=None) as http:
        plain = claims(iss="https://anyone.test/", aud=None)
        ok = await http.get(CONVERSATIONS, headers=bearer(signed(keys["rsa"], plain)))
        assert ok.status_code == 200, ok.text
        # PyJWT's rule, kept: a token meant for some audience is refused when none is set.
        aimed = await http.get(CONVERSATIONS, headers=bearer(signed(keys["rsa"], claims())))
        assert_401(aimed, "aud without a configured audience")


# -- refused -----------------------------------------------------------------------------


def _forged() -> dict[str, Callable[[dict[str, Key]], str]]:
    now = int(time.time())
    return {
        "wrong issuer": lambda k: signed(k["rsa"], claims(iss="https://evil.test/")),
        "no issuer": lambda k: signed(k["rsa"], claims(iss=None)),
        "wrong audience": lambda k: signed(k["rsa"], claims(aud="another-app")),
        "no audience": lambda k: signed(k["rsa"], claims(aud=None)),
        "expired": lambda k: signed(k["rsa"], claims(exp=now - 120)),
        "not yet valid": lambda k: signed(k["ec"], claims(nbf=now + 120)),
        "no exp": lambda k: signed(k["rsa"], claims(exp=None)),
        "no sub": lambda k: signed(k["rsa"], claims(sub=None)),
        "sub not a user id": lambda k: signed(k["rsa"], claims(sub="auth0|64f0c2")),
        "alg none": lambda k: jwt.encode(
            claims(), None, algorithm="none", headers={"kid": "rsa-2026-01"}
        ),
        "hs256 with the public key": lambda k: hs256_with(
            k["rsa"].public_pem, claims(), "rsa-2026-01"
        ),
        "hs256 with the jwk's n": lambda k: hs256_with(
            k["rsa"].jwk["n"].encode(), claims(), "rsa-2026-01"
        ),
        "hs256 with the server's secret": lambda k: hs256_with(
            JWT_SECRET.encode(), claims(), "rsa-2026-01"
        ),
        "another key, a published kid": lambda k: signed(
            Key("rsa-2026-01", "RS256", k["intruder"].private)
        ),
        "es256 header on an rsa key": lambda k: signed(
            Key("rsa-2026-01", "ES256", k["ec"].private)
        ),
        "rs256 header on an ec key": lambda k: signed(Key("ec-2026-01", "RS256", k["rsa"].private)),
        "no kid": lambda k: jwt.encode(claims(), k["rsa"].private, algorithm="RS256"),
        "garbage": lambda k: "a.b.c",
        "tampered payload": lambda k: _tampered(signed(k["rsa"])),
    }


def _tampered(token: str) -> str:
    header, _payload, signature = token.split(".")
    payload = _b64(json.dumps(claims(sub="mallory")).encode()).decode()
    return f"{header}.{payload}.{signature}"


@pytest.mark.parametrize("case", list(_forged()))
async def test_forged_and_invalid_tokens_are_refused(client, jwks, keys, case):
    # A valid token first, so that the keys are at hand and any refetch would show.
    assert (await client.get(CONVERSATIONS, headers=bearer(signed(keys["rsa"])))).status_code == 200
    token = _forged()[case](keys)
    response = await client.get(CONVERSATIONS, headers=bearer(token))
    assert_401(response, case)
    assert jwks.requests == 1, f"{case}: a token with a published kid needs no refetch"
    assert list(await users_of(client)) == ["alice"]


async def test_a_jwt_secret_accepts_no_rs256_token(settings, keys):
    async with running_app(settings.model_copy(update={"jwt_secret": JWT_SECRET})) as app:
        async with client_for(app) as http:
            response = await http.get(CONVERSATIONS, headers=bearer(signed(keys["rsa"])))
            assert_401(response, "RS256 without a JWKS URL")


async def test_hs256_tokens_keep_their_secret_and_never_reach_the_provider(settings, jwks, keys):
    hs256 = bearer(
        jwt.encode(claims(sub="carol", iss=None, aud=None), JWT_SECRET, algorithm="HS256")
    )
    # JWKS only: an HS256 token is refused before any key is looked up.
    async with provider_client(settings, jwks.url) as http:
        assert_401(await http.get(CONVERSATIONS, headers=hs256), "HS256 with JWKS only")
    assert jwks.requests == 0
    # Both: HS256 goes to the secret alone (no fetch), RS256 to the provider.
    async with provider_client(settings, jwks.url, jwt_secret=JWT_SECRET) as http:
        ok = await http.get(CONVERSATIONS, headers=hs256)
        assert ok.status_code == 200, ok.text
        assert jwks.requests == 0
        forged = hs256_with(keys["rsa"].public_pem, claims(), "rsa-2026-01")
        assert_401(await http.get(CONVERSATIONS, headers=bearer(forged)), "HS256 with the key")
        assert jwks.requests == 0
        rs256 = await http.get(CONVERSATIONS, headers=bearer(signed(keys["rsa"])))
        assert rs256.status_code == 200, rs256.text
        assert jwks.requests == 1
        assert set(await users_of(http)) == {"carol", "alice"}


# -- fetching: unknown kids, rotation, the rate limit ------------------------------------


async def test_an_unknown_kid_refetches_the_keys_and_is_still_refused(client, jwks, keys):
    assert (await client.get(CONVERSATIONS, headers=bearer(signed(keys["rsa"])))).status_code == 200
    await asyncio.sleep(REFETCH_SECONDS + 0.05)
    intruder = bearer(signed(keys["intruder"]))
    assert_401(await client.get(CONVERSATIONS, headers=intruder), "unknown kid")
    assert jwks.requests == 2
    # Again at once: within the rate limit, no fetch.
    assert_401(await client.get(CONVERSATIONS, headers=intruder), "unknown kid again")
    assert jwks.requests == 2


async def test_key_rotation_is_picked_up_by_a_refetch_at_most_once_per_interval(client, jwks, keys):
    old, new = keys["rsa"], keys["rotated"]
    assert (await client.get(CONVERSATIONS, headers=bearer(signed(old)))).status_code == 200
    assert jwks.requests == 1
    jwks.keys = [new, keys["ec"]]  # the provider rotates: the old key is withdrawn
    # Right after a fetch, the new kid waits for the interval: no request reaches the server.
    assert_401(await client.get(CONVERSATIONS, headers=bearer(signed(new))), "too soon")
    assert jwks.requests == 1
    await asyncio.sleep(REFETCH_SECONDS + 0.05)
    response = await client.get(CONVERSATIONS, headers=bearer(signed(new)))
    assert response.status_code == 200, response.text
    assert jwks.requests == 2
    # The withdrawn key is no longer trusted, and asking again fetches nothing.
    assert_401(await client.get(CONVERSATIONS, headers=bearer(signed(old))), "withdrawn key")
    assert jwks.requests == 2


async def test_concurrent_unknown_kids_make_one_fetch(client, jwks, keys):
    assert (await client.get(CONVERSATIONS, headers=bearer(signed(keys["rsa"])))).status_code == 200
    await asyncio.sleep(REFETCH_SECONDS + 0.05)
    jwks.delay = 0.3  # a slow provider: every request below arrives during the fetch
    made_up = [Key(f"made-up-{i}", "RS256", keys["intruder"].private) for i in range(30)]
    responses = await asyncio.gather(
        *(client.get(CONVERSATIONS, headers=bearer(signed(key))) for key in made_up)
    )
    for response in responses:
        assert_401(response, "made-up kid")
    assert jwks.requests == 2


async def test_keys_are_fetched_again_when_the_cache_expires(settings, jwks, keys):
    async with provider_client(
        settings, jwks.url, jwks_cache_seconds=0.3, jwks_refetch_seconds=0.1
    ) as http:
        token = bearer(signed(keys["rsa"]))
        assert (await http.get(CONVERSATIONS, headers=token)).status_code == 200
        assert (await http.get(CONVERSATIONS, headers=token)).status_code == 200
        assert jwks.requests == 1
        await asyncio.sleep(0.35)
        assert (await http.get(CONVERSATIONS, headers=token)).status_code == 200
        assert jwks.requests == 2


# -- the provider down ---------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["refused", "http-500", "not-json", "no-keys"])
async def test_an_unreachable_provider_gives_503_not_401(settings, jwks, keys, failure):
    if failure == "refused":
        jwks.stop()
    else:
        jwks.mode = failure
    async with provider_client(settings, jwks.url) as http:
        token = bearer(signed(keys["rsa"]))
        assert_503(await http.get(CONVERSATIONS, headers=token), failure)
        # A malformed body too: the credential is judged first, as for any request.
        broken = await http.post(
            CONVERSATIONS,
            content=b'{"title": ',
            headers={**token, "Content-Type": "application/json"},
        )
        assert_503(broken, f"{failure}, malformed body")
        # The rate limit holds for failures too, and turnstream's own tokens still work.
        assert jwks.requests == (0 if failure == "refused" else 1)
        opaque = await http.get(CONVERSATIONS, headers=await token_for(http.app, "dave"))
        assert opaque.status_code == 200, opaque.text
        assert list(await users_of(http)) == ["dave"]
        # Once the provider is back (and the interval has passed), the same token works.
        if failure != "refused":
            jwks.mode = "ok"
            await asyncio.sleep(REFETCH_SECONDS + 0.05)
            ok = await http.get(CONVERSATIONS, headers=token)
            assert ok.status_code == 200, ok.text


async def test_known_keys_outlive_an_outage_and_others_get_503(settings, jwks, keys):
    async with provider_client(
        settings, jwks.url, jwks_cache_seconds=0.3, jwks_refetch_seconds=0.1
    ) as http:
        token = bearer(signed(keys["rsa"]))
        assert (await http.get(CONVERSATIONS, headers=token)).status_code == 200
        jwks.stop()
        await asyncio.sleep(0.35)  # the cache has expired: the next request tries to fetch
        still = await http.get(CONVERSATIONS, headers=token)
        assert still.status_code == 200, still.text
        assert_503(
            await http.get(CONVERSATIONS, headers=bearer(signed(keys["rotated"]))), "new kid"
        )
