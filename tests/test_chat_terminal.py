"""`turnstream chat` in a real terminal: a pseudo-terminal that is its controlling terminal,
against a real `turnstream serve`.

Keys are written to the terminal's master side (Enter is "\\r", Ctrl-C "\\x03", which the
terminal turns into SIGINT for the chat's process group) and the screen is what the master
side reads back, the terminal's echo of the keys included.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import wait_until
from servers import Server, create_token

from turnstream.client import Client

WORDS = 150  # 150 words, 40 ms apart: a 6 s reply, long enough to leave and come back
FILE_LIMIT = 4096  # TURNSTREAM_WORKSPACE_FILE_BYTES
# Makes the pseudo-terminal on stdin the controlling terminal of the new session
# (Popen's start_new_session), so that Ctrl-C reaches the chat, then runs it.
CONTROLLING_TTY = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


class Terminal:
    """`turnstream chat ARGS` in a pseudo-terminal."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        master, slave = os.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CONTROLLING_TTY, "-m", "turnstream", "chat", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**os.environ, **env},
            start_new_session=True,
        )
        os.close(slave)
        self._master = master
        self._output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def type(self, keys: str) -> None:
        os.write(self._master, keys.encode())

    def screen(self) -> str:
        return bytes(self._output).decode(errors="replace").replace("\r\n", "\n")

    def expect_line(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """Wait until a whole line of the screen matches `pattern`; the match."""
        return wait_until(
            lambda: re.search(f"^{pattern}\n", self.screen(), re.M),
            timeout=timeout,
            what=f"a line {pattern!r} on the screen:\n{self.screen()}",
        )

    def expect(self, text: str, timeout: float = 30) -> str:
        """Wait until `text` is on the screen; the screen."""
        return wait_until(
            lambda: self.screen() if text in self.screen() else None,
            timeout=timeout,
            what=f"{text!r} on the screen:\n{self.screen()}",
        )

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._reader.join(10)
        os.close(self._master)

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 4096)
            except OSError:  # EIO: the chat has exited and closed the terminal
                return
            if not data:
                return
            self._output += data


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A running `serve` (embedded mode) and the chat's environment: its URL and a token."""
    tmp = tmp_path_factory.mktemp("chat")
    database_url = f"sqlite+aiosqlite:///{tmp}/ts.db"
    server_env = {
        "TURNSTREAM_REDIS_URL": "",
        "TURNSTREAM_DATA_DIR": str(tmp / "data"),
        "TURNSTREAM_DATABASE_URL": database_url,
        "TURNSTREAM_DEMO_WORDS": str(WORDS),
        "TURNSTREAM_DEMO_DELAY_MS": "40",
        "TURNSTREAM_TOOLS": "basic,workspace",  # `/tool write_file {…}`
        "TURNSTREAM_WORKSPACE_FILE_BYTES": str(FILE_LIMIT),
    }
    with Server(server_env, tmp / "serve.log") as server:
        token = create_token(database_url, "tess")
        yield {"TURNSTREAM_URL": server.url, "TURNSTREAM_TOKEN": token}


@pytest.fixture
def terminals(env: dict[str, str]) -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for terminal in opened:
        terminal.close()


def _chat(env: dict[str, str], terminals: list[Terminal], *args: str) -> tuple[Terminal, str]:
    """A new chat, once it shows its conversation; the conversation's id."""
    terminal = Terminal(env, *args)
    terminals.append(terminal)
    found = wait_until(
        lambda: re.search(r"\[conversation ([0-9a-f-]{36})\]", terminal.screen()),
        timeout=30,
        what=f"the chat's conversation id on the screen:\n{terminal.screen()}",
    )
    return terminal, found[1]


def _client(env: dict[str, str]) -> Client:
    return Client(env["TURNSTREAM_URL"], env["TURNSTREAM_TOKEN"])


def _wait_for_the_end(client: Client, cid: str) -> None:
    def ended() -> bool:
        status = client.task_status(cid)
        return status is not None and not status.is_active

    wait_until(ended, timeout=30, what="the run to end")


def test_a_reply_streams_with_its_tool_steps(env, terminals):
    terminal, cid = _chat(env, terminals)
    terminal.expect("you> ")
    terminal.type("/tool 2+2\r")
    terminal.expect("[tool call] ")
    terminal.expect("[tool result] ")
    with _client(env) as client:
        _wait_for_the_end(client, cid)
        reply = client.messages(cid)[-1]
        assert reply.role == "assistant" and reply.content
        terminal.expect(f"{reply.content}\nyou> ")
        assert "Traceback" not in terminal.screen()
    terminal.type("/quit\r")
    assert terminal.wait() == 0

    # With no reply running, --resume shows the last exchange, tool steps included.
    again, _ = _chat(env, terminals, "--resume", cid)
    screen = again.expect(f"{reply.content}\nyou> ")
    assert "you> /tool 2+2\n[tool call] " in screen and "[tool result] " in screen
    again.type("/quit\r")
    assert again.wait() == 0


