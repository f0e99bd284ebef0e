"""Following a run's events across dropped connections: the decisions, without I/O.

A `Follow` is one run being read. It says which request to make next:

- while the run's session id is unknown, the message's own POST (sent again
  with the same Idempotency-Key, so a repeat starts nothing new and replays
  the run from its first event);
- once the `X-Session-Id` header has named the run,
  GET …/resume/{session_id}?cursor=<the id of the last event received>.

It turns the lines of each response into `Event`s, drops any it has already
handed out (by `seq`), and notes `end`. When a connection ends before `end`,
it says how long to wait before the next request (doubling waits, or a
502/503/504's Retry-After) and, after too many failures in a row, gives up
with `StreamBroken`. `Client` and `AsyncClient` run the same `Follow`; only
their loops (sync and async) differ. The rules are docs/protocol.md,
"Cursors and resuming".
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx

from turnstream.client.calls import Opening, conversation_path
from turnstream.client.errors import ClientError, ConnectionFailed, StreamBroken, api_error
from turnstream.client.models import Event
from turnstream.client.sse import SSEDecoder

# A connection that broke, or never came: resume. (A LocalProtocolError or an
# UnsupportedProtocol is a bug or a bad URL, and is not retried.)
TRANSIENT: tuple[type[Exception], ...] = (
    httpx.NetworkError,
    httpx.TimeoutException,
    httpx.RemoteProtocolError,
)
# A proxy or the server says "not now" (503: Redis or the database is away).
RETRY_STATUSES = frozenset({502, 503, 504})
LONGEST_RETRY_AFTER = 30.0  # seconds: a Retry-After is honoured up to this

# The run's own `end` event; docs/protocol.md, "Event types".
END = "end"
QUEUED = "queued"


@dataclass(frozen=True)
class Retry:
    """`attempts` failed requests in a row are retried, waiting `first`, then twice as long
    each time, up to `longest` seconds. Any event received resets the count."""

    attempts: int = 8
    first: float = 0.25
    longest: float = 5.0

    def delay(self, failures: int) -> float:
        return float(min(self.longest, self.first * 2 ** (failures - 1)))


class Follow:
    """One run being followed: what to request next, the events read, when to give up."""

    def __init__(
        self,
        retry: Retry,
        base_url: str,
        *,
        cid: str,
        opening: Opening | None = None,
        session_id: str | None = None,
        cursor: str = "0-0",
    ) -> None:
        assert opening is not None or session_id is not None, "open a run, or name one"
        self.retry = retry
        self.base_url = base_url  # a `file` event's link is joined to it
        self.cid = cid
        self.opening = opening
        self.session_id = session_id
        self.cursor = cursor  # the id of the last event handed out
        self.done = False  # `end` was handed out
        self._seq = 0
        self._failures = 0
        self._decoder = SSEDecoder()

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        self._decoder = SSEDecoder()  # a half frame of the last response is thrown away
        if self.session_id is None:
            assert self.opening is not None
            return http.build_request(
                "POST",
                self.opening.path,
                params=self.opening.params,
                json=self.opening.json,
                headers={"Idempotency-Key": self.opening.idempotency_key},
            )
        path = conversation_path(self.cid, "resume", self.session_id)
        return http.build_request("GET", path, params={"cursor": self.cursor})

    def opened(self, response: httpx.Response) -> bool:
        """Whether `response` is the stream. If not, read its body and call `refused`."""
        if response.status_code != 200:
            return False
        if self.session_id is None:
            self.session_id = response.headers.get("x-session-id")
        return True

    def refused(self, response: httpx.Response) -> float:
        """The wait before retrying a 502/503/504; any other refusal is raised as `ApiError`."""
        error = api_error(response)
        if response.status_code not in RETRY_STATUSES:
            raise error
        return self._failed(error, _retry_after(response))

    def feed(self, line: str) -> Event | None:
        """The event that `line` completes, if it is one not handed out yet."""
        frame = self._decoder.feed(line)
        # No id: a server's notice (it lost Redis, or it is shutting down); the run
        # goes on, and the response ends next, so the client resumes.
        if frame is None or not frame.id:
            return None
        try:
            event = Event.from_json(frame.id, json.loads(frame.data), self.base_url)
        except (ValueError, KeyError, TypeError) as exc:
            raise ClientError(f"A malformed event from the server: {frame.data[:200]!r}") from exc
        if event.seq <= self._seq:
            return None
        self._seq = event.seq
        self.cursor = event.id
        self._failures = 0
        if event.type == QUEUED and self.session_id is None:
            self.session_id = event.data.get("sessionId")
        self.done = event.type == END
        return event

    def dropped(self, exc: Exception | None) -> float:
        """The wait before resuming a connection that ended before `end` (`exc` None: it
        closed cleanly). Raises `StreamBroken` once the retries are used up, and
        `ConnectionFailed` at once for an httpx error that no retry mends."""
        if exc is not None and not isinstance(exc, TRANSIENT):
            raise ConnectionFailed(f"{exc!r}") from exc
        return self._failed(exc, None)

    def _failed(self, exc: Exception | None, wait: float | None) -> float:
        self._failures += 1
        if self._failures > self.retry.attempts:
            why = f": {exc}" if exc is not None and str(exc) else ""
            raise StreamBroken(
                f"Lost the run's stream and could not resume it "
                f"({self.retry.attempts} retries){why}",
                session_id=self.session_id,
                cursor=self.cursor,
            ) from exc
        return wait if wait is not None else self.retry.delay(self._failures)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return min(max(seconds, 0.0), LONGEST_RETRY_AFTER)
