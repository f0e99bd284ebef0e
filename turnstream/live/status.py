"""A run's lifecycle: `queued -> running -> completed | error | cancelled` (SPEC §4).

A running run may wait for approvals (`waiting`) and then be `queued` again.

And what a queued run that no worker claimed in time needs next (`Requeue`).
"""

from __future__ import annotations

import enum


class RunStatus(enum.StrEnum):
    """The value of `task:status:{cid}:{sid}` and of the run hash's `status`."""

    QUEUED = "queued"  # accepted, waiting for a worker (or for the run before it: enqueue)
    RUNNING = "running"  # a worker holds its lease and streams events
    # The run hash only (task:status stays `running`): no worker; tool calls wait for the
    # user's approval (live/approvals.py)
    WAITING = "waiting"
    COMPLETED = "completed"  # the agent finished; the reply is stored
    ERROR = "error"  # the agent failed or its worker died; the partial reply is stored
    CANCELLED = "cancelled"  # stopped; the partial reply is stored

    @property
    def active(self) -> bool:
        """Queued, running or waiting: not ended yet."""
        return self in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING)


def is_live(status: str | None) -> bool:
    """Whether a `task:status` value means the run is still going (a missing key: no)."""
    return status is not None and RunStatus(status).active


class Requeue(enum.IntEnum):
    """What the requeue script found a due queued run to need (see requeue.lua)."""

    NOTHING = 0  # no longer queued (dropped from the index), or another reaper acted first
    WAITING = 1  # it waits for a live run: its deadline moved on
    GIVE_UP = 2  # unclaimed past the give-up line: end it
    KICK = 3  # hand it to a worker again
    LEAVE = 4  # for a process that can run it
