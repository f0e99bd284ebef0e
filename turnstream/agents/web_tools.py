"""The `web_fetch` tool: the agent reads a web page, HTML as Markdown.

Turned on by the short name `web` in `TURNSTREAM_TOOLS`. The fetch (turnstream/fetch/)
reaches public hosts only, unless TURNSTREAM_FETCH_PRIVATE lists a network, and only the
hosts TURNSTREAM_FETCH_ALLOW names when it is set. A refused URL, a page too large or
too slow, or one that is not text comes back to the model as an error result saying
why; a 4xx or 5xx answer is a result, with its status. docs/web.md has the rules.
"""

from __future__ import annotations

import dataclasses

from turnstream.agents.tools import Tool, ToolContext, make_tool
from turnstream.config import Settings
from turnstream.fetch.client import fetch
from turnstream.fetch.text import readable

# How much longer than the fetch's own deadline the tool loop waits: the fetch's
# error result, which names its setting, comes first.
_GRACE_SECONDS = 5.0


async def web_fetch(url: str, ctx: ToolContext | None = None) -> str:
    """Fetch a public web page (http or https) and return its text; HTML comes as Markdown.

    Args:
        url: the page's full URL, such as https://example.com/docs/.
    """
    if ctx is None or ctx.settings is None:
        raise RuntimeError("this run has no settings")
    page = await fetch(url, ctx.settings)
    head = f"URL: {page.url}\nStatus: {page.status} {page.reason}"
    return f"{head}\nContent-Type: {page.content_type}\n\n{readable(page.content_type, page.text)}"


def _timeout(settings: Settings) -> float:
    return settings.fetch_timeout_seconds + _GRACE_SECONDS


TOOLS: list[Tool] = [dataclasses.replace(make_tool(web_fetch), timeout=_timeout)]
