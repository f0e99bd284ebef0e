"""The web_fetch tool as the tool loop calls it: its schema, its result, its error result.

The fetch's own rules are tested in tests/fetch/ and tests/security/test_fetch_ssrf.py.
"""

from __future__ import annotations

import pytest
from fetch.loopback import answer, connect_nowhere, serving

from turnstream.agents.base import RunContext
from turnstream.agents.calls import ToolCall, call_tool
from turnstream.agents.tools import ToolContext, load_tools
from turnstream.agents.web_tools import web_fetch
from turnstream.config import Settings

LOOPBACK = Settings(fetch_private="127.0.0.0/8", fetch_allow=None, fetch_timeout_seconds=7)
PAGE = "<html><body><h1>Hello</h1><script>x()</script><p>A <a href='/b'>link</a>.</p></body></html>"


def context(settings: Settings | None = LOOPBACK) -> ToolContext:
    return ToolContext("alice", "c1", "s1", "call_1", settings=settings)


def test_the_short_name_web_turns_on_web_fetch() -> None:
    tool = load_tools("web")["web_fetch"]
    assert list(load_tools("web")) == ["web_fetch"]
    assert tool.description.startswith("Fetch a public web page (http or https)")
    assert set(tool.parameters["properties"]) == {"url"}
    assert tool.parameters["required"] == ["url"]
    # The loop waits a little longer than the fetch, whose own error names its setting.
    assert tool.timeout is not None and tool.timeout(LOOPBACK) == 12


async def test_a_page_comes_with_its_url_status_and_type() -> None:
    routes = {"/": answer(PAGE, content_type="text/html; charset=utf-8")}
    async with serving(routes) as server:
        result = await web_fetch(server.url("/"), context())
        missing = await web_fetch(server.url("/gone"), context())
    assert result == (
        f"URL: {server.url('/')}\nStatus: 200 OK\nContent-Type: text/html\n\n"
        "# Hello\n\nA [link](/b)."
    )
    assert missing.splitlines()[1:] == [
        "Status: 404 Not Found",
        "Content-Type: text/plain",
        "",
        "not here",
    ]


async def test_a_refusal_is_an_error_result_that_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tried = connect_nowhere(monkeypatch)  # a bug that let it through would connect nowhere
    run = RunContext(
        "c1", "alice", "s1", "m1", "hi", [], Settings(fetch_private=None), lambda: False
    )
    call = ToolCall("call_1", "web_fetch", '{"url": "http://169.254.169.254/latest/meta-data/"}')
    result = await call_tool(run, load_tools("web"), call)
    assert result.is_error
    assert result.content == (
        "web_fetch failed: FetchRefused: 169.254.169.254 is a link-local address (where cloud "
        "metadata services answer): web_fetch reaches public hosts only "
        "(TURNSTREAM_FETCH_PRIVATE lists networks to allow)"
    )
    assert tried == []


async def test_it_needs_the_runs_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    tried = connect_nowhere(monkeypatch)
    with pytest.raises(RuntimeError, match="this run has no settings"):
        await web_fetch("https://example.com/", context(settings=None))
    assert tried == []
