"""The chat page at `/` in real headless Chromium, against a real `turnstream serve`.

Every reply the page shows is checked against what the server stored (GET
…/messages), character for character: after a reload in the middle of the
reply, after the browser went offline and came back, after Stop, in two tabs.
All waits are Playwright's auto-waiting expectations, or waits for the server's
own state: no fixed sleeps.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from helpers import wait_until
from playwright.sync_api import Locator, Page, Response, Route, expect
from web_support import REPLY, WORDS, User, open_chat, send, serve

TEXT = ".msg.assistant .text"


def wait_for_words(page: Page, count: int) -> str:
    """Wait until the newest reply shows at least `count` words; its text then."""
    page.wait_for_function(
        """([selector, count]) => {
            const texts = document.querySelectorAll(selector);
            const text = texts.length ? texts[texts.length - 1].innerText : "";
            return text.split(" ").length >= count;
        }""",
        arg=[TEXT, count],
    )
    return page.locator(TEXT).last.inner_text()


def resumes(page: Page) -> list[tuple[str, int]]:
    """(cursor, status) of each resume request the page makes from now on."""
    seen: list[tuple[str, int]] = []

    def note(response: Response) -> None:
        if "/resume/" in response.url:
            seen.append((parse_qs(urlsplit(response.url).query)["cursor"][0], response.status))

    page.on("response", note)
    return seen


def assert_shows_stored_reply(page: Page, user: User, cid: str, *, status: str = "complete") -> str:
    """One reply on the page, and it is the stored one, to the character."""
    expect(page.locator(REPLY)).to_have_count(1)
    *_, stored = user.replies(cid)  # a run's last assistant message: its final answer
    assert stored["status"] == status
    assert page.locator(TEXT).inner_text() == stored["content"]
    return stored["content"]


def test_the_sign_in_link_serve_prints_signs_in_and_leaves_the_address_bar(served, context):
    page = context.new_page()
    page.goto(served.demo_link)
    expect(page.get_by_role("button", name="New conversation")).to_be_visible()
    assert "token" not in page.url
    assert page.evaluate("() => localStorage.getItem('turnstream.token')") == served.demo_token
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Access token")).to_be_focused()
    page.get_by_label("Access token").fill("ts_not_a_token")
    page.get_by_label("Access token").press("Enter")
    expect(page.get_by_role("alert").filter(has_text="refused")).to_be_visible()


def test_a_reload_mid_reply_shows_the_whole_reply_once(served, context):
    user = served.user("rosa")
    cid = user.conversation()
    page = context.new_page()
    open_chat(page, served, user, cid)
    reply = send(page, "tell me about resuming")
    before = wait_for_words(page, 5)
    resumed = resumes(page)
    page.reload()
    # The reply is replayed from its start and goes on growing…
    expect(page.locator(REPLY)).to_have_attribute("data-status", "streaming")
    expect(page.locator(TEXT)).to_contain_text(before)
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    # …to its end: once, and exactly as stored.
    expect(reply).to_have_attribute("data-status", "completed")
    final = assert_shows_stored_reply(page, user, cid)
    assert final.startswith(before) and len(final.split(" ")) == WORDS
    expect(page.locator(".msg.user")).to_have_count(1)
    assert resumed == [("0-0", 200)]  # after a reload: from the start


def offline_mid_reply(served, context, name: str, message: str) -> tuple[User, str, Page, Locator]:
    """`name`'s page, offline once its reply to `message` is five words in; and that reply."""
    user = served.user(name)
    cid = user.conversation()
    page = context.new_page()
    open_chat(page, served, user, cid)
    reply = send(page, message)
    wait_for_words(page, 5)
    context.set_offline(True)
    expect(page.locator("#status")).to_have_attribute("data-state", "offline")
    return user, cid, page, reply


