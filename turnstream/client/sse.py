"""Server-Sent Events, read line by line (the WHATWG event-stream format, as much as we need).

turnstream's frames are `id:`, `event:` and `data:` lines ending in CRLF, then
a blank line; `: ping` comment lines keep an idle stream open
(docs/protocol.md, "SSE framing"). httpx's `iter_lines` already splits on
CRLF, LF or CR and drops the line ends, so the decoder only sees lines. A
frame counts once its blank line arrives: the half frame of a broken
connection never does.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Frame:
    """One dispatched SSE event. `id` is "" when the frame had none."""

    id: str
    event: str
    data: str


class SSEDecoder:
    """Feed it lines; it returns a `Frame` at each blank line that ends one."""

    def __init__(self) -> None:
        self._id = ""
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> Frame | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # a comment, such as `: ping`
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None  # `retry:` and unknown fields are ignored

    def _dispatch(self) -> Frame | None:
        if not self._data:
            self._event = ""
            return None
        frame = Frame(id=self._id, event=self._event, data="\n".join(self._data))
        # The id is sticky in SSE; turnstream sends one per run event, and none
        # on its out-of-band notice, which must not inherit the previous one.
        self._id = ""
        self._event = ""
        self._data = []
        return frame
