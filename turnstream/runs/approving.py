"""Deciding the tool calls a run waits on: the user's answers, and the reapers' expiry.

A decision is one script (live/approvals.py): two tabs, two API processes or a
retry deciding at once get one outcome. The last decision of a step queues the
run, and whoever made it hands it to a worker; if that hand-out is lost, the
queued-run index hands it out again (runs/requeue.py), so the run goes on
whichever process took the decision.
"""

from __future__ import annotations

import logging

from taskiq import AsyncBroker

from turnstream import metrics
from turnstream.errors import ApprovalDecided, ApprovalNotFound
from turnstream.live.approvals import Decided
from turnstream.runs.broker import Kick, kick
from turnstream.runtime import Runtime

logger = logging.getLogger("turnstream.approvals")

NO_ANSWER = "no answer in time"  # the reason an expired approval is denied with


async def decide(
    rt: Runtime, broker: AsyncBroker, *, cid: str, approval_id: str, approved: bool, reason: str
) -> tuple[str, bool]:
    """Decide approval `approval_id` of conversation `cid`: the run's session id, and the
    decision that stands. The same decision twice is fine; another raises ApprovalDecided."""
    k = await rt.approvals.run_of(cid, approval_id)
    if k is None:
        raise ApprovalNotFound(approval_id=approval_id, conversation_id=cid)
    found, standing = await rt.approvals.decide(k, approval_id, approved=approved, reason=reason)
    if found in (Decided.UNKNOWN, Decided.EXPIRED):
        raise ApprovalNotFound(approval_id=approval_id, conversation_id=cid)
    if found is Decided.OTHER:
        raise ApprovalDecided(approval_id=approval_id, session_id=k.sid, approved=standing)
    if found is Decided.ENDED:
        raise ApprovalDecided(approval_id=approval_id, session_id=k.sid, approved=None)
    if found is Decided.READY:
        await kick(broker, k.cid, k.sid)
    return k.sid, standing


async def expire_once(rt: Runtime, kick_run: Kick | None) -> int:
    """Deny every approval past its expiry; return how many runs go on because of it.

    A process that cannot run runs (`kick_run` None) leaves the hand-out to the
    queued-run index, which a worker looks at.
    """
    gone_on = 0
    for k in await rt.approvals.expired():
        found, _ = await rt.approvals.decide(k, None, approved=False, reason=NO_ANSWER)
        if found is Decided.READY:
            logger.info("run %s: its approvals expired; it goes on with them denied", k.sid)
            metrics.reaper_action("approval_expired")
            gone_on += 1
            if kick_run is not None:
                await kick_run(k)
    return gone_on