def test_ctrl_c_detaches_and_resume_picks_up_the_running_reply(env, terminals):
    terminal, cid = _chat(env, terminals)
    terminal.expect("you> ")
    terminal.type("hello\r")
    wait_until(
        lambda: len(terminal.screen().partition("hello\n")[2].split()) >= 5,
        timeout=30,
        what="the first words of the reply",
    )
    terminal.type("\x03")  # Ctrl-C
    terminal.expect(
        f"[detached: the reply goes on. Pick it up with: turnstream chat --resume {cid}]"
    )
    assert terminal.wait() == 0
    with _client(env) as client:
        status = client.task_status(cid)
        assert status is not None and status.is_active  # the run goes on without the chat

        again, same = _chat(env, terminals, "--resume", cid)
        assert same == cid
        again.expect("[a reply is running: picking it up]")
        _wait_for_the_end(client, cid)
        reply = client.messages(cid)[-1]
    assert reply.status == "complete" and len(reply.content.split()) == WORDS
    # The whole reply, rebuilt from the start of the run, then the prompt again.
    again.expect(f"[a reply is running: picking it up]\n{reply.content}\nyou> ")
    again.type("\x04")  # Ctrl-D at the prompt ends the chat
    assert again.wait() == 0


def test_stop_typed_while_a_reply_streams_stops_it(env, terminals):
    terminal, cid = _chat(env, terminals)
    terminal.expect("you> ")
    terminal.type("stop me\r")
    wait_until(
        lambda: len(terminal.screen().partition("stop me\n")[2].split()) >= 3,
        timeout=30,
        what="the first words of the reply",
    )
    terminal.type("/stop\r")
    terminal.expect("[reply stopped]\nyou> ")
    with _client(env) as client:
        status = client.task_status(cid)
        assert status is not None and not status.is_active
        reply = client.messages(cid)[-1]
    assert reply.status == "cancelled"
    assert 0 < len(reply.content.split()) < WORDS
    terminal.type("/stop\r")  # nothing runs now
    terminal.expect("[nothing stopped: No active run]")
    terminal.type("/quit\r")
    assert terminal.wait() == 0


def _piped_chat(
    env: dict[str, str], tmp_path: Path, messages: str
) -> subprocess.CompletedProcess[str]:
    """`turnstream chat` reading `messages` from a file, as from a pipe: its output."""
    script = tmp_path / "messages.txt"
    script.write_text(messages)
    with script.open() as stdin:
        return subprocess.run(
            [sys.executable, "-m", "turnstream", "chat"],
            stdin=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=60,
        )


def test_messages_from_a_file_or_a_pipe_are_answered_one_after_the_other(env, tmp_path):
    # No /quit: the end of the file ends the chat.
    result = _piped_chat(env, tmp_path, "/tool 2+2\nhello\n")
    assert result.returncode == 0, result.stderr
    cid = re.search(r"\[conversation ([0-9a-f-]{36})\]", result.stdout)
    assert cid, result.stdout
    with _client(env) as client:
        messages = client.messages(cid[1])
    questions = [m.content for m in messages if m.role == "user"]
    assert questions == ["/tool 2+2", "hello"]
    assert "you> /tool 2+2\n[tool call] " in result.stdout
    assert f"you> hello\n{messages[-1].content}\nyou> " in result.stdout


def test_upload_and_files_and_the_files_the_agent_writes_with_their_links(
    env, terminals, tmp_path: Path
):
    notes = tmp_path / "notes.txt"
    notes.write_text("pack the charger\n")
    (tmp_path / "big.bin").write_bytes(b"x" * (FILE_LIMIT + 1))
    terminal, cid = _chat(env, terminals)
    terminal.expect("you> ")

    terminal.type(f"/upload {notes}\r")
    uploaded = terminal.expect_line(r"\[uploaded\] notes\.txt \(17 bytes\) (http\S+)")
    assert httpx.get(uploaded[1]).content == b"pack the charger\n"  # the link needs no token
    terminal.type(f"/upload {tmp_path / 'big.bin'} {notes}\r")  # all or nothing: nothing
    refused = terminal.expect_line(r"\[upload failed: Workspace limit reached: .*\]")
    assert "TURNSTREAM_WORKSPACE_FILE_BYTES" in refused[0]
    terminal.type("/upload nowhere.txt\r")
    terminal.expect("[upload failed: No such file or directory: nowhere.txt]\nyou> ")

    write = json.dumps({"path": "out/list.md", "content": "- charger\n"})
    terminal.type(f"/tool write_file {write}\r")
    written = terminal.expect_line(r"\[file\] out/list\.md \(10 bytes\) (http\S+)")
    assert written[1].startswith(f"{env['TURNSTREAM_URL']}/api/v1/conversations/{cid}/files/")
    assert httpx.get(written[1]).content == b"- charger\n"
    with _client(env) as client:
        _wait_for_the_end(client, cid)
        terminal.expect(f"{client.messages(cid)[-1].content}\nyou> ")
        terminal.type("/files\r")
        terminal.expect_line(r"\[2 files, 27 bytes\]")
        terminal.expect_line(r"  notes\.txt \(17 bytes\) http\S+")
        terminal.expect_line(r"  out/list\.md \(10 bytes\) http\S+")

        terminal.type('/tool delete_file {"path": "notes.txt"}\r')
        terminal.expect_line(r"\[file\] deleted notes\.txt")
        _wait_for_the_end(client, cid)
        assert [f.path for f in client.files(cid).items] == ["out/list.md"]
        terminal.expect(f"{client.messages(cid)[-1].content}\nyou> ")
    assert "Traceback" not in terminal.screen()
    terminal.type("/quit\r")
    assert terminal.wait() == 0

    # --resume draws the last exchange from the stored messages: the deletion included.
    again, _ = _chat(env, terminals, "--resume", cid)
    again.expect_line(r"\[file\] deleted notes\.txt")
    again.expect("you> ")
    again.type("/quit\r")
    assert again.wait() == 0


