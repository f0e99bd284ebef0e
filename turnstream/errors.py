"""Every error turnstream raises on purpose, in one tree.

    TurnstreamError
    ├── Refused                       the request is not served as asked
    │   ├── Unauthorized              no valid credential; the message says what is wrong
    │   ├── AccessDenied              not the caller's conversation, an unknown one, a bad id
    │   ├── NotFound
    │   │   ├── UnknownPath           no route serves this path (below one's own conversation)
    │   │   ├── SessionNotFound       no such run here for the caller, or its events expired
    │   │   ├── NoActiveSession       active-session: the conversation keeps no run
    │   │   ├── NoBackgroundTask      task-status: the conversation keeps no run
    │   │   ├── NoActiveRun           stop: nothing of the caller's is running
    │   │   ├── FileNotFound          no such file in the conversation's workspace
    │   │   └── ApprovalNotFound      no such approval kept for the conversation, or expired
    │   ├── Conflict                  the request clashes with a conversation's or run's state
    │   │   ├── RunConflict           another run is active (`active_session_id`)
    │   │   ├── CursorExpired         the events after the cursor were trimmed (`resync_cursor`)
    │   │   ├── RunEndedFirst         stop: the run ended otherwise (`status`) before it saw it
    │   │   ├── ReplyReplaced         a regenerate replaced the awaited reply (`session_id`)
    │   │   ├── PathConflict          a file where a folder is, or a folder where a file is
    │   │   ├── ApprovalDecided       the other decision stands, or the run no longer waits
    │   │   ├── NothingToRegenerate   the conversation has no user message
    │   │   ├── NotANewMessage        an AI SDK request with no new user message (an edit)
    │   │   └── CursorAhead           a cursor past the run's newest event (`newest`)
    │   ├── InvalidInput
    │   │   ├── InvalidMessage        a message body that cannot be used
    │   │   ├── MessageTooLong        more than `max_chars` characters
    │   │   ├── InvalidCursor         not a stream entry id
    │   │   ├── InvalidPath           not a valid workspace path (store/paths.py)
    │   │   └── InvalidUpload         an upload body that cannot be read as files
    │   ├── WorkspaceFull             a file or a workspace over its limit (`limit`, `setting`)
    │   ├── RateLimited               too many runs started in a minute (`retry_after` seconds)
    │   └── ActiveRunLimit            as many runs going at once as allowed (`limit`)
    ├── Unavailable                   a backing service cannot be reached or used: retry later
    │   ├── RedisUnavailable
    │   ├── DatabaseUnavailable
    │   └── IdentityProviderUnavailable   its JWKS URL cannot be fetched to check a token
    └── Misconfigured                 the settings cannot work together; the message says how

An error carries what an answer needs (ids, seconds, limits) as attributes, and
its explanation for people as its message. `turnstream.api.errors` gives each
class its HTTP status, headers and body, in one place. Library errors become
these once, where they are met: the database's in `turnstream.store.db`,
redis-py's connection and timeout errors in the API's handlers.

This module imports nothing from turnstream, so that any module may raise these.

Length: the whole tree in one module, drawn above, so that a new error finds its
place beside its siblings.
"""

from __future__ import annotations


class TurnstreamError(Exception):
    """The base of every error turnstream raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


# --- refusals ---------------------------------------------------------------------------


class Refused(TurnstreamError):
    """The request is not served as asked: its credential, target, input or timing."""


class Unauthorized(Refused):
    """No valid credential: missing, malformed, unknown or expired."""


class AccessDenied(Refused):
    """A conversation the caller may not see: another user's, an unknown one, or a bad id.

    The same error for all three, so that conversation ids cannot be probed.
    """

    def __init__(self) -> None:
        super().__init__("Access denied to conversation")


class NotFound(Refused):
    """Nothing of that name is kept for the caller."""


class UnknownPath(NotFound):
    """No route serves this path."""

    def __init__(self) -> None:
        super().__init__("Not Found")


class SessionNotFound(NotFound):
    """No such run in the conversation for the caller, or its events have expired."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"No such run is kept in conversation {conversation_id}.")
        self.conversation_id = conversation_id


class NoActiveSession(NotFound):
    """The conversation has no run, or its newest ended longer ago than runs are kept."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"Conversation {conversation_id} keeps no run.")
        self.conversation_id = conversation_id


class NoBackgroundTask(NotFound):
    """As NoActiveSession, for the question whether the background task is still busy."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"Conversation {conversation_id} keeps no run.")
        self.conversation_id = conversation_id


class NoActiveRun(NotFound):
    """Nothing of the caller's is running to stop (or the run named is not)."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"Nothing is running in conversation {conversation_id}.")
        self.conversation_id = conversation_id


class FileNotFound(NotFound):
    """No file of that path in the conversation's workspace."""

    def __init__(self, path: str) -> None:
        super().__init__(f"No file {path!r} in this conversation's workspace.")
        self.path = path


class ApprovalNotFound(NotFound):
    """No approval of that id is kept for the conversation, or it expired (denied)."""

    def __init__(self, *, approval_id: str, conversation_id: str) -> None:
        super().__init__(f"No approval {approval_id} waits in conversation {conversation_id}.")
        self.approval_id = approval_id
        self.conversation_id = conversation_id


class Conflict(Refused):
    """The request clashes with the current state of a conversation or a run."""


class RunConflict(Conflict):
    """Another run of the conversation is active, and the request would not wait for it."""

    def __init__(self, *, active_session_id: str, conversation_id: str) -> None:
        super().__init__("Resume it, stop it, or post with multitask=interrupt or enqueue.")
        self.active_session_id = active_session_id
        self.conversation_id = conversation_id


