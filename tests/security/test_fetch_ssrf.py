"""web_fetch against SSRF: the addresses an attacker would aim a model at are refused unsent.

With no TURNSTREAM_FETCH_PRIVATE, every URL below is refused by the tool with a
message that says why, and no connection is tried: httpx's transport and the
system resolver are replaced by doubles that record any use. For loopback, a real
listener on 127.0.0.1 and ::1 also shows that nothing reached it. Names go through
a resolver double (tests/fetch/loopback.py), never DNS; the fetch connects to the
address it checked, asking the resolver once per host and hop.
"""

from __future__ import annotations

import pytest
from fetch.loopback import (
    FakeResolver,
    LoopbackTransport,
    answer,
    connect_nowhere,
    redirect,
    serving,
)

from turnstream.agents.tools import ToolContext
from turnstream.agents.web_tools import web_fetch
from turnstream.config import Settings
from turnstream.fetch.client import fetch
from turnstream.fetch.guard import FetchRefused

PUBLIC = Settings(fetch_private=None, fetch_allow=None)  # as deployed: no exception
PUBLIC_ONLY = (
    "web_fetch reaches public hosts only (TURNSTREAM_FETCH_PRIVATE lists networks to allow)"
)


def context(**settings: object) -> ToolContext:
    values: dict[str, object] = {"fetch_private": None, "fetch_allow": None} | settings
    return ToolContext("alice", "c1", "s1", "call_1", settings=Settings(**values))


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every connection or DNS question a fetch tries (each one fails the test)."""
    return connect_nowhere(monkeypatch)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://127.0.0.1", f"127.0.0.1 is a loopback address: {PUBLIC_ONLY}"),
        ("http://[::1]", f"::1 is a loopback address: {PUBLIC_ONLY}"),
        ("http://2130706433", "2130706433 is 127.0.0.1, which is a loopback address"),
        ("http://0x7f.1", "0x7f.1 is 127.0.0.1, which is a loopback address"),
        ("http://[::ffff:127.0.0.1]", "::ffff:127.0.0.1 is an IPv4-mapped address of 127.0.0.1"),
        ("http://localhost", "localhost is 127.0.0.1, which is a loopback address"),
        ("file:///etc/passwd", "file: URLs are refused: web_fetch fetches http:// and https://"),
        ("gopher://127.0.0.1/", "gopher: URLs are refused"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://10.0.0.1", "10.0.0.1 is a private address"),
        ("http://100.64.0.1", "100.64.0.1 is a shared address (carrier-grade NAT"),
        ("http://224.0.0.1", "224.0.0.1 is a multicast address"),
        ("http://0.0.0.0", "0.0.0.0 is an unspecified address"),
        ("http://[fe80::1]", "fe80::1 is a link-local address"),
    ],
)
async def test_internal_targets_are_refused_unsent(url: str, said: str, attempts) -> None:
    with pytest.raises(FetchRefused) as refused:
        await web_fetch(url, context())
    assert said in str(refused.value)
    assert attempts == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{v4}/",
        "http://127.1:{v4}/",
        "http://2130706433:{v4}/",
        "http://0x7f.1:{v4}/",
        "http://[::ffff:127.0.0.1]:{v4}/",
        "http://localhost:{v4}/",
        "http://LocalHost.:{v4}/",
        "http://[::1]:{v6}/",
    ],
)
async def test_a_loopback_listener_hears_nothing(url: str) -> None:
    async with serving({}, "127.0.0.1") as v4, serving({}, "::1") as v6:
        with pytest.raises(FetchRefused, match="web_fetch reaches public hosts only"):
            await web_fetch(url.format(v4=v4.port, v6=v6.port), context())
        # The control: let loopback in, and the same listeners do hear the fetch.
        allowed = context(fetch_private="127.0.0.0/8,::1/128,::ffff:127.0.0.0/104")
        assert "Status: 404" in await web_fetch(url.format(v4=v4.port, v6=v6.port), allowed)
    assert v4.connections + v6.connections == 1


@pytest.mark.parametrize(
    ("answers", "said"),
    [
        (["10.0.0.1"], "inside.test resolves to 10.0.0.1, which is a private address"),
        (["169.254.169.254"], "resolves to 169.254.169.254, which is a link-local address"),
        (["::ffff:169.254.169.254"], "an IPv4-mapped address of 169.254.169.254"),
        # A rebinding-style answer: one public address does not excuse a private one.
        (["93.184.215.14", "127.0.0.1"], "inside.test resolves to 127.0.0.1, which is a loopback"),
    ],
)
async def test_names_of_internal_addresses_are_refused_unsent(
    answers: list[str], said: str
) -> None:
    resolver, transport = FakeResolver({"inside.test": answers}), LoopbackTransport()
    with pytest.raises(FetchRefused) as refused:
        await fetch("http://inside.test/", PUBLIC, resolver=resolver, transport=transport)
    assert said in str(refused.value)
    assert (resolver.asked, transport.requests) == (["inside.test"], [])


async def test_a_redirect_to_a_metadata_name_is_refused_unsent() -> None:
    resolver = FakeResolver({"public.test": ["127.0.0.1"], "metadata.test": ["169.254.169.254"]})
    only = Settings(fetch_private="127.0.0.1/32")
    routes = {"/": redirect("http://metadata.test/latest/meta-data/iam/")}
    async with serving(routes) as server:
        transport = LoopbackTransport()
        with pytest.raises(FetchRefused, match=r"metadata\.test resolves to 169\.254\.169\.254"):
            await fetch(
                server.url("/", "public.test"), only, resolver=resolver, transport=transport
            )
    assert [r.url.host for r in transport.requests] == ["127.0.0.1"]


class Rebinding(FakeResolver):
    """Answers 127.0.0.1 the first time it is asked about a name and 10.0.0.1 after that."""

    async def __call__(self, host: str) -> list[str]:
        first = host not in self.asked
        self.asked.append(host)
        return ["127.0.0.1"] if first else ["10.0.0.1"]


async def test_the_connection_goes_to_the_checked_address_asked_once_per_hop() -> None:
    resolver = Rebinding({})
    allowed = Settings(fetch_private="127.0.0.1/32")
    routes = {"/a": answer("")}
    async with serving(routes) as server:
        routes["/a"] = redirect(server.url("/b", "b.test"))
        routes["/b"] = redirect(server.url("/end", "c.test"))
        routes["/end"] = answer("the end")
        transport = LoopbackTransport()
        page = await fetch(
            server.url("/a", "a.test"), allowed, resolver=resolver, transport=transport
        )
    assert page.text == "the end"
    assert resolver.asked == ["a.test", "b.test", "c.test"]
    assert [r.url.host for r in transport.requests] == ["127.0.0.1"] * 3
    port = server.port
    assert [r.headers["host"] for r in server.requests] == [f"{n}.test:{port}" for n in "abc"]
    # A second fetch of a.test: DNS now says 10.0.0.1, and that is what the check sees.
    with pytest.raises(FetchRefused, match=r"a\.test resolves to 10\.0\.0\.1"):
        await fetch(server.url("/a", "a.test"), allowed, resolver=resolver)
    assert resolver.asked[3:] == ["a.test"]
