"""The `bash` tool's step on the chat page, in real headless Chromium.

Against a real `turnstream serve` whose `bash` is a test double (bash_double.py: the
real tool's name, arguments and result JSON, with no sandbox), called by the demo
agent's `/tool bash {...}`. A bash step shows its command after a `$ ` prompt, its
stdout and stderr, an exit code badge and the files it changed; a result that is not
the tool's JSON (an error) shows as any tool's. The same, live and after a reload.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from bash_double import FAILING, MAKE_CHART, SLOW
from playwright.sync_api import Locator, Page, expect
from web_support import Served, open_chat, send, serve

WEB_TESTS = str(Path(__file__).parent)
BASH = "details.tool.bash"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One `turnstream serve` for the module, with the bash double as its only extra tool."""
    path = os.pathsep.join(filter(None, [WEB_TESTS, os.environ.get("PYTHONPATH")]))
    env = {"TURNSTREAM_TOOLS": "bash_double:bash", "PYTHONPATH": path}
    with serve(tmp_path_factory.mktemp("bash"), TURNSTREAM_DEMO_DELAY_MS="5", **env) as served:
        yield served


def call(command: str, **more: object) -> str:
    return "/tool bash " + json.dumps({"command": command, **more})


def tool_steps(page: Page) -> list[str]:
    """Every tool step on the page, as HTML: to compare the live page with the reloaded one."""
    html: list[str] = page.locator("details.tool").evaluate_all("(n) => n.map((d) => d.outerHTML)")
    return html


def assert_chart_step(step: Locator) -> None:
    """The step of MAKE_CHART: it succeeded, wrote and deleted files, and left one out."""
    expect(step).to_have_attribute("open", "")
    expect(step).to_have_attribute("data-state", "done")
    expect(step.locator(".tool-name")).to_have_text("bash")
    command = step.locator(".bash-command")
    expect(command).to_be_visible()
    expect(command).to_have_text(f"$ {MAKE_CHART}")
    assert command.evaluate("(n) => getComputedStyle(n).whiteSpace") == "pre-wrap"
    assert "monospace" in command.evaluate("(n) => getComputedStyle(n).fontFamily")
    expect(step.locator(".bash-timeout")).to_have_text("timeout 20 s")
    expect(step.locator(".bash-stdout")).to_have_text("chart: <b>sales</b>\n  3 bars\n")
    stderr = step.locator(".bash-stderr")
    expect(stderr).to_have_text("warning: no font, using the default\n")
    # stderr is set apart from stdout by its colour.
    colours = [
        step.locator(s).evaluate("(n) => getComputedStyle(n).color")
        for s in (".bash-stdout", ".bash-stderr")
    ]
    assert colours[0] != colours[1]
    badge = step.locator(".bash-exit")
    expect(badge).to_have_text("exit code 0")
    expect(badge).to_have_attribute("data-kind", "ok")
    expect(badge).to_have_css("background-color", "rgb(21, 128, 61)")  # green
    expect(step.locator(".bash-file")).to_have_text(
        [
            "out/chart.png written",
            "draft.txt deleted",
            "cache/big.bin not stored: over the limit for one file",
        ]
    )
    expect(step.locator(".bash-files-error")).to_have_count(0)
    expect(step.locator("b")).to_have_count(0)  # the markup in the output is text


def assert_steps(page: Page) -> None:
    """The four replies' tool steps, as a user sees them."""
    expect(page.locator(".msg.assistant")).to_have_count(4)
    chart, failing, slow, broken = (page.locator(".msg.assistant").nth(i) for i in range(4))
    assert_chart_step(chart.locator(BASH))

    step = failing.locator(BASH)
    expect(step.locator(".bash-command")).to_have_text(f"$ {FAILING}")
    expect(step.locator(".bash-timeout")).to_have_count(0)
    expect(step.locator(".bash-stdout")).to_have_count(0)  # no output: none shown
    expect(step.locator(".bash-stderr")).to_have_text("grep: ./locked: Permission denied\n")
    badge = step.locator(".bash-exit")
    expect(badge).to_have_text("exit code 3")
    expect(badge).to_have_css("background-color", "rgb(185, 28, 28)")  # red
    expect(step.locator(".bash-files")).to_have_count(0)
    expect(step.locator(".bash-files-error")).to_have_text(
        "Files not stored: the workspace would hold more than 100 files"
    )

    step = slow.locator(BASH)
    expect(step.locator(".bash-stdout")).to_have_text("started\n")
    expect(step.locator(".bash-exit")).to_have_text(
        "stopped: the wall time of 30 s (TURNSTREAM_SANDBOX_TIMEOUT_SECONDS)"
    )
    expect(step.locator(".bash-exit")).not_to_have_css("background-color", "rgb(21, 128, 61)")

    # Not the tool's JSON: the generic step, folded, with the error as its result.
    expect(broken.locator(BASH)).to_have_count(0)
    step = broken.locator("details.tool")
    expect(step).to_have_count(1)
    expect(step.locator(".tool-name")).to_have_text("bash")
    expect(step).to_have_attribute("data-state", "error")
    expect(step.locator(".tool-state")).to_have_text("failed")
    expect(step.locator(".tool-result")).to_be_hidden()
    step.locator("summary").click()
    expect(step.locator(".tool-result")).to_have_text(
        "bash failed: SandboxUnavailable: bubblewrap is not installed"
    )
    expect(step.locator(".tool-args")).to_contain_text('"command": "ls /nowhere"')
    step.locator("summary").click()  # folded again, as it came


def test_a_bash_step_shows_its_command_output_exit_code_and_files(served, context):
    user = served.user("bea")
    cid = user.conversation()
    page = context.new_page()
    open_chat(page, served, user, cid)
    for message in (call(MAKE_CHART, timeout=20), call(FAILING), call(SLOW), call("ls /nowhere")):
        expect(send(page, message)).to_have_attribute("data-status", "completed")
    assert_steps(page)
    live = tool_steps(page)
    expect(page.locator("#messages b")).to_have_count(0)

    page.reload()
    expect(page.locator(".msg.assistant")).to_have_count(4)
    assert_steps(page)
    assert tool_steps(page) == live  # from the stored messages, as it was live
    # As stored: the tool message holds the tool's own JSON.
    stored = [m for m in user.messages(cid) if m["role"] == "tool"]
    assert json.loads(stored[0]["content"])["stdout"] == "chart: <b>sales</b>\n  3 bars\n"


def test_a_bash_step_folds_to_its_command_on_one_line(served, context):
    user = served.user("carl")
    page = context.new_page()
    open_chat(page, served, user, user.conversation())
    reply = send(page, call(MAKE_CHART))
    expect(reply).to_have_attribute("data-status", "completed")
    step = reply.locator(BASH)
    brief = step.locator("summary .tool-brief")
    expect(brief).to_be_hidden()  # open: the command shows below
    step.locator("summary").click()
    expect(step.locator(".bash-output")).to_be_hidden()
    expect(brief).to_be_visible()
    expect(brief).to_have_text(MAKE_CHART)