def test_offline_mid_reply_the_reply_completes_without_a_gap_or_a_repeat(served, context):
    user, cid, page, reply = offline_mid_reply(served, context, "omar", "going through a tunnel")
    seen = reply.get_attribute("data-cursor")
    sid = reply.get_attribute("data-session-id")
    assert seen and sid
    run = f"conversations/{cid}/runs/{sid}"
    # The run goes on without the page: wait until it wrote events the page has not seen.
    wait_until(lambda: user.api("GET", run)["cursor"] != seen, timeout=10, what="new events")
    assert reply.get_attribute("data-cursor") == seen
    resumed = resumes(page)
    context.set_offline(False)
    expect(reply).to_have_attribute("data-status", "completed")
    assert_shows_stored_reply(page, user, cid)
    expect(page.locator("#status")).to_have_attribute("data-state", "idle")
    assert resumed == [(seen, 200)]  # from the last event it had received


def test_stop_shows_the_cancelled_state_and_keeps_the_partial_reply(served, context):
    user = served.user("sam")
    cid = user.conversation()
    page = context.new_page()
    open_chat(page, served, user, cid)
    reply = send(page, "a long story please")
    wait_for_words(page, 5)
    page.get_by_role("button", name="Stop").click()
    expect(reply).to_have_attribute("data-status", "cancelled")
    expect(reply.locator(".run-status")).to_have_text("Stopped")
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    partial = assert_shows_stored_reply(page, user, cid, status="cancelled")
    assert 5 <= len(partial.split(" ")) < WORDS
    page.reload()  # stored, it reads the same
    expect(page.locator(REPLY).locator(".run-status")).to_have_text("Stopped")
    assert_shows_stored_reply(page, user, cid, status="cancelled")


def test_a_tool_call_shows_as_a_step_with_its_result_live_and_stored(served, context):
    user = served.user("tomas")
    cid = user.conversation()
    page = context.new_page()
    open_chat(page, served, user, cid)
    box = page.get_by_label("Your message")
    box.fill("two")
    box.press("Shift+Enter")  # a new line, not a message
    box.press_sequentially("lines")
    expect(box).to_have_value("two\nlines")
    expect(page.locator(".msg")).to_have_count(0)
    reply = send(page, "/tool 2+2")
    expect(reply).to_have_attribute("data-status", "completed")
    assert_shows_the_calculator_step(page)
    page.reload()  # now from the stored messages
    expect(page.locator(REPLY)).to_have_attribute("data-status", "completed")
    assert_shows_the_calculator_step(page)
    roles = [(m["role"], bool(m["tool_calls"])) for m in user.messages(cid)]
    assert roles == [("user", False), ("assistant", True), ("tool", False), ("assistant", False)]


def assert_shows_the_calculator_step(page: Page) -> None:
    tool = page.locator(REPLY).locator("details.tool")
    expect(tool).to_have_count(1)
    expect(tool.locator(".tool-name")).to_have_text("calculator")
    expect(tool).to_have_attribute("data-state", "done")
    expect(tool.locator(".tool-result")).to_be_hidden()  # folded until opened
    tool.locator("summary").click()
    expect(tool.locator(".tool-result")).to_have_text("4")
    expect(tool.locator(".tool-args")).to_contain_text('"expression": "2+2"')
    expect(page.locator(TEXT)).to_have_text("2+2 = 4.")


def test_model_text_is_shown_as_text_never_as_html(served, context):
    user = served.user("mallory")
    cid = user.conversation()
    page = context.new_page()
    alerts: list[str] = []
    page.on("dialog", lambda dialog: (alerts.append(dialog.message), dialog.dismiss()))
    open_chat(page, served, user, cid)
    attack = "/tool <img src=x onerror=alert(1)> **bold** `<b>code</b>`"
    reply = send(page, attack)
    expect(reply).to_have_attribute("data-status", "completed")
    text = page.locator(TEXT)
    expect(text).to_contain_text("<img src=x onerror=alert(1)>")
    expect(text.locator("strong")).to_have_text("bold")
    expect(text.locator("code")).to_have_text("<b>code</b>")
    expect(page.locator("#messages img, #messages b")).to_have_count(0)
    expect(page.locator(".tool-args")).to_contain_text("<img src=x onerror=alert(1)>")
    assert alerts == []


