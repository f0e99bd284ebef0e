"""The user's cap on active runs, as a step of its own in the user's hash slot.

A run's keys carry its conversation's tag, the user's count carries the user's
(`chat:user-runs:{uid}`), so one script cannot check the cap and create the run on a
cluster. Starting a run is two steps, and their order is the compensation:

    reserve   (user's slot, admit.lua)    a place, stamped with Redis's clock
    create    (conversation's slot)       refused past RESERVE_WINDOW_MS after the stamp
    release   (user's slot)               when the create refused (409), and at the run's end

- No run without its count: a run is created only after its reservation, within the
  window, and a place is let go only when its run has ended, or when its run's
  status key is missing and the reservation is older than GRACE_MS (longer than the
  window: by then the create either happened, and the status key exists while the run
  lives, or can no longer happen).
- No reservation without a run for long: one left by a crash between the steps, or
  between a run's end and its release, is let go by the next reservation that finds
  the user at the cap: it reads the holders' status keys (one GET each, in their own
  slots) and asks again with the places it found free. Below the cap nobody needs
  the place, so nothing is read.

The two clocks are the two Redis servers' (TIME in the scripts), so a process that
stalls between the steps cannot stretch the window; the servers' clocks may differ by
up to GRACE_MS - RESERVE_WINDOW_MS.
"""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from turnstream import keys, lua
from turnstream.errors import ActiveRunLimit
from turnstream.keys import RunKeys
from turnstream.live.client import maybe_text
from turnstream.live.status import is_live

_ADMIT = lua.load("admit")

RESERVE_WINDOW_MS = 10_000  # a create must come this soon after its reservation
GRACE_MS = 60_000  # a reservation whose run's status is missing is let go only after this
PENDING_WAIT_SECONDS = 1.0  # at the cap, how long creates still on their way are waited for


class Admission:
    """Reserve and release places under the user's cap (`chat:user-runs:{uid}`)."""

    def __init__(self, redis: Redis, *, ttl_ms: int) -> None:
        self.redis = redis
        self.ttl_ms = ttl_ms
        self._admit = redis.register_script(_ADMIT)

    async def reserve(self, user_id: str, k: RunKeys, *, cap: int) -> int:
        """Take a place for run `k`; return its stamp (ms). Raises ActiveRunLimit at the cap.

        At the cap, places whose create is still on its way (no status key yet, reserved
        within the window) are waited for, up to PENDING_WAIT_SECONDS: the user's other
        requests of this moment, most of which give their place back at once (a refused
        create). Ten interrupts at once on one conversation are not "too many runs".
        """
        deadline = asyncio.get_running_loop().time() + PENDING_WAIT_SECONDS
        while True:
            reply = await self._ask(user_id, k, cap, [])
            if reply[0] == 1:
                return int(reply[1])
            now, holders = int(reply[1]), [str(m) for m in reply[2::2]]
            reserved_at = [int(float(score)) for score in reply[3::2]]
            async with self.redis.pipeline(transaction=False) as pipe:
                for member in holders:
                    pipe.get(member)
                statuses = [maybe_text(status) for status in await pipe.execute()]
            free = [
                (member, "missing" if status is None else "ended")
                for member, status in zip(holders, statuses, strict=True)
                if not is_live(status)
            ]
            if free:
                reply = await self._ask(user_id, k, cap, free)
                if reply[0] == 1:
                    return int(reply[1])
            pending = any(
                status is None and now - at < RESERVE_WINDOW_MS
                for status, at in zip(statuses, reserved_at, strict=True)
            )
            if not pending or asyncio.get_running_loop().time() > deadline:
                raise ActiveRunLimit(cap)
            await asyncio.sleep(0.05)

    async def release(self, user_id: str, k: RunKeys) -> None:
        """Give the run's place back: its create refused, or it has ended."""
        await self.redis.zrem(keys.user_runs(user_id), k.status)

    async def _ask(
        self, user_id: str, k: RunKeys, cap: int, free: list[tuple[str, str]]
    ) -> list[int | str]:
        args: list[int | str] = [k.status, cap, self.ttl_ms, GRACE_MS]
        for member, why in free:
            args += [member, why]
        reply: list[int | str] = await self._admit(keys=[keys.user_runs(user_id)], args=args)
        return reply
