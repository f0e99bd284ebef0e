"""The fetch: GET a URL guard.py passed, on a connection to the very address it checked.

Each hop, the URL and then each redirect (at most MAX_REDIRECTS), is checked as a new
URL and sent to its checked address: the URL's host becomes that address, while the
Host header and TLS (SNI, the certificate's name) get the name. Nothing is resolved a
second time, so DNS cannot answer the check one way and the connection another. One
deadline, TURNSTREAM_FETCH_TIMEOUT_SECONDS, covers every hop and the whole body, so a
server that drips bytes is cut as well; the body stops at TURNSTREAM_FETCH_BYTES, and a
page that is not text is refused before its body is read.

The client keeps nothing between hops or calls: no cookie, no idle connection (a
connection to one address must not carry a request for another name), and it takes no
proxy or credentials from the environment.
"""

from __future__ import annotations

import asyncio
import codecs
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from turnstream import __version__
from turnstream.config import Settings
from turnstream.fetch.guard import FetchFailed, Policy, Resolver, Target, check, system_resolver

MAX_REDIRECTS = 5
USER_AGENT = f"turnstream/{__version__} (web_fetch)"
_REDIRECTS = {301, 302, 303, 307, 308}
_TEXT_TYPES = {
    "application/json",
    "application/xml",
    "application/xhtml+xml",
    "application/javascript",
}


@dataclass(frozen=True)
class Page:
    url: str  # the last one, after redirects
    status: int
    reason: str
    content_type: str  # the media type, lower case, without parameters
    text: str


async def fetch(
    url: str,
    settings: Settings,
    *,
    resolver: Resolver = system_resolver,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Page:
    """The page at `url`; FetchRefused or FetchFailed, with the reason, when there is none.

    A 4xx or 5xx answer is a page too: its status tells the model what happened.
    """
    policy = Policy.from_settings(settings, resolver)
    seconds = settings.fetch_timeout_seconds
    deadline = asyncio.timeout(seconds)
    try:
        async with deadline, _client(transport) as client:
            return await _follow(client, url, policy, settings.fetch_bytes)
    except TimeoutError:
        if not deadline.expired():
            raise
        raise FetchFailed(
            f"the fetch took longer than {seconds:g} s (TURNSTREAM_FETCH_TIMEOUT_SECONDS): "
            "the server is slow or the page too large; try again later or another page"
        ) from None
    except httpx.HTTPError as exc:
        raise FetchFailed(f"the request failed: {type(exc).__name__}: {exc}") from None


def _client(transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
    no_idle = httpx.Limits(max_keepalive_connections=0)
    return httpx.AsyncClient(
        transport=transport or httpx.AsyncHTTPTransport(limits=no_idle),
        trust_env=False,
        follow_redirects=False,
        timeout=None,  # the one deadline of `fetch` covers it all
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),  # refuses them all
        # The cap counts bytes after decoding; asking for none keeps the two counts equal.
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
    )


async def _follow(client: httpx.AsyncClient, url: str, policy: Policy, limit: int) -> Page:
    current: str | httpx.URL = url
    for _ in range(MAX_REDIRECTS + 1):
        target = await check(current, policy)
        async with _send(client, target) as response:
            location = response.headers.get("location")
            if response.status_code not in _REDIRECTS or not location:
                return await _page(response, target, limit)
        current = _join(target.url, location)
    raise FetchFailed(
        f"{url} redirects more than {MAX_REDIRECTS} times (the next would be {current}): "
        f"web_fetch follows at most {MAX_REDIRECTS}"
    )


def _send(client: httpx.AsyncClient, target: Target) -> AbstractAsyncContextManager[httpx.Response]:
    """GET the target at its checked address, naming its host as the URL did."""
    connect_to = target.url.copy_with(host=str(target.address))
    extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
    host = target.url.netloc.decode("ascii")
    return client.stream("GET", connect_to, headers={"Host": host}, extensions=extensions)


def _join(base: httpx.URL, location: str) -> httpx.URL:
    try:
        return base.join(location)
    except httpx.InvalidURL:
        raise FetchFailed(f"{base} redirects to {location!r}, which is not a URL") from None


async def _page(response: httpx.Response, target: Target, limit: int) -> Page:
    media_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
    empty = response.status_code in (204, 304) or response.headers.get("content-length") == "0"
    if not empty and not _is_text(media_type):
        raise FetchFailed(
            f"{target.url} is {media_type or 'of no stated type'}, not text: web_fetch reads "
            "text pages only (HTML, plain text, JSON, XML)"
        )
    body = await _read(response, limit)
    return Page(
        url=str(target.url),
        status=response.status_code,
        reason=response.reason_phrase,
        content_type=media_type,
        text=body.decode(_charset(response), errors="replace"),
    )


def _is_text(media_type: str) -> bool:
    if media_type.startswith("text/") or media_type in _TEXT_TYPES:
        return True
    return media_type.startswith("application/") and media_type.endswith(("+json", "+xml"))


async def _read(response: httpx.Response, limit: int) -> bytes:
    """The body, stopped (the connection closed unread) past `limit` bytes."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


def _too_large(limit: int) -> FetchFailed:
    return FetchFailed(
        f"the page is larger than {limit:,} bytes (TURNSTREAM_FETCH_BYTES): web_fetch stopped "
        "the download; ask for a smaller page"
    )


def _charset(response: httpx.Response) -> str:
    """The charset the Content-Type names, when Python knows it; else UTF-8."""
    charset = response.charset_encoding or "utf-8"
    try:
        return codecs.lookup(charset).name
    except LookupError:
        return "utf-8"