def test_two_tabs_and_another_browser_show_the_same_reply(served, context, browser):
    user = served.user("tess")
    cid = user.conversation()
    first, second = context.new_page(), context.new_page()
    elsewhere = browser.new_context()  # another device: no BroadcastChannel, only task-status
    third = elsewhere.new_page()
    for page in (first, second, third):
        open_chat(page, served, user, cid)
    send(first, "the same for everyone")
    for page in (first, second, third):
        expect(page.locator(REPLY)).to_have_attribute("data-status", "completed", timeout=30_000)
    stored = assert_shows_stored_reply(first, user, cid)
    for page in (second, third):
        assert page.locator(TEXT).inner_text() == stored
        expect(page.locator(".msg.user")).to_have_text(["the same for everyone"])
    elsewhere.close()


def test_rename_and_delete(served, context):
    user = served.user("rita")
    cid = user.conversation("Plans")
    page = context.new_page()
    open_chat(page, served, user, cid)
    page.get_by_role("button", name="Rename").click()
    page.get_by_label("New title").fill("Plans for Lisbon")
    page.get_by_label("New title").press("Enter")
    expect(page.get_by_role("heading", name="Plans for Lisbon")).to_be_visible()
    link = page.get_by_role("link", name="Plans for Lisbon")
    expect(link).to_have_attribute("aria-current", "page")
    assert user.api("GET", f"conversations/{cid}")["title"] == "Plans for Lisbon"
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("link", name="Plans for Lisbon")).to_have_count(0)
    expect(page.get_by_text("No conversations yet.")).to_be_visible()
    assert user.api("GET", "conversations")["total"] == 0


def test_another_user_sees_none_of_the_first_users_conversations(served, context, browser):
    alice = served.user("alice")
    cid = alice.conversation("Alice's secret")
    # A run that ended while no page was open: the page shows the stored message.
    path = f"conversations/{cid}/message/"
    alice.api("POST", path, params={"stream": "false"}, data={"content": "/tool 1+1"})
    page = context.new_page()
    open_chat(page, served, alice, cid)
    expect(page.get_by_role("link", name="Alice's secret")).to_be_visible()
    expect(page.locator(REPLY)).to_have_attribute("data-status", "completed")
    assert_shows_stored_reply(page, alice, cid)

    bob = served.user("bob")
    other = browser.new_context()
    page = other.new_page()
    page.goto(served.url)
    page.get_by_label("Access token").fill(bob.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("No conversations yet.")).to_be_visible()
    page.goto(f"{served.url}/#c={cid}")
    expect(page.get_by_role("alert")).to_have_text(re.compile("does not exist, or is not yours"))
    expect(page.locator(".msg")).to_have_count(0)
    expect(page.get_by_text("Alice's secret")).to_have_count(0)
    other.close()


def test_a_cursor_ahead_of_the_run_rebuilds_the_reply_from_the_start(served, context):
    """A page that saw events the server no longer has (a Redis failover lost the last
    writes) holds a cursor ahead of the run: 409, then the whole run again from 0-0,
    each event once, and the stored reply at the end."""
    user, cid, page, reply = offline_mid_reply(served, context, "yara", "through a failover")
    ahead = "99999999999999-0"

    def forge(route: Route) -> None:  # the page's next resume, as if from the lost events
        route.continue_(url=re.sub(r"cursor=[^&]*", f"cursor={ahead}", route.request.url))

    page.route("**/resume/**", forge, times=1)
    resumed = resumes(page)
    context.set_offline(False)
    expect(reply).to_have_attribute("data-status", "completed")
    assert_shows_stored_reply(page, user, cid)
    expect(page.locator(".msg.user")).to_have_count(1)
    expect(page.locator("#notice")).to_be_hidden()  # followed on, not refused
    assert resumed == [(ahead, 409), ("0-0", 200)], resumed


