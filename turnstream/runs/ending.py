"""Ending a run, whoever ends it: the worker, a stop before any worker, the reaper.

The order is the protocol's promise (docs/protocol.md, "Runs"): the run's
messages, usage and events are stored in SQL before its status turns terminal,
so whoever sees `end` can load them. The messages and the events so far are one
transaction; `end` and the run's row, written after the finish script, another.
"""

from __future__ import annotations

from turnstream import metrics
from turnstream.keys import RunKeys
from turnstream.live.record import RunRecord
from turnstream.live.status import RunStatus
from turnstream.runs import archiver
from turnstream.runs.reply import Reply
from turnstream.runtime import Runtime
from turnstream.store.context import note_context
from turnstream.store.views import MessageView


async def end_run(
    rt: Runtime,
    k: RunKeys,
    record: RunRecord,
    status: RunStatus,
    reply: Reply,
    *,
    error: tuple[str, str] | None = None,
    require: RunStatus | None = None,
    lapsed_before: int = 0,
    replace: bool = False,
) -> bool:
    """Store the run's messages, usage and events, then end it: whoever sees `end` has them.

    Returns False when the run had ended already (another actor won). A
    conditional end (`require`: the reaper, or a stop before any worker) never
    replaces messages already stored: the worker that wrote them knew more. Nor
    does it store anything once the run has left the `require`d state: its `record`
    may be stale by then, and the run may have ended and its reply been replaced by
    a newer run's regenerate. That is checked while the conversation's row is held,
    which the regenerate's deletion takes too, so no stale reply lands after it.
    With `replace`, a conditional end does replace them: they are what a run that
    waited for approvals stored, and `reply` holds all of it (archiver.reply_so_far).
    """

    async def still_required() -> bool:
        current = await rt.runs.get(k)
        return current is not None and current.status is require

    events = await archiver.unarchived(rt, k)  # its events so far: stored with the reply
    stored = await rt.store.save_run(
        cid=k.cid,
        session_id=k.sid,
        messages=reply.messages(status, message_id=record.message_id, session_id=k.sid),
        keep_existing=require is not None and not replace,
        only_if=still_required if require is not None else None,
        also=events.write,
    )
    await events.mark(rt)
    if require is not None and status is RunStatus.ERROR and _whole(stored, record.message_id):
        # Its worker stored the whole reply and was lost before it could end the run: the
        # end says what the conversation holds, not an error the reply does not show.
        status, error = RunStatus.COMPLETED, None
    await _store_usage(rt, k, reply)
    ended_at = await rt.runs.finish(
        k,
        status=status,
        message_id=record.message_id,
        error=error,
        require=require,
        lapsed_before=lapsed_before,
    )
    if ended_at is None:
        return False
    metrics.run_ended(status.value, created_at_ms=record.created_at, ended_at_ms=ended_at)
    await archiver.save_end(rt, k, status, error, ended_at)  # `error`/`end`, and the run log
    return True


def _whole(stored: list[MessageView], message_id: str) -> bool:
    """Whether the run's reply is stored complete (by its worker: a reaper's would not be)."""
    return any(m.id == message_id and m.status == "complete" for m in stored)


async def _store_usage(rt: Runtime, k: RunKeys, reply: Reply) -> None:
    """The run's token usage; and the estimate of its history beside the model's count of
    it, which calibrates the next turns' estimate (context/budget.py)."""
    if reply.prompt_tokens or reply.completion_tokens:
        await rt.store.record_usage(
            cid=k.cid,
            session_id=k.sid,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
        )
    if reply.context_estimate and reply.first_prompt_tokens:
        await note_context(
            rt.sessions,
            session_id=k.sid,
            estimate=reply.context_estimate,
            tokens=reply.first_prompt_tokens,
        )
