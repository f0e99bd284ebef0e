"""`turnstream chat`: a chat in the terminal, on top of turnstream.client's AsyncClient.

Type a message and the reply streams in as the agent writes it; tool calls,
their results and the files the agent writes show on lines of their own.
While a reply streams the keyboard stays live:

    /stop    stop the reply (what was written is stored, as cancelled)
    Ctrl-C   detach: the chat ends, the reply goes on on the server, and
             `turnstream chat --resume CID` picks it up where it is

At the prompt, `/stop` stops a reply still running, `/quit` (or Ctrl-D)
ends the chat. `/upload PATH [PATH…]` stores files in the conversation's
workspace (the agent's workspace tools see them) and `/files` lists it; a
file the agent writes shows on a line of its own, with its size and a link
that downloads it without the token (for an hour). `--resume CID` goes on
in an existing conversation: it first follows the reply running there, from
its start, or shows the last exchange. Everything goes to stdout; only a
failure to start goes to stderr.

    chat.py           the command: its options, and how it fails to start
    chat_session.py   ChatSession: the conversation, the keyboard, the screen
    chat_terminal.py  stdin read from the event loop, and what goes on screen

The client (and httpx) is imported when the command runs, so that the other
commands do not pay for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from turnstream.cli.checks import fail

if TYPE_CHECKING:
    from turnstream.cli.chat_session import ChatSession
    from turnstream.client import ClientError


def chat(
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="CID",
            help="Go on in this conversation, following its running reply first.",
        ),
    ] = None,
    url: Annotated[
        str, typer.Option(envvar="TURNSTREAM_URL", help="The turnstream server.")
    ] = "http://127.0.0.1:8000",
    token: Annotated[
        str | None,
        typer.Option(
            envvar="TURNSTREAM_TOKEN",
            show_default=False,
            help="A bearer token (`turnstream token create USER` makes one).",
        ),
    ] = None,
) -> None:
    """Chat in the terminal: replies stream in as the agent writes them.

    /stop stops a reply; Ctrl-C detaches and the reply goes on, for
    `turnstream chat --resume CID` to pick up. /upload PATH… stores files in
    the conversation's workspace, /files lists them.
    """
    if not token:
        raise fail(
            "No token: set TURNSTREAM_TOKEN or pass --token "
            "(the first `turnstream serve` prints one; `turnstream token create USER` makes one)."
        )
    from turnstream.cli.chat_session import ChatSession, Detached
    from turnstream.client import ClientError

    session = ChatSession(url, token, sys.stdout)
    # Ctrl-C leaves at once: the run goes on on the server, and nothing here needs more
    # closing than the exit does. (Cancelling the chat's task and waiting for its cleanup,
    # asyncio.run's way, was seen to hang for good on a loaded machine.)
    signal.signal(signal.SIGINT, lambda _signum, _frame: _leave(session))
    try:
        asyncio.run(session.run(resume))
    except Detached:
        session.detach()
    except ClientError as exc:  # only the first requests: later ones are reported inline
        raise fail(_why_not(exc, url, resume)) from None


def _leave(session: ChatSession) -> NoReturn:
    """Say how to come back, and exit."""
    with contextlib.suppress(RuntimeError):  # the signal came inside a write to the screen
        session.detach()
        sys.stdout.flush()
    os._exit(0)


def _why_not(exc: ClientError, url: str, resume: str | None) -> str:
    from turnstream.client import ApiError, ConnectionFailed

    if isinstance(exc, ConnectionFailed):
        return (
            f"Cannot reach a turnstream server at {url}: start one (`turnstream serve`), "
            "or set TURNSTREAM_URL."
        )
    if isinstance(exc, ApiError) and exc.status == 401:
        return f"The server refused the token ({exc.detail}). Check TURNSTREAM_TOKEN or --token."
    if isinstance(exc, ApiError) and exc.status == 403 and resume is not None:
        return f"No conversation {resume} of yours on {url}."
    return f"turnstream chat: {exc}"
