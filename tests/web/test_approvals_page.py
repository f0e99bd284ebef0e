"""A tool call that waits for the user's approval, on the chat page in real headless Chromium.

Against a real `turnstream serve` that asks before every `calculator` call
(TURNSTREAM_TOOL_APPROVAL). The card shows the tool and its arguments with
Approve and Deny; it is still there after a reload while the run waits; a
decision made in another tab settles it; and the reply that follows is the
stored one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect
from web_support import REPLY, Served, open_chat, send, serve

SIX_TIMES_SEVEN = '/tool calculator {"expression": "6*7"}'
CARD = ".approval"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One `turnstream serve` that asks before every calculator call; quick demo replies."""
    env = {"TURNSTREAM_TOOL_APPROVAL": "calculator", "TURNSTREAM_DEMO_DELAY_MS": "5"}
    with serve(tmp_path_factory.mktemp("approvals"), **env) as served:
        yield served


def assert_asks(page: Page) -> None:
    """The newest reply waits on one card: the tool, its arguments, Approve and Deny."""
    card = page.locator(REPLY).last.locator(CARD)
    expect(card).to_have_count(1)
    expect(card.locator(".approval-question")).to_have_text("Run calculator?")
    expect(card.locator(".approval-args")).to_have_text('{\n  "expression": "6*7"\n}')
    expect(card.get_by_role("button", name="Approve")).to_be_enabled()
    expect(card.get_by_role("button", name="Deny")).to_be_enabled()
    tool = page.locator(REPLY).last.locator("details.tool")
    expect(tool.locator(".tool-state")).to_have_text("waiting for approval")


def test_a_card_asks_survives_a_reload_and_approve_runs_the_call(served, context):
    user = served.user("ada")
    cid = user.conversation()
    page = context.new_page()
    open_chat(page, served, user, cid)
    send(page, SIX_TIMES_SEVEN)
    assert_asks(page)

    page.reload()  # the run waits on no one: the page replays it, and asks again
    assert_asks(page)

    reply = page.locator(REPLY).last
    reply.locator(CARD).get_by_role("button", name="Approve").click()
    expect(reply).to_have_attribute("data-status", "completed")
    expect(reply.locator(CARD)).to_have_attribute("data-state", "approved")
    expect(reply.locator(CARD).get_by_role("button")).to_have_count(0)
    expect(reply.locator(".approval-outcome")).to_have_text("Approved")
    tool = reply.locator("details.tool")
    expect(tool).to_have_attribute("data-state", "done")
    expect(tool.locator(".tool-result")).to_have_text("42")
    *_, stored = user.replies(cid)
    assert stored["content"] == "6*7 = 42."
    expect(reply.locator(".text").last).to_have_text(stored["content"])


def test_a_denial_in_another_tab_settles_the_card_and_the_reply_says_so(served, context):
    user = served.user("bo")
    cid = user.conversation()
    first, second = context.new_page(), context.new_page()
    open_chat(first, served, user, cid)
    open_chat(second, served, user, cid)
    send(first, SIX_TIMES_SEVEN)
    assert_asks(first)
    assert_asks(second)  # the second tab follows the run too

    second.locator(CARD).get_by_role("button", name="Deny").click()
    for page in (first, second):
        reply = page.locator(REPLY).last
        expect(reply).to_have_attribute("data-status", "completed")
        expect(reply.locator(CARD)).to_have_attribute("data-state", "denied")
        expect(reply.locator(".approval-outcome")).to_have_text("Denied")
        expect(reply.locator("details.tool")).to_have_attribute("data-state", "error")
    *_, stored = user.replies(cid)
    assert "denied" in stored["content"]
    expect(first.locator(REPLY).last.locator(".text").last).to_have_text(stored["content"])
