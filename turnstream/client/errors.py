"""The exceptions of turnstream.client: one tree, so `except ClientError` catches them all.

    ClientError                 anything this package raises
     ├── ApiError               the server refused a request: .status and .body, its JSON
     │    ├── CursorExpired     409: the events after the cursor were trimmed; .resync_cursor
     │    ├── InvalidPath       400: not a path the workspace accepts (`..`, absolute, …)
     │    ├── FileNotFound      404: no such file in the workspace; .path
     │    ├── WorkspaceFull     413: over a workspace limit, nothing stored; .limit, .setting
     │    ├── ApprovalNotFound  404: no such approval waits (or it expired); .approval_id
     │    └── ApprovalDecided   409: decided the other way first, or the run no longer
     │                          waits; .approved (None then), .session_id
     └── ConnectionFailed       the server could not be reached, or the connection broke
          └── StreamBroken      following a run failed, and so did every resume since;
                                .session_id and .cursor say where to resume by hand

httpx's own errors never leave the package: they are the `__cause__` of a
`ConnectionFailed`.
"""

from __future__ import annotations

from typing import Any

import httpx


class ClientError(Exception):
    """Base of every exception turnstream.client raises."""


class ApiError(ClientError):
    """An answer other than success. `body` is the server's JSON (its text if it was not JSON).

    docs/protocol.md, "Errors and status codes", lists them. `error` is the
    short fixed text to match on (`"Cursor expired"`, …) and `detail` the
    explanation; an answer has one or both.
    """

    def __init__(self, status: int, body: Any, *, method: str, url: str) -> None:
        self.status = status
        self.body = body
        self.method = method
        self.url = url
        super().__init__(f"{status} {self.error or self.detail or ''}".rstrip())

    @property
    def error(self) -> str | None:
        return self._field("error")

    @property
    def detail(self) -> str | None:
        return self._field("detail")

    def _field(self, name: str) -> str | None:
        value = self.body.get(name) if isinstance(self.body, dict) else None
        return value if isinstance(value, str) else None


class CursorExpired(ApiError):
    """409: the run's oldest events were trimmed, and the cursor was before the kept ones.

    Resume from `resync_cursor` for every event still kept, up to `end`; the
    events in between are gone, so take the reply's text from the messages
    once the run has ended (docs/protocol.md, "An expired cursor").
    """

    @property
    def session_id(self) -> str | None:
        return self._field("sessionId")

    @property
    def resync_cursor(self) -> str:
        resync = self.body.get("resync") if isinstance(self.body, dict) else None
        return str(resync["cursor"]) if isinstance(resync, dict) else "0-0"


class InvalidPath(ApiError):
    """400: a workspace path the server does not accept (absolute, with `..`, too long, …);
    `detail` says which rule it breaks. Nothing was stored."""


class FileNotFound(ApiError):
    """404: the conversation's workspace has no file of that path."""

    @property
    def path(self) -> str | None:
        return self._field("path")


class WorkspaceFull(ApiError):
    """413: a file, or the workspace, would be over a limit; nothing was stored.

    `limit` is that limit (bytes, or a number of files) and `setting` the
    server's setting that sets it (`TURNSTREAM_WORKSPACE_FILE_BYTES`, …).
    """

    @property
    def limit(self) -> int | None:
        value = self.body.get("limit") if isinstance(self.body, dict) else None
        return value if isinstance(value, int) else None

    @property
    def setting(self) -> str | None:
        return self._field("setting")


class ApprovalNotFound(ApiError):
    """404: the conversation has no such approval, or it expired (and was denied then)."""

    @property
    def approval_id(self) -> str | None:
        return self._field("approvalId")


class ApprovalDecided(ApiError):
    """409: the approval was decided the other way first (`approved` is the decision that
    stands), or the run no longer waits (`approved` None: it was stopped or ended)."""

    @property
    def approved(self) -> bool | None:
        value = self.body.get("approved") if isinstance(self.body, dict) else None
        return value if isinstance(value, bool) else None

    @property
    def session_id(self) -> str | None:
        return self._field("sessionId")


# The subclass of ApiError for an answer's status and its `error` text.
_BY_ERROR: dict[tuple[int, str], type[ApiError]] = {
    (400, "Invalid path"): InvalidPath,
    (404, "File not found"): FileNotFound,
    (413, "Workspace limit reached"): WorkspaceFull,
    (404, "Approval not found or expired"): ApprovalNotFound,
    (409, "Approval already decided"): ApprovalDecided,
    (409, "The run no longer waits"): ApprovalDecided,
}


class ConnectionFailed(ClientError):
    """The request did not get an answer: no connection, a timeout, or a broken response."""


class StreamBroken(ConnectionFailed):
    """A run's stream broke and resuming it failed as many times as the client allows.

    The run goes on without the client. Resume it from `cursor` (the last
    event received; "0-0" if none) once the server is back, or load the
    messages after it ended. `session_id` is None if the message's request
    itself never got an answer.
    """

    def __init__(self, message: str, *, session_id: str | None, cursor: str) -> None:
        super().__init__(message)
        self.session_id = session_id
        self.cursor = cursor


def api_error(response: httpx.Response) -> ApiError:
    """The exception for an unsuccessful answer whose body has been read."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    kind = ApiError
    if isinstance(body, dict):
        kind = _BY_ERROR.get((response.status_code, str(body.get("error"))), ApiError)
    if response.status_code == 409 and isinstance(body, dict) and "resync" in body:
        kind = CursorExpired
    request = response.request
    return kind(response.status_code, body, method=request.method, url=str(request.url))
