"""uvicorn's httptools protocol, with a cap on how much of a request head it reads.

httptools has no limit of its own: it buffers a header until its end, and a
64 MiB one took 9.5 s of CPU (the value is grown chunk by chunk). Here, a
request whose line and headers exceed `max_head_bytes` gets `431` with the
API's JSON error body, and the connection is closed. A head still arriving is
refused as soon as its bytes pass the cap, so a huge one is never read whole.
`HeaderLimit` answers exactly below the cap; this is the backstop.
"""

from __future__ import annotations

import asyncio
import json
from asyncio import TimerHandle

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from turnstream.api.header_limit import TOO_LARGE, header_bytes, too_large_detail

# The cap is this many times TURNSTREAM_MAX_HEADER_BYTES: room for a long URL,
# while the app's own, exact 431 answers everything in between.
HEAD_CAP_FACTOR = 4
# After refusing, the rest of what the client sends is read and dropped this long
# before closing: closing with unread data makes the kernel send a reset, which
# can destroy the 431 before the client has read it.
LINGER_SECONDS = 2.0


def bounded_httptools(max_head_bytes: int) -> type[asyncio.Protocol]:
    """The protocol class to give uvicorn as `http=`, with this cap."""
    assert max_head_bytes > 0, "the cap must be positive"
    return type(
        "BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"max_head_bytes": max_head_bytes}
    )


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    max_head_bytes = 64 * 1024

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_bytes = 0
        self._reading_head = True
        self._refused = False
        self._linger: TimerHandle | None = None
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: drop it
        super().data_received(data)
        if self._reading_head and not self._refused and not self.transport.is_closing():
            # Counted per chunk while the head is incomplete: a chunk that also ends the
            # previous request counts whole, which can only refuse a little early.
            self._head_bytes += len(data)
            self._refused = self._head_bytes > self.max_head_bytes
        if self._refused:
            self._refuse()

    # Parser callbacks
    def on_message_begin(self) -> None:
        self._head_bytes = 0
        self._reading_head = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._reading_head = False
        if self._refused or len(self.url) + header_bytes(self.headers) > self.max_head_bytes:
            self._refused = True  # answered once the parser returns; no later request runs
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def _refuse(self) -> None:
        self.logger.warning("Request head over %d bytes: answered 431", self.max_head_bytes)
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()  # a response is under way: no room for ours
            return
        detail = too_large_detail(
            f"The request line and headers exceed {self.max_head_bytes} bytes"
        )
        body = json.dumps({"error": TOO_LARGE, "detail": detail}).encode()
        head = [STATUS_LINE[431]]
        head += [n + b": " + v + b"\r\n" for n, v in self.server_state.default_headers]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger = self.loop.call_later(LINGER_SECONDS, self.transport.close)
