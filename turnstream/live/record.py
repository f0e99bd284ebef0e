"""A run's record: the run hash typed, and the one mapping to its JSON in the API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from turnstream.events import StreamEntry
from turnstream.keys import RunField
from turnstream.live.status import RunStatus


@dataclass(frozen=True)
class RunRecord:
    """The `chat:run:{cid}:{sid}` hash, typed; times in ms since the epoch."""

    session_id: str
    conversation_id: str
    user_id: str
    message_id: str
    status: RunStatus
    created_at: int
    started_at: int | None
    ended_at: int | None
    last_activity: int | None  # the `ts` of the stream's newest entry
    last_id: str  # the stream's newest entry id: the cursor ("0-0" for none)
    worker: str | None
    error: str | None
    user_message_id: str | None
    multitask_after: str | None  # the run this one waits for (multitask=enqueue)
    waited: bool = False  # it waited for approvals before: its decisions are read when it goes on

    @classmethod
    def from_hash(cls, h: dict[str, str], newest: StreamEntry | None) -> RunRecord:
        """The record from its hash and its stream's newest entry (the cursor and last activity)."""

        def ms(name: str) -> int | None:
            return int(h[name]) if h.get(name) else None

        return cls(
            session_id=h[RunField.SESSION_ID],
            conversation_id=h[RunField.CONVERSATION_ID],
            user_id=h[RunField.USER_ID],
            message_id=h[RunField.MESSAGE_ID],
            status=RunStatus(h[RunField.STATUS]),
            created_at=int(h[RunField.CREATED_AT]),
            started_at=ms(RunField.STARTED_AT),
            ended_at=ms(RunField.ENDED_AT),
            last_activity=newest.ts if newest else None,
            last_id=newest.id if newest else "0-0",
            worker=h.get(RunField.WORKER) or None,
            error=h.get(RunField.ERROR) or None,
            user_message_id=h.get(RunField.USER_MESSAGE_ID) or None,
            multitask_after=h.get(RunField.AFTER) or None,
            waited=bool(h.get(RunField.ASKED)),
        )

    @classmethod
    def from_log(
        cls,
        *,
        session_id: str,
        conversation_id: str,
        user_id: str,
        message_id: str,
        status: str,
        created_at: int,
        ended_at: int | None,
        error: str | None,
    ) -> RunRecord:
        """A run whose Redis keys have expired, from what the SQL run log keeps of it.

        The log keeps no start time, activity, cursor or worker: those are empty.
        """
        return cls(
            session_id=session_id,
            conversation_id=conversation_id,
            user_id=user_id,
            message_id=message_id,
            status=RunStatus(status),
            created_at=created_at,
            started_at=None,
            ended_at=ended_at,
            last_activity=None,
            last_id="0-0",
            worker=None,
            error=error,
            user_message_id=None,
            multitask_after=None,
        )

    def api_body(self, *, prompt_tokens: int = 0, completion_tokens: int = 0) -> dict[str, Any]:
        """The run as `GET …/runs/{session_id}` answers it (camelCase, SPEC §6).

        The token counts are the run's usage, which only SQL keeps.
        """
        return {
            "sessionId": self.session_id,
            "conversationId": self.conversation_id,
            "userId": self.user_id,
            "messageId": self.message_id,
            "status": self.status.value,
            "createdAt": self.created_at,
            "startedAt": self.started_at,
            "endedAt": self.ended_at,
            "lastActivity": self.last_activity,
            "cursor": self.last_id,
            "worker": self.worker,
            "error": self.error,
            "promptTokens": prompt_tokens,
            "completionTokens": completion_tokens,
        }
