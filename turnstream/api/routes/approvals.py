"""The user's decisions on tool calls a run waits for (docs/approvals.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from turnstream.api.deps import BrokerDep, ConversationDep, CurrentUser, RuntimeDep
from turnstream.api.errors import documented
from turnstream.api.schemas import ApprovalDecision, ApprovalView
from turnstream.errors import AccessDenied, ApprovalDecided, ApprovalNotFound
from turnstream.runs import approving

router = APIRouter(prefix="/conversations/{cid}", tags=["runs"], responses=documented(AccessDenied))


@router.post(
    "/approvals/{approval_id}",
    response_model=ApprovalView,
    responses=documented(ApprovalNotFound, ApprovalDecided),
)
async def decide_approval(
    rt: RuntimeDep,
    broker: BrokerDep,
    user: CurrentUser,
    conversation: ConversationDep,
    approval_id: Annotated[str, Path(max_length=64)],
    decision: ApprovalDecision,
) -> ApprovalView:
    """Approve or deny a call an `approval_request` named; the run goes on once its step's
    calls are all decided, in the same session and stream.

    The same decision again answers 200 (a retry, a second tab); the other one 409
    (ApprovalDecided), as does a decision on a run that was stopped meanwhile.
    """
    sid, approved = await approving.decide(
        rt,
        broker,
        cid=conversation.id,
        approval_id=approval_id,
        approved=decision.approved,
        reason=decision.reason,
    )
    return ApprovalView(approvalId=approval_id, approved=approved, sessionId=sid)