# -- approvals: a serve that asks before every calculator and bash call ----------------

SIX_TIMES_SEVEN = '/tool calculator {"expression": "6*7"}'
ASK_SIX_TIMES_SEVEN = 'Approve calculator {"expression": "6*7"}? [y/N] '


@pytest.fixture(scope="module")
def asking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Another `serve`, whose calculator and bash calls wait for the user; `bash` is the
    web tests' double (it runs nothing)."""
    tmp = tmp_path_factory.mktemp("asking")
    database_url = f"sqlite+aiosqlite:///{tmp}/ts.db"
    web_tests = str(Path(__file__).parent / "web")
    server_env = {
        "TURNSTREAM_REDIS_URL": "",
        "TURNSTREAM_DATA_DIR": str(tmp / "data"),
        "TURNSTREAM_DATABASE_URL": database_url,
        "TURNSTREAM_DEMO_DELAY_MS": "1",
        "TURNSTREAM_TOOLS": "basic,bash_double:bash",
        "TURNSTREAM_TOOL_APPROVAL": "calculator,bash",
        "PYTHONPATH": os.pathsep.join(filter(None, [web_tests, os.environ.get("PYTHONPATH")])),
    }
    with Server(server_env, tmp / "serve.log") as server:
        token = create_token(database_url, "tess")
        yield {"TURNSTREAM_URL": server.url, "TURNSTREAM_TOKEN": token}


def test_a_waiting_call_is_asked_again_after_resume_and_y_runs_it(asking, terminals):
    terminal, cid = _chat(asking, terminals)
    terminal.expect("you> ")
    terminal.type(SIX_TIMES_SEVEN + "\r")
    terminal.expect(f'[tool call] calculator({{"expression": "6*7"}})\n{ASK_SIX_TIMES_SEVEN}')
    terminal.type("\x03")  # Ctrl-C: the run waits on no one
    terminal.expect("[detached: the reply goes on.")
    assert terminal.wait() == 0

    again, _ = _chat(asking, terminals, "--resume", cid)
    again.expect("[a reply is running: picking it up]\n[tool call] calculator(")
    again.expect(ASK_SIX_TIMES_SEVEN)
    again.type("y\r")
    again.expect(f"{ASK_SIX_TIMES_SEVEN}y\n[approved]\n[tool result] 42\n6*7 = 42.\nyou> ")
    with _client(asking) as client:
        assert client.messages(cid)[-1].content == "6*7 = 42."
    again.type("/quit\r")
    assert again.wait() == 0


def test_a_question_decided_elsewhere_is_taken_back(asking, terminals):
    terminal, cid = _chat(asking, terminals)
    terminal.expect("you> ")
    terminal.type(SIX_TIMES_SEVEN + "\r")
    terminal.expect(ASK_SIX_TIMES_SEVEN)
    with _client(asking) as client:
        events = client.resume(cid, client.active_session(cid).session_id)
        asked = next(e.approval_request for e in events if e.approval_request is not None)
        events.close()
        client.deny(cid, asked.approval_id, "from the other tab")
    terminal.expect(f"{ASK_SIX_TIMES_SEVEN}\n[denied: from the other tab]\n[tool error] Not run")
    # The reply, then the prompt again: the question no longer holds the terminal.
    terminal.expect(
        "could not answer: Not run: the user denied this call (from the other tab).\nyou> "
    )
    terminal.type("/quit\r")
    assert terminal.wait() == 0


def test_a_bash_call_is_asked_about_as_its_command_and_no_from_a_pipe_denies_it(asking, tmp_path):
    result = _piped_chat(asking, tmp_path, '/tool bash {"command": "rm -r out"}\nn\n')
    assert result.returncode == 0, result.stderr
    assert 'Approve bash "rm -r out"? [y/N] n\n[denied]\n[tool error] Not run' in result.stdout
