"""Headless Chromium and a real `turnstream serve` for the chat page's browser tests.

The browser is Debian's `chromium` (/usr/bin/chromium), driven by the Python
`playwright` package: Playwright's own browser download cannot work here.
scripts/test installs the package with apt-get when it is missing and sets
TURNSTREAM_TEST_CHROMIUM; under it (and on CI), a Chromium that is missing or
does not start fails the tests. Run another way on a machine without it, they
skip, saying so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Error, expect, sync_playwright
from web_support import CHROMIUM, FLAGS, Served, serve


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One `turnstream serve` for the module."""
    with serve(tmp_path_factory.mktemp("web")) as served:
        yield served


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        why = f"{CHROMIUM} is missing: scripts/test installs Debian's chromium (apt-get)"
        if os.environ.get("TURNSTREAM_TEST_CHROMIUM") or os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        except Error as exc:
            pytest.fail(f"Chromium ({CHROMIUM}) did not start: {exc}")
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile (its own localStorage) at a desktop size."""
    ctx = browser.new_context(viewport={"width": 1100, "height": 800})
    # Generous: a reply takes about 3 s, and a 2-core CI machine may be slower.
    ctx.set_default_timeout(20_000)
    expect.set_options(timeout=20_000)
    yield ctx
    ctx.close()
