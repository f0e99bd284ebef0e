"""Runs that wait for the user's approval of tool calls, in Redis (docs/approvals.md).

    running --wait--> waiting --decide (each call)--> queued --claim--> running
                         |  \\--expiry (a reaper: every undecided call denied)--^
                         \\--stop: cancelled (runs/service.py)

A waiting run holds no worker, no lease and no connection: its state is its run
hash (`waiting`, the approvals) and its stream, kept past the approvals' expiry.
Its task:status stays `running`, so the session endpoints and the multitask
rules treat it as the conversation's live run. The two scripts, `wait.lua` and
`decide.lua`, run after `_prelude.lua` like the other run scripts
(live/state.py); the reapers' index of waiting runs (`chat:waiting:{shard-N}`,
by expiry) is kept around them as live/indexes.py says.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass

from turnstream import keys
from turnstream.clock import now_ms
from turnstream.events import Event
from turnstream.keys import RunField, RunKeys
from turnstream.live.client import maybe_text
from turnstream.live.state import RunState, run_script
from turnstream.live.status import RunStatus

_WAIT = run_script("wait")
_DECIDE = run_script("decide")


class Decided(enum.IntEnum):
    """What a decision found (decide.lua's first reply)."""

    UNKNOWN = 0  # no such approval on that run
    WAITING = 1  # decided; other calls of the step are still undecided
    READY = 2  # decided, the last one: the run is queued to go on; hand it to a worker
    SAME = 3  # the same decision was made before (a second tab, a retry)
    OTHER = 4  # the other decision was made before
    EXPIRED = 5  # past its expiry: the reapers deny it
    ENDED = 6  # the run no longer waits (stopped, or ended otherwise)


@dataclass(frozen=True)
class Decision:
    """A call the run waited on, with the user's answer: what the worker that goes on runs."""

    approval_id: str
    call_id: str
    name: str
    arguments: str  # JSON text, as the model wrote it
    approved: bool
    reason: str


class Approvals:
    """The wait and decide scripts and the reads around them, over a run state's Redis."""

    def __init__(self, runs: RunState, *, ttl_seconds: int) -> None:
        self.runs = runs
        self.redis = runs.redis
        self.ttl_ms = ttl_seconds * 1000
        self._wait = self.redis.register_script(_WAIT)
        self._decide = self.redis.register_script(_DECIDE)

    async def wait(self, k: RunKeys, *, worker: str, requests: Sequence[Event]) -> bool:
        """Let the run wait for decisions on `requests` (its `approval_request` events).

        The events are written by the script itself, with the approvals: whoever sees
        one can decide it. False if the run is no longer `worker`'s or a stop was asked.
        """
        approvals = [event.data for event in requests]
        expires = max(int(a["expiresAt"]) for a in approvals)
        # How long the run's keys live from now: past the expiry by their usual lifetime.
        keep_ms = expires - now_ms() + self.runs.ttl_ms
        async with self.redis.pipeline(transaction=False) as pipe:
            for a in approvals:
                pipe.set(keys.approval(k.cid, a["approvalId"]), k.sid, px=keep_ms)
            await pipe.execute()
        await self.runs.indexes.add(keys.waiting, k, expires)  # listed before it waits
        args = self.runs.script_args(
            k, worker, expires, keep_ms, json.dumps(approvals), events=requests
        )
        waits = await self._wait(keys=self.runs.script_keys(k), args=args)
        if not waits[0]:
            await self.runs.indexes.drop_if(keys.waiting, k, expires)
            return False
        if lease_until := maybe_text(waits[1]):  # no lease while it waits
            await self.runs.indexes.drop_if(keys.leases, k, int(lease_until))
        return True

    async def run_of(self, cid: str, approval_id: str) -> RunKeys | None:
        """The run that asked approval `approval_id` in conversation `cid`, while it is kept."""
        sid = maybe_text(await self.redis.get(keys.approval(cid, approval_id)))
        return RunKeys(cid, sid) if sid else None

    async def waits_on(self, k: RunKeys) -> set[str]:
        """The approval ids the run waits on now (decided ones included); empty if it does not."""
        status, asked = await self.redis.hmget(k.run, [RunField.STATUS, RunField.ASKED])
        if maybe_text(status) != RunStatus.WAITING or not asked:
            return set()
        return set(json.loads(maybe_text(asked) or "[]"))

    async def decide(
        self, k: RunKeys, approval_id: str | None, *, approved: bool, reason: str
    ) -> tuple[Decided, bool]:
        """Decide one approval (None: every undecided one, as the expiry does).

        Returns what the script found and the decision that stands (for SAME and OTHER,
        the earlier one).
        """
        claim_by = now_ms() + self.runs.claim_ms
        # Listed as queued before it may go on: if this decision is the last, a worker
        # must claim it by then (a later entry than any before, see live/indexes.py).
        await self.runs.indexes.add(keys.queued, k, claim_by)
        args = self.runs.script_args(
            k, approval_id or "", "1" if approved else "0", reason, claim_by
        )
        found, word, *rest = await self._decide(keys=self.runs.script_keys(k), args=args)
        if found == Decided.READY and rest and (wait_until := maybe_text(rest[0])):
            await self.runs.indexes.drop_if(keys.waiting, k, int(wait_until))
        return Decided(int(found)), maybe_text(word) == "approved"

    async def decisions(self, k: RunKeys) -> list[Decision]:
        """The calls the run last waited on, in call order, with their decisions.

        Empty for a run that never waited. Read by the worker that claims a run going on.
        """
        asked = maybe_text(await self.redis.hget(k.run, RunField.ASKED))
        ids: list[str] = json.loads(asked) if asked else []
        if not ids:
            return []
        raw = await self.redis.hmget(k.run, [RunField.APPROVAL + i for i in ids])
        out = []
        for text in raw:
            a = json.loads(maybe_text(text) or "{}")
            out.append(
                Decision(
                    approval_id=a["approvalId"],
                    call_id=a["toolCallId"],
                    name=a["name"],
                    arguments=a["arguments"],
                    approved=bool(a.get("approved")),
                    reason=str(a.get("reason") or ""),
                )
            )
        return out

    async def expired(self, *, limit: int = 100) -> list[RunKeys]:
        """Up to `limit` waiting runs whose approvals expired before now, oldest first."""
        return await self.runs.indexes.lapsed(keys.waiting, RunField.WAIT_UNTIL, limit=limit)
