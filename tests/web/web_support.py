"""What the browser tests share: a real `turnstream serve`, its users, Chromium's flags."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Locator, Page, expect
from servers import Server, create_token

CHROMIUM = os.environ.get("TURNSTREAM_TEST_CHROMIUM") or "/usr/bin/chromium"
# As root, and without reaching for outside hosts (NOTES-dependencies.md). Playwright adds
# --headless and a fresh --user-data-dir of its own.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The demo agent's reply: 80 words, 40 ms apart (about 3 s): time to reload, go offline or stop.
WORDS = 80
SLOW_DEMO = {"TURNSTREAM_DEMO_WORDS": str(WORDS), "TURNSTREAM_DEMO_DELAY_MS": "40"}
LINK = re.compile(r"Chat page, signed in as demo: (http://\S+/#token=(ts_\S+))")
REPLY = ".msg.assistant"


@dataclass
class User:
    """A user of the server, with the API calls the tests check the page against."""

    url: str
    token: str

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        response = httpx.request(
            method, f"{self.url}/api/v1/{path}", headers=headers, timeout=30, **kwargs
        )
        assert response.is_success, f"{method} {path}: {response.status_code} {response.text}"
        return None if response.status_code == 204 else response.json()

    def conversation(self, title: str = "New conversation") -> str:
        cid: str = self.api("POST", "conversations", json={"title": title})["id"]
        return cid

    def messages(self, cid: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.api("GET", f"conversations/{cid}/messages")["items"]
        return items

    def replies(self, cid: str) -> list[dict[str, Any]]:
        return [m for m in self.messages(cid) if m["role"] == "assistant"]


@dataclass
class Served:
    url: str
    database_url: str
    demo_link: str
    demo_token: str
    server: Server

    def user(self, user_id: str) -> User:
        # In a thread: Playwright's sync API keeps an event loop of its own on this one.
        with ThreadPoolExecutor(1) as pool:
            token = pool.submit(create_token, self.database_url, user_id).result()
        return User(self.url, token)

    def page_url(self, user: User, cid: str | None = None) -> str:
        """The page, signed in as `user` by the `#token=` link, on conversation `cid`."""
        return f"{self.url}/#token={user.token}" + (f"&c={cid}" if cid else "")


@contextmanager
def serve(tmp: Path, **env: str) -> Iterator[Served]:
    """`turnstream serve` in embedded mode (its own Valkey), on an empty database: it makes
    user demo and prints the sign-in link."""
    database_url = f"sqlite+aiosqlite:///{tmp}/ts.db"
    env = {
        "TURNSTREAM_REDIS_URL": "",
        "TURNSTREAM_DATABASE_URL": database_url,
        "TURNSTREAM_DATA_DIR": str(tmp / "data"),
        **SLOW_DEMO,
        **env,
    }
    with Server(env, tmp / "serve.log") as server:
        printed = LINK.search(server.output())
        assert printed, f"serve printed no sign-in link:\n{server.output()}"
        yield Served(server.url, database_url, printed[1], printed[2], server)
    assert "Traceback" not in server.output(), server.output()


def open_chat(page: Page, served: Served, user: User, cid: str | None = None) -> None:
    page.goto(served.page_url(user, cid))
    expect(page.get_by_role("button", name="New conversation")).to_be_visible()
    if cid:
        expect(page.get_by_role("button", name="Send")).to_be_enabled()


def send(page: Page, text: str) -> Locator:
    """Type `text` and press Enter; the reply's <article>."""
    box = page.get_by_label("Your message")
    box.fill(text)
    box.press("Enter")
    expect(page.locator(".msg.user .bubble").last).to_have_text(text)
    return page.locator(REPLY).last
