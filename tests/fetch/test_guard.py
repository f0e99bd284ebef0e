"""The address policy alone: URLs, spellings of addresses, ranges, DNS answers, the allowlist.

Nothing here opens a connection; names are resolved by FakeResolver, never by DNS.
"""

from __future__ import annotations

import ipaddress

import pytest

from turnstream.config import Settings
from turnstream.errors import Misconfigured
from turnstream.fetch.guard import (
    FetchFailed,
    FetchRefused,
    Policy,
    check,
    refusal,
    system_resolver,
)

from .loopback import FakeResolver

NO_DNS = FakeResolver({})


def policy(allow: str | None = None, private: str | None = None, **answers: list[str]) -> Policy:
    settings = Settings(fetch_allow=allow, fetch_private=private)
    dns = {name.replace("_", "."): addresses for name, addresses in answers.items()}
    return Policy.from_settings(settings, FakeResolver(dns))


def teredo(client: str) -> str:
    """A Teredo address whose (obfuscated) client is `client`."""
    obfuscated = ~int(ipaddress.IPv4Address(client)) & 0xFFFFFFFF
    server, flags_and_port = 0x4136E378, 0x800063BF
    return str(
        ipaddress.IPv6Address(0x20010000 << 96 | server << 64 | flags_and_port << 32 | obfuscated)
    )


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://127.0.0.1/", "127.0.0.1 is a loopback address"),
        ("http://2130706433/", "2130706433 is 127.0.0.1, which is a loopback address"),
        ("http://0x7f.1/", "0x7f.1 is 127.0.0.1, which"),
        ("http://0x7F000001/", "0x7f000001 is 127.0.0.1, which"),
        ("http://127.1/", "127.1 is 127.0.0.1, which"),
        ("http://017700000001/", "017700000001 is 127.0.0.1, which"),  # octal
        ("http://127.0.0.1./", "127.0.0.1 is a loopback address"),
        ("http://[::1]:8080/", "::1 is a loopback address"),
        (
            "http://[::ffff:127.0.0.1]/",
            "is an IPv4-mapped address of 127.0.0.1, which is a loopback",
        ),
        ("http://[::ffff:7f00:1]/", "IPv4-mapped address of 127.0.0.1"),
        ("http://localhost/", "localhost is 127.0.0.1, which is a loopback address"),
        ("http://LOCALHOST.:8000/", "localhost is 127.0.0.1"),
        ("http://api.localhost/", "api.localhost is 127.0.0.1"),
    ],
)
async def test_every_spelling_of_loopback_is_refused_without_dns(url: str, said: str) -> None:
    with pytest.raises(FetchRefused) as refused:
        await check(url, Policy(resolver=NO_DNS))
    assert said in str(refused.value)
    assert str(refused.value).endswith(
        "web_fetch reaches public hosts only (TURNSTREAM_FETCH_PRIVATE lists networks to allow)"
    )
    assert NO_DNS.asked == []


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("10.0.0.1", "is a private address"),
        ("172.16.5.4", "is a private address"),
        ("192.168.1.1", "is a private address"),
        ("169.254.169.254", "is a link-local address"),  # cloud metadata
        ("100.64.0.1", "is a shared address (carrier-grade NAT"),
        ("224.0.0.1", "is a multicast address"),
        ("0.0.0.0", "is an unspecified address"),
        ("127.8.9.10", "is a loopback address"),
        ("::", "is an unspecified address"),
        ("fe80::1", "is a link-local address"),
        ("fd00::1", "is a private address"),
        ("fec0::1", "is a site-local address"),
        ("ff02::1", "is a multicast address"),
        ("2002:a00:1::", "is a 6to4 address of 10.0.0.1, which is a private address"),
        ("2002:7f00:1::5", "is a 6to4 address of 127.0.0.1, which is a loopback"),
        ("64:ff9b::a9fe:a9fe", "is a NAT64 address of 169.254.169.254, which is a link-local"),
        (teredo("127.0.0.1"), "is a Teredo address of 127.0.0.1, which is a loopback"),
    ],
)
def test_addresses_that_are_not_public_are_refused(address: str, kind: str) -> None:
    assert (refusal(ipaddress.ip_address(address)) or "").startswith(kind)


