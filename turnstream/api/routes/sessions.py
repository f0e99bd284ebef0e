"""The two questions a frontend asks after a reload (SPEC §7), each answered in O(1).

Both start from `chat:active:{cid}` and read only the newest run's own keys:
no KEYS, no SCAN, whatever else Redis holds. Once those have expired, the
newest run in SQL answers if it is archived within the retention
(runs/archiver.py: by the `(conversation_id, created_at)` index).
"""

from __future__ import annotations

import statistics
from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel

from turnstream import keys
from turnstream.api.deps import NewestRunDep, RuntimeDep
from turnstream.api.errors import documented
from turnstream.api.schemas import ActiveSession, TaskStatus
from turnstream.clock import now_ms
from turnstream.errors import AccessDenied, NoActiveSession, NoBackgroundTask
from turnstream.live.record import RunRecord
from turnstream.live.status import RunStatus
from turnstream.runs import archiver
from turnstream.runtime import Runtime

router = APIRouter(
    prefix="/conversations/{cid}", tags=["sessions"], responses=documented(AccessDenied)
)

_SESSION_STATUS: dict[RunStatus, Literal["active", "completed", "idle"]] = {
    RunStatus.QUEUED: "active",
    RunStatus.RUNNING: "active",
    RunStatus.WAITING: "active",  # waiting for approvals: still the live run
    RunStatus.COMPLETED: "completed",
    RunStatus.ERROR: "idle",
    RunStatus.CANCELLED: "idle",
}


@router.get(
    "/active-session",
    response_model=ActiveSession,
    responses=documented(NoActiveSession),
)
async def active_session(rt: RuntimeDep, newest: NewestRunDep) -> Response:
    return _json(await session_body(rt, newest.cid, newest.record))


async def session_body(rt: Runtime, cid: str, record: RunRecord | None) -> ActiveSession:
    """`active-session`'s body: the conversation's newest run (`record`, kept in Redis, or
    else the archive's); NoActiveSession if it keeps none."""
    record = record or await archiver.newest(rt, cid)
    if record is None:
        raise NoActiveSession(cid)
    return ActiveSession(
        sessionId=record.session_id,
        status=_SESSION_STATUS[record.status],
        cursor=record.last_id,
        conversationId=cid,
        startedAt=record.created_at,
        lastActivity=record.last_activity or record.created_at,
    )


@router.get(
    "/task-status",
    response_model=TaskStatus,
    responses=documented(NoBackgroundTask),
)
async def task_status(rt: RuntimeDep, newest: NewestRunDep) -> Response:
    record = newest.record or await archiver.newest(rt, newest.cid)
    if record is None:
        raise NoBackgroundTask(newest.cid)
    if record.status.active:
        expected = await _typical_duration_ms(rt, newest.cid)
        estimate = max((record.started_at or record.created_at) + expected, now_ms())
    else:
        estimate = record.ended_at or record.last_activity or record.created_at
    body = TaskStatus(
        isActive=record.status.active,
        sessionId=record.session_id,
        estimatedCompletion=estimate,
        conversationId=newest.cid,
    )
    return _json(body)


def _json(body: BaseModel) -> Response:
    """The body as the response, serialised once: FastAPI would validate the model again
    against `response_model` (kept for the OpenAPI document) before writing it."""
    return Response(body.model_dump_json(), media_type="application/json")


async def _typical_duration_ms(rt: Runtime, cid: str) -> int:
    """The median duration of recently completed runs, or the configured default.

    The runs of the conversation's index shard: one key, in O(1), and as good a sample
    of recent runs as all of them (a conversation's shard is a hash of its id).
    """
    durations = keys.durations(keys.shard_of(cid))
    recent = await rt.redis.lrange(durations, 0, keys.DURATIONS_KEPT - 1)
    if not recent:
        return int(rt.settings.default_run_seconds * 1000)
    return int(statistics.median(int(d) for d in recent))