def test_an_expired_cursor_after_a_reload_shows_the_stored_reply(context, tmp_path):
    """The run keeps only its newest 20 events: the replay from 0-0 gets 409, then the rest.

    Without an archive (retention 0), which would otherwise keep what is trimmed, and
    trim mid-run only once it has it (at a lease renewal, 2 s in).
    """
    with serve(tmp_path, TURNSTREAM_STREAM_MAXLEN="20", TURNSTREAM_ARCHIVE_RETENTION="0") as served:
        user = served.user("ines")
        cid = user.conversation()
        page = context.new_page()
        open_chat(page, served, user, cid)
        send(page, "a reply longer than the stream keeps")
        wait_for_words(page, 25)
        resumed = resumes(page)
        page.reload()
        expect(page.locator(REPLY)).to_have_attribute("data-status", "completed")
        assert_shows_stored_reply(page, user, cid)
        expect(page.locator(".run-status")).to_have_count(0)  # the note went with the gap
        # From the start: gone. From the resync cursor: the rest (this tiny stream may trim
        # again in between: then again from the next resync cursor).
        assert resumed[0] == ("0-0", 409) and resumed[-1][1] == 200, resumed


HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "[x](javascript:alert(1))",
    '[x](https://a.example/" onmouseover="alert(1))',
    'https://a.example/"onmouseover=alert(1)//',
    "`<img src=x>` **<b>bold</b>** _<i>em</i>_",
    '```js" onload="alert(1)\n<svg onload=alert(1)>\n```',
    "> <iframe src=x></iframe>\n- <a href=x>link</a>\n1. &lt;escaped&gt;",
    "[**x**](mailto:a@b.example) ~~<s>x</s>~~",
]
ALLOWED = {"P", "BR", "H3", "H4", "H5", "H6", "HR", "PRE", "CODE", "BLOCKQUOTE", "UL", "OL", "LI"}
ALLOWED |= {"STRONG", "EM", "DEL", "A"}


def test_the_markdown_renderer_makes_only_its_own_tags(served, context):
    user = served.user("mark")
    page = context.new_page()
    open_chat(page, served, user)
    found = page.evaluate(
        """async (sources) => {
            const src = document.querySelector("script[type=module]").src;
            const { renderMarkdown } = await import(new URL("markdown.js", src));
            return sources.map((source) => {
                const box = document.createElement("template");
                box.innerHTML = renderMarkdown(source);
                const nodes = [...box.content.querySelectorAll("*")];
                const pairs = (n) => [...n.attributes].map((a) => [a.name, a.value]);
                return {
                    text: box.content.textContent,
                    tags: nodes.map((n) => n.tagName),
                    attributes: nodes.flatMap(pairs),
                };
            });
        }""",
        HOSTILE,
    )
    for source, result in zip(HOSTILE, found, strict=True):
        assert set(result["tags"]) <= ALLOWED, (source, result)
        for name, value in result["attributes"]:
            assert name in {"href", "target", "rel", "class", "start"}, (source, name, value)
            if name == "href":
                assert re.match(r"^(https?://|mailto:)", value) and '"' not in value, value
            if name == "class":
                assert re.fullmatch(r"language-[\w+#.-]+", value), value
    assert "<script>alert(1)</script>" in found[0]["text"]
    assert found[1]["text"] == "<img src=x onerror=alert(1)>"
    assert "href" not in str(found[2]["attributes"])  # javascript: stays text


def test_a_compacted_history_shows_a_quiet_line_above_the_reply(context, tmp_path):
    """A budget of 1,000 tokens: the fourth long message is over it, and the demo (no model
    to summarise with) leaves the oldest turns out, saying so above its reply."""
    quick = {"TURNSTREAM_DEMO_DELAY_MS": "0", "TURNSTREAM_RESERVE_TOKENS": "0"}
    with serve(tmp_path, TURNSTREAM_CONTEXT_TOKENS="1000", **quick) as served:
        user = served.user("ines")
        cid = user.conversation()
        page = context.new_page()
        open_chat(page, served, user, cid)
        for n in range(4):
            reply = send(page, f"message {n} " + "words " * 200)
            expect(reply).to_have_attribute("data-status", "completed")
        line = page.locator(f"{REPLY} .compaction")
        expect(line).to_have_count(1)
        expect(line).to_contain_text("Earlier messages are no longer sent to the model")
        expect(page.locator(REPLY).last.locator(".compaction")).to_have_count(1)
        assert len(user.messages(cid)) == 8  # every message is still stored
