"""Which URLs web_fetch may fetch, and the one address it connects to for each.

A URL passes when its scheme is http or https, its host is one TURNSTREAM_FETCH_ALLOW
allows (any host when unset), and every address of the host is a public one or lies in
a network of TURNSTREAM_FETCH_PRIVATE. The host is resolved once, here, and the fetch
connects to the address the check returns (client.py): a DNS answer that changes
between the check and the connection (rebinding) cannot move the fetch elsewhere. An
answer that mixes public and refused addresses is refused whole: picking the good one
would let whoever controls the name choose which is used next time.

IP literals are read as the system's resolver reads them (`socket.inet_aton`:
`2130706433`, `0x7f.1` and `127.1` are all 127.0.0.1), so no spelling passes as a
name, and an IPv6 address that carries an IPv4 one (IPv4-mapped, 6to4, NAT64, Teredo)
is judged by that one too. URLs are parsed by httpx, the parser the fetch itself uses,
so the check and the request never read one URL two ways.

    FetchError          web_fetch gives no page; the message says why and what to do
    ├── FetchRefused    the URL, its host or an address of it is not allowed: nothing sent
    └── FetchFailed     the fetch went wrong: no such host, no answer, too slow, too large
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

import httpx

from turnstream.config import Settings
from turnstream.errors import Misconfigured

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# A host name -> its addresses (as text). Tests pass one that needs no DNS.
Resolver = Callable[[str], Awaitable[Sequence[str]]]

SCHEMES = ("http", "https")
PUBLIC_ONLY = (
    "web_fetch reaches public hosts only (TURNSTREAM_FETCH_PRIVATE lists networks to allow)"
)
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")  # not is_private, not is_global either
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LOCALHOST = ipaddress.IPv4Address("127.0.0.1")  # RFC 6761: whatever DNS would say
_IPV4_LIKE = re.compile(r"[0-9][0-9a-fx.]*")  # what inet_aton may read as an address
_HOST_PATTERN = re.compile(r"(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*")


class FetchError(Exception):
    """web_fetch gives no page; the message tells the model why and what it can do."""


class FetchRefused(FetchError):
    """The URL, its host or one of its addresses is not allowed; nothing was sent."""


class FetchFailed(FetchError):
    """The fetch was allowed but went wrong: no such host, no answer, too slow, too large."""


async def system_resolver(host: str) -> list[str]:
    """The host's addresses from the system's resolver, asked through the event loop."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchFailed(f"{host} could not be resolved ({exc.strerror})") from None
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Policy:
    allow: tuple[str, ...] = ()  # host names and `*.suffix` patterns; empty: any host
    private: tuple[IPNetwork, ...] = ()  # networks allowed although not public
    resolver: Resolver = system_resolver

    @classmethod
    def from_settings(cls, settings: Settings, resolver: Resolver = system_resolver) -> Policy:
        allow = _allow_entries(settings.fetch_allow)
        return cls(allow=allow, private=_networks(settings.fetch_private), resolver=resolver)


@dataclass(frozen=True)
class Target:
    """A URL that passed the check, and the address to connect to for it."""

    url: httpx.URL
    host: str  # as the Host header and TLS (SNI, the certificate's name) must see it
    address: IPAddress


async def check(url: str | httpx.URL, policy: Policy) -> Target:
    """The URL's target, once its scheme, host and every address of the host pass.

    Raises FetchRefused saying which rule refused it, before anything is sent.
    """
    parsed = _parse(url)
    host = parsed.raw_host.decode("ascii").lower().removesuffix(".")
    literal = _literal(host)
    _check_allowed(host, literal is not None, policy.allow)
    if literal is not None:
        addresses, verb = [literal], "is"
    elif host == "localhost" or host.endswith(".localhost"):
        addresses, verb = [_LOCALHOST], "is"
    else:
        addresses, verb = await _resolve(host, policy.resolver), "resolves to"
    for address in addresses:
        reason = refusal(address, policy.private)
        if reason is not None:
            spelled = host == str(address) or (":" in host and address == literal)
            subject = host if spelled else f"{host} {verb} {address}, which"
            raise FetchRefused(f"{subject} {reason}: {PUBLIC_ONLY}")
    return Target(url=parsed, host=host, address=addresses[0])