class CursorExpired(Conflict):
    """The events after the cursor were trimmed; `resync_cursor` is the last one dropped."""

    def __init__(self, *, session_id: str, resync_cursor: str) -> None:
        super().__init__(
            "Events up to this cursor were trimmed. Resume from it for the rest; the whole "
            "reply is in the conversation's messages once the run has ended."
        )
        self.session_id = session_id
        self.resync_cursor = resync_cursor


class RunEndedFirst(Conflict):
    """A stop came too late: the run ended otherwise (`status`) before it saw it."""

    def __init__(self, *, status: str, session_id: str, conversation_id: str) -> None:
        super().__init__(f"Run {session_id} ended ({status}) before it could be stopped.")
        self.status = status
        self.session_id = session_id
        self.conversation_id = conversation_id


class ReplyReplaced(Conflict):
    """The reply a request waited for was replaced by a regenerate's run, `session_id`."""

    def __init__(self, *, session_id: str, replaced_session_id: str, conversation_id: str) -> None:
        super().__init__(
            f"Run {replaced_session_id} ended, then a regenerate replaced its reply. "
            "Resume the newer run, or load the conversation's messages."
        )
        self.session_id = session_id
        self.replaced_session_id = replaced_session_id
        self.conversation_id = conversation_id


class PathConflict(Conflict):
    """A file would stand where a folder is (or under a file): `a` and `a/b` cannot both be."""

    def __init__(self, path: str, other: str) -> None:
        super().__init__(
            f"{path!r} clashes with {other!r}: a path cannot be both a file and a folder."
        )
        self.path = path
        self.other = other


class ApprovalDecided(Conflict):
    """A decision that cannot be made: `approved` was decided before (None: the run ended)."""

    def __init__(self, *, approval_id: str, session_id: str, approved: bool | None) -> None:
        if approved is None:
            message = "The run no longer waits for this approval: it was stopped or ended."
        else:
            word = "approved" if approved else "denied"
            message = f"The call was {word} already (another tab, or another client)."
        super().__init__(message)
        self.approval_id = approval_id
        self.session_id = session_id
        self.approved = approved


class NothingToRegenerate(Conflict):
    """A regenerate of a conversation that has no user message to answer again."""

    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"Conversation {conversation_id} has no user message.")
        self.conversation_id = conversation_id


class NotANewMessage(Conflict):
    """An AI SDK request that brings no new user message, nor answers to approvals.

    Its newest message is not the user's, or its `messageId` asks to edit a sent
    message: the stored history, which is authoritative, cannot follow either.
    """

    def __init__(self, detail: str, *, conversation_id: str) -> None:
        super().__init__(detail)
        self.conversation_id = conversation_id


class CursorAhead(Conflict):
    """A cursor past the run's `newest` event: another run's id, or events lost in a failover."""

    def __init__(self, *, session_id: str, newest: str) -> None:
        super().__init__(
            f"The cursor is past this run's newest event ({newest}): this run did not send "
            "it, or Redis lost the events after that one (a failover). Rebuild the reply: "
            "resume from 0-0, or load the conversation's messages once the run has ended."
        )
        self.session_id = session_id
        self.newest = newest


class InvalidInput(Refused):
    """Input that cannot be used as it is; the message says what is wrong with it."""


class InvalidMessage(InvalidInput):
    """A new message that cannot be read or stored: empty, NUL, not text, bad envelope."""


class MessageTooLong(InvalidInput):
    """A new message of more than `max_chars` characters."""

    def __init__(self, max_chars: int) -> None:
        super().__init__(f"A message may have at most {max_chars} characters.")
        self.max_chars = max_chars


class InvalidCursor(InvalidInput):
    """A cursor that is not a stream entry id."""


class InvalidPath(InvalidInput):
    """A workspace path that breaks a rule of store/paths.py; never stored."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"Invalid path {path[:200]!r}: {why}.")
        self.path = path


class InvalidUpload(InvalidInput):
    """An upload that is not a multipart form of named `file` parts."""


class WorkspaceFull(Refused):
    """A write past a workspace limit: `limit` of what `setting` bounds; nothing was stored."""

    def __init__(self, what: str, *, limit: int, setting: str) -> None:
        super().__init__(f"{what} (at most {limit:,}, {setting}); nothing was stored.")
        self.limit = limit
        self.setting = setting


class RateLimited(Refused):
    """The user started `per_minute` runs in the last minute; the next may in `retry_after` s."""

    def __init__(self, *, retry_after: int, per_minute: int) -> None:
        super().__init__(f"At most {per_minute} runs a minute; retry in {retry_after} s.")
        self.retry_after = retry_after
        self.per_minute = per_minute


class ActiveRunLimit(Refused):
    """The user already has `limit` runs queued or running."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"At most {limit} runs at once; stop one or wait for it to end.")
        self.limit = limit


# --- unavailability ---------------------------------------------------------------------


class Unavailable(TurnstreamError):
    """A service turnstream needs cannot be reached or used now; the cause is chained."""


class RedisUnavailable(Unavailable):
    def __init__(self) -> None:
        super().__init__(
            "Redis unavailable. Check that Redis is running and reachable. Retry shortly."
        )


class DatabaseUnavailable(Unavailable):
    def __init__(self) -> None:
        super().__init__(
            "Database unavailable. Check that the database is reachable. Retry shortly."
        )


class IdentityProviderUnavailable(Unavailable):
    """The identity provider's keys cannot be fetched, and the token needs one not at hand."""

    def __init__(self) -> None:
        super().__init__(
            "The identity provider's signing keys cannot be fetched, so this token cannot "
            "be checked. Retry shortly."
        )


# --- configuration ----------------------------------------------------------------------


class Misconfigured(TurnstreamError):
    """Settings that cannot work together (the operator's to fix, before anything runs)."""