@pytest.mark.parametrize(
    "address", ["240.0.0.1", "255.255.255.255", "192.0.2.7", "198.18.0.1", "::ffff:8.8.8.8"]
)
def test_special_purpose_addresses_are_refused(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_fetch_private_lets_its_networks_through_and_no_others() -> None:
    private = Policy.from_settings(Settings(fetch_private="10.0.0.0/8, fd00::/8")).private
    assert refusal(ipaddress.ip_address("10.1.2.3"), private) is None
    assert refusal(ipaddress.ip_address("fd12::1"), private) is None
    assert refusal(ipaddress.ip_address("192.168.0.1"), private) == "is a private address"
    # A mapped form of an allowed IPv4 address is not inside the IPv4 network.
    assert refusal(ipaddress.ip_address("::ffff:10.1.2.3"), private) is not None


async def test_a_name_is_resolved_once_and_its_first_address_is_the_target() -> None:
    rules = policy(example_test=["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])
    target = await check("https://Example.test./docs?q=1", rules)
    assert (target.host, str(target.address)) == ("example.test", "93.184.215.14")
    assert str(target.url) == "https://example.test./docs?q=1"
    assert rules.resolver.asked == ["example.test"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "answer",
    [["93.184.215.14", "10.0.0.1"], ["10.0.0.1", "93.184.215.14"], ["8.8.8.8", "::1"]],
)
async def test_an_answer_mixing_public_and_refused_addresses_is_refused(answer: list[str]) -> None:
    refused_one = next(a for a in answer if refusal(ipaddress.ip_address(a)))
    with pytest.raises(FetchRefused, match=f"mixed.test resolves to {refused_one}, which"):
        await check("http://mixed.test/", policy(mixed_test=answer))


async def test_a_name_without_addresses_fails() -> None:
    with pytest.raises(FetchFailed, match=r"nothing\.test has no address"):
        await check("http://nothing.test/", policy(nothing_test=[]))


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("file:///etc/passwd", "file: URLs are refused: web_fetch fetches http:// and https://"),
        ("gopher://127.0.0.1/", "gopher: URLs are refused"),
        ("ftp://example.test/", "ftp: URLs are refused"),
        ("javascript:alert(1)", "javascript: URLs are refused"),
        ("example.test/page", "has no scheme: give a full http:// or https:// URL"),
        ("http:///path", "has no host"),
        ("http://user:secret@example.test/", "a URL with a user name or password is refused"),
        ("http://0177.0.0.1/", "is not a valid URL"),
    ],
)
async def test_urls_that_are_not_http_are_refused(url: str, said: str) -> None:
    with pytest.raises(FetchRefused) as refused:
        await check(url, Policy(resolver=NO_DNS))
    assert said in str(refused.value)
    assert NO_DNS.asked == []


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("example.com", True),
        ("EXAMPLE.com.", True),
        ("docs.example.org", True),
        ("a.b.example.org", True),
        ("example.org", False),  # `*.example.org` is its subdomains only
        ("notexample.org", False),
        ("www.example.com", False),
        ("example.com.evil.test", False),
    ],
)
async def test_the_allowlist_limits_the_hosts(host: str, allowed: bool) -> None:
    rules = policy(
        "example.com, *.Example.ORG", **{host.lower().strip(".").replace(".", "_"): ["8.8.8.8"]}
    )
    if allowed:
        assert str((await check(f"https://{host}/", rules)).address) == "8.8.8.8"
    else:
        with pytest.raises(FetchRefused, match="is not in TURNSTREAM_FETCH_ALLOW"):
            await check(f"https://{host}/", rules)
        assert rules.resolver.asked == []  # type: ignore[attr-defined]


async def test_an_ip_literal_passes_the_allowlist_only_as_listed() -> None:
    rules = policy("127.0.0.1, [::1], *.0.0.1", private="127.0.0.0/8,::1/128")
    assert str((await check("http://127.0.0.1:8080/", rules)).address) == "127.0.0.1"
    assert str((await check("http://[::1]/", rules)).address) == "::1"
    for url in ("http://2130706433/", "http://127.0.0.2/", "http://localhost/"):
        with pytest.raises(FetchRefused, match="is not in TURNSTREAM_FETCH_ALLOW"):
            await check(url, rules)


@pytest.mark.parametrize(
    "setting",
    [
        {"fetch_private": "10.0.0.0/33"},
        {"fetch_private": "intranet"},
        {"fetch_allow": "https://example.com/"},
        {"fetch_allow": "example.com:8080"},
    ],
)
def test_settings_that_cannot_work_say_so(setting: dict[str, str]) -> None:
    said = r"TURNSTREAM_FETCH_(PRIVATE|ALLOW): .* comma-separated"
    with pytest.raises(Misconfigured, match=said):
        Policy.from_settings(Settings(**setting))


async def test_the_system_resolver_answers_for_localhost() -> None:
    # /etc/hosts answers; no test asks real DNS for a name.
    addresses = {ipaddress.ip_address(a) for a in await system_resolver("localhost")}
    assert addresses and all(a.is_loopback for a in addresses)
