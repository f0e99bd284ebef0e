"""Sign-in from an identity provider: JWTs signed with the keys its JWKS URL publishes.

Firebase, Auth0, Clerk, Supabase, Keycloak and Cognito sign their tokens with a
private key (RS256, ES256, ...) and publish the public keys as a JSON Web Key
Set. `ProviderKeys` keeps them for an API process; `verify` checks a token
with them.

- The algorithm is the key's (its `alg`, else what its type implies: RSA is
  RS256, EC P-256 is ES256), never the token's: a token whose header names
  another, `none` or any HMAC algorithm is refused before any key is looked
  up, so a public key can never serve as an HMAC secret.
- Keys are fetched with PyJWT's `PyJWKClient` (urllib, so in a thread) and kept
  for `jwks_cache_seconds`. A token with a key id they lack (the provider
  rotated its keys) fetches them again at once; but whatever asks, at most one
  fetch runs at a time and at most one starts per `jwks_refetch_seconds`,
  so that a flood of tokens with made-up key ids cannot hammer the provider.
  (PyJWKClient's own cache serialises its callers with a thread lock, each
  waiting caller holding a worker thread; here they wait on an asyncio lock.)
- While the endpoint cannot be reached, the keys last fetched keep verifying
  tokens; a token that needs any other key gets IdentityProviderUnavailable
  (503): it may well be valid, and 401 would sign the user out.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

import jwt

from turnstream.errors import IdentityProviderUnavailable, Unauthorized

logger = logging.getLogger("turnstream.api.jwks")

# What identity providers sign with. No HMAC (HS*): that needs a shared secret
# (TURNSTREAM_JWT_SECRET), and a JWKS publishes only public keys.
ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
# Clock skew allowed between the provider and us, for `exp`, `nbf` and `iat`.
LEEWAY_SECONDS = 30
# One fetch of the key set; a request that needs it waits this long at most.
FETCH_TIMEOUT_SECONDS = 5.0


class ProviderKeys:
    """One identity provider's public signing keys, by key id, as an API process knows them."""

    def __init__(self, url: str, *, cache_seconds: float, refetch_seconds: float) -> None:
        assert cache_seconds > 0 and refetch_seconds > 0, "the JWKS intervals must be positive"
        self.url = url
        self.cache_seconds = cache_seconds
        self.refetch_seconds = refetch_seconds
        # Used to fetch and parse only: the caching and its limits are ours (above).
        self._client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=FETCH_TIMEOUT_SECONDS)
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -math.inf  # time.monotonic() of the last fetch that worked
        self._tried_at = -math.inf  # ... of the last fetch started or ended, worked or not
        self._failure: Exception | None = None  # why the last fetch failed, if it did
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK:
        """The key `kid`, fetching the set when that is due.

        Raises Unauthorized if the provider does not publish that key, and
        IdentityProviderUnavailable if it could not be asked and the key is not at hand.
        """
        key = self._keys.get(kid)
        if key is not None and not self._expired():
            return key
        async with self._lock:
            # Whoever held the lock may have just fetched: then this fetches nothing.
            if self._may_fetch():
                await self._fetch()
            key = self._keys.get(kid)
        if key is not None:
            return key
        if self._failure is not None:
            raise IdentityProviderUnavailable() from self._failure
        raise Unauthorized("Invalid token: it is signed with a key the identity provider lacks.")

    def _expired(self) -> bool:
        return time.monotonic() - self._fetched_at >= self.cache_seconds

    def _may_fetch(self) -> bool:
        return time.monotonic() - self._tried_at >= self.refetch_seconds

    async def _fetch(self) -> None:
        # Counted as tried before it starts: a request cancelled mid-fetch still counts.
        self._tried_at = time.monotonic()
        try:
            found = await asyncio.to_thread(self._client.get_signing_keys, True)
        # PyJWKClientError (unreachable, HTTP error, no signing keys), PyJWKSetError, a
        # body that is not JSON (ValueError), a connection dropped mid-body (OSError).
        except (jwt.PyJWTError, ValueError, OSError) as exc:
            self._failure = exc
            logger.warning("Cannot fetch the identity provider's keys from %s: %s", self.url, exc)
        else:
            self._keys = {k.key_id: k for k in found if k.key_id and k.algorithm_name in ALGORITHMS}
            self._fetched_at = time.monotonic()
            self._failure = None
            if not self._keys:
                logger.warning("The JWKS at %s has no key for %s", self.url, sorted(ALGORITHMS))
        finally:
            self._tried_at = time.monotonic()


async def verify(
    keys: ProviderKeys,
    token: str,
    *,
    issuer: str | None,
    audience: str | None,
    required: list[str],
) -> dict[str, Any]:
    """The claims of `token`, a JWT signed with one of the provider's `keys`.

    `exp` and each claim in `required` must be present; `iss` must be `issuer` and
    `aud` must name `audience`, each when set (a token naming an audience is refused
    when none is set). Raises Unauthorized, or IdentityProviderUnavailable (above).
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"Invalid token: {exc}.") from exc
    if header.get("alg") not in ALGORITHMS:
        raise Unauthorized("Invalid token: not signed with an identity provider's algorithm.")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Unauthorized("Invalid token: its header names no key ('kid').")
    key = await keys.key(kid)
    try:
        return jwt.decode(
            token,
            key.key,
            algorithms=[key.algorithm_name],
            issuer=issuer,
            audience=audience,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", *required]},
        )
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"Invalid token: {exc}.") from exc