def refusal(address: IPAddress, private: Sequence[IPNetwork] = ()) -> str | None:
    """Why web_fetch may not connect to `address` ("is a loopback address"), or None."""
    if any(address in network for network in private):
        return None
    if isinstance(address, ipaddress.IPv6Address):
        for kind, inner in _embedded(address):
            reason = _kind(inner)
            if reason is not None:
                return f"is {kind} of {inner}, which {reason}"
    return _kind(address)


def _parse(url: str | httpx.URL) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise FetchRefused(f"{str(url)[:200]!r} is not a valid URL ({exc})") from None
    if not parsed.scheme:
        raise FetchRefused(f"{str(url)[:200]!r} has no scheme: give a full http:// or https:// URL")
    if parsed.scheme not in SCHEMES:
        raise FetchRefused(
            f"{parsed.scheme}: URLs are refused: web_fetch fetches http:// and https:// URLs only"
        )
    if not parsed.raw_host:
        raise FetchRefused(f"{str(url)[:200]!r} has no host")
    if parsed.userinfo:
        raise FetchRefused("a URL with a user name or password is refused: leave them out")
    return parsed


def _literal(host: str) -> IPAddress | None:
    """The address an IP-literal host stands for, in any spelling inet_aton reads; else None."""
    if ":" in host:  # only an IPv6 literal has one (httpx took the port off)
        try:
            return ipaddress.IPv6Address(unquote(host))  # a zone comes as `%25eth0`
        except ValueError:
            raise FetchRefused(f"{host} is not a valid IPv6 address") from None
    if _IPV4_LIKE.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None  # a name after all, such as 1e100.net
    return None


def _check_allowed(host: str, literal: bool, allow: Sequence[str]) -> None:
    if not allow or host in allow:
        return
    if not literal and any(p.startswith("*.") and host.endswith(p[1:]) for p in allow):
        return
    raise FetchRefused(
        f"{host} is not in TURNSTREAM_FETCH_ALLOW ({', '.join(allow)}): web_fetch reaches "
        "only the hosts listed there"
    )


async def _resolve(host: str, resolver: Resolver) -> list[IPAddress]:
    found = await resolver(host)
    try:
        addresses = [ipaddress.ip_address(a) for a in found]
    except ValueError as exc:
        raise FetchFailed(f"{host} resolved to something that is not an address ({exc})") from None
    if not addresses:
        raise FetchFailed(f"{host} has no address")
    return addresses


def _embedded(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries, each with the name of the scheme."""
    found = []
    if address.ipv4_mapped is not None:
        found.append(("an IPv4-mapped address", address.ipv4_mapped))
    if address.sixtofour is not None:
        found.append(("a 6to4 address", address.sixtofour))
    if address.teredo is not None:
        found.append(("a Teredo address", address.teredo[1]))
    if address in _NAT64:
        found.append(("a NAT64 address", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)))
    return found


def _kind(address: IPAddress) -> str | None:
    """What makes the address one web_fetch refuses, or None for a global address."""
    if address.is_unspecified:
        return "is an unspecified address"
    if address.is_loopback:
        return "is a loopback address"
    if address.is_link_local:
        return "is a link-local address (where cloud metadata services answer)"
    if address.is_multicast:
        return "is a multicast address"
    if address in _CGNAT:
        return "is a shared address (carrier-grade NAT, 100.64.0.0/10)"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "is a site-local address"
    if address.is_private:
        return "is a private address"
    if address.is_reserved:
        return "is a reserved address"
    if not address.is_global:
        return "is not a global address"
    return None


def _allow_entries(value: str | None) -> tuple[str, ...]:
    entries = []
    for item in (value or "").split(","):
        entry = item.strip().lower().removesuffix(".").removeprefix("[").removesuffix("]")
        if not entry:
            continue
        if not (_HOST_PATTERN.fullmatch(entry) or _is_ipv6(entry)):
            raise Misconfigured(
                f"TURNSTREAM_FETCH_ALLOW: {item.strip()!r} is not a host: write names such as "
                "example.com or *.example.org (non-ASCII ones in their xn-- form), comma-separated"
            )
        entries.append(entry)
    return tuple(entries)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _networks(value: str | None) -> tuple[IPNetwork, ...]:
    networks = []
    for item in (value or "").split(","):
        if not item.strip():
            continue
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise Misconfigured(
                f"TURNSTREAM_FETCH_PRIVATE: {item.strip()!r} is not a network: write CIDRs such "
                "as 10.0.0.0/8 or fd00::/8, comma-separated"
            ) from None
    return tuple(networks)
