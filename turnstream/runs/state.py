"""A run's live state in Redis, changed only by atomic Lua scripts.

Every transition is one script, so that two actors can never both win:

    create     -> queued      the API; writes the `queued` event
    claim      queued -> running   a worker; compare-and-set, so a redelivered
                                   task message never runs a run twice
    append     events while running; returns whether a stop was asked
    heartbeat  renews the worker's lease; fails once the run is no longer its own
    finish     -> completed | error | cancelled; writes `error`/`end` exactly once

Every event gets the next `seq` from the run hash inside the script that
writes it, so the API, the worker and the reaper can all write to one stream.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from turnstream import keys
from turnstream.events import Event, EventType, StreamEntry, dumps
from turnstream.keys import RunKeys


class ActiveRunLimit(Exception):
    """The user already has as many active runs as allowed."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class RunStatus(enum.StrEnum):
    QUEUED = "queued"  # accepted, waiting for a worker
    RUNNING = "running"  # a worker holds its lease and streams events
    COMPLETED = "completed"  # the agent finished; the reply is stored
    ERROR = "error"  # the agent failed or its worker died; the partial reply is stored
    CANCELLED = "cancelled"  # stopped; the partial reply is stored

    @property
    def active(self) -> bool:
        return self in (RunStatus.QUEUED, RunStatus.RUNNING)


def is_live(status: str | None) -> bool:
    """Whether a `task:status` value means the run is still going (a missing key: no)."""
    return status is not None and RunStatus(status).active


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# KEYS: stream, run hash, status, cancel, active, leases, durations.
# ARGV[1..4]: now (ms), maxlen, ttl (ms), the run's channel; each script's own
# arguments follow, then the events as (type, data) pairs.
_PRELUDE = """
local stream, run, status, cancel, active, leases, durations =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local now, maxlen, ttl, channel = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local slack = math.max(1, math.floor(maxlen / 10))
local last_id = false
-- Trim by hand, in steps of `slack`, to record the newest id trimmed away:
-- that is how a resume knows its cursor fell into the gap (409, not a silent hole).
local function trim(seq)
  if seq <= maxlen + slack or seq % slack ~= 0 then return end
  local len = redis.call('XLEN', stream)
  if len <= maxlen + slack then return end
  local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', len - maxlen + 1)
  redis.call('XTRIM', stream, 'MINID', head[#head][1])
  redis.call('HSET', run, 'trimmed_through', head[#head - 1][1])
end
local function add(etype, data)
  local seq = redis.call('HINCRBY', run, 'seq', 1)
  last_id = redis.call('XADD', stream, '*', 'type', etype, 'seq', seq, 'ts', now, 'data', data)
  -- Followers get the entry pushed at once (StreamEntry.from_notice reads it back).
  redis.call('PUBLISH', channel,
    last_id .. '\\n' .. etype .. '\\n' .. seq .. '\\n' .. now .. '\\n' .. data)
  trim(seq)
end
local function add_from(first)
  for i = first, #ARGV, 2 do add(ARGV[i], ARGV[i + 1]) end
end
local function keep(ms)
  redis.call('PEXPIRE', stream, ms)
  redis.call('PEXPIRE', run, ms)
  redis.call('PEXPIRE', status, ms)
  if redis.call('GET', active) == run_sid then redis.call('PEXPIRE', active, ms) end
end
local function is_terminal(s)
  return s == 'completed' or s == 'error' or s == 'cancelled'
end
"""

# ARGV[5]: session id, ARGV[6]: the run's fields as JSON, ARGV[7]: `reject` or
# `enqueue` (what to do if another run of the conversation is active), ARGV[8]:
# the status key prefix of the conversation's runs, ARGV[9]: the user's set of
# active runs, ARGV[10]: its cap; then events. Returns {1, session id it waits
# for or ''}, {0, the active session id}, or {-1, ''} when the user is at the cap.
_CREATE = (
    "local run_sid = ARGV[5]\n"
    + _PRELUDE
    + """
local after = ''
local current = redis.call('GET', active)
if current then
  local current_status = redis.call('GET', ARGV[8] .. current)
  if current_status == 'queued' or current_status == 'running' then
    if ARGV[7] == 'reject' then return {0, current} end
    after = current
  end
end
-- The user's cap on active runs: the set holds their runs' status keys; ended or
-- expired ones leave it here, so it never needs a sweep elsewhere.
local mine = ARGV[9]
for _, member in ipairs(redis.call('ZRANGE', mine, 0, -1)) do
  local s = redis.call('GET', member)
  if not s or is_terminal(s) then redis.call('ZREM', mine, member) end
end
if redis.call('ZCARD', mine) >= tonumber(ARGV[10]) then return {-1, ''} end
redis.call('ZADD', mine, now, status)
redis.call('PEXPIRE', mine, ttl)
if after ~= '' then redis.call('HSET', run, 'after', after, 'enqueued', '1') end
for field, value in pairs(cjson.decode(ARGV[6])) do redis.call('HSET', run, field, value) end
redis.call('HSET', run, 'status', 'queued', 'created_at', now, 'seq', 0)
redis.call('SET', status, 'queued')
redis.call('SET', active, run_sid)
add_from(11)
keep(ttl)
return {1, after}
"""
)

# ARGV[5]: session id, ARGV[6]: worker name, ARGV[7]: lease expiry (ms),
# ARGV[8]: lease member; then events.
_CLAIM = (
    "local run_sid = ARGV[5]\n"
    + _PRELUDE
    + """
if redis.call('HGET', run, 'status') ~= 'queued' then return 0 end
redis.call('HSET', run, 'status', 'running', 'started_at', now, 'worker', ARGV[6],
  'lease_until', ARGV[7])
redis.call('SET', status, 'running')
redis.call('ZADD', leases, ARGV[7], ARGV[8])
add_from(9)
keep(ttl)
return 1
"""
)

# ARGV[5]: session id, ARGV[6]: the batch's number ('' for none); then events.
# Returns {last id, stop asked (0/1)}. A batch sent again after a lost reply
# (a dropped connection, a client retry) is written once: its number is kept.
# The hot path: no TTL refresh here, the worker's heartbeat does that.
_APPEND = (
    "local run_sid = ARGV[5]\n"
    + _PRELUDE
    + """
if redis.call('HGET', run, 'status') ~= 'running' then return {'', 1} end
if ARGV[6] ~= '' then
  if redis.call('HGET', run, 'batch') == ARGV[6] then
    return {'', redis.call('EXISTS', cancel)}
  end
  redis.call('HSET', run, 'batch', ARGV[6])
end
add_from(7)
return {last_id, redis.call('EXISTS', cancel)}
"""
)

# ARGV[5]: session id, ARGV[6]: worker, ARGV[7]: lease expiry, ARGV[8]: member.
# Returns -1 if the run is no longer this worker's, else whether a stop was asked.
_HEARTBEAT = (
    "local run_sid = ARGV[5]\n"
    + _PRELUDE
    + """
if redis.call('HGET', run, 'status') ~= 'running' or redis.call('HGET', run, 'worker') ~= ARGV[6]
then return -1 end
redis.call('HSET', run, 'lease_until', ARGV[7])
redis.call('ZADD', leases, 'XX', ARGV[7], ARGV[8])
keep(ttl)
return redis.call('EXISTS', cancel)
"""
)

# ARGV[5]: session id, ARGV[6]: final status, ARGV[7]: error text ('' for none),
# ARGV[8]: required current status ('' for any live one), ARGV[9]: only if the
# lease lapsed before this time ('0' for always), ARGV[10]: lease member,
# ARGV[11]: durations kept; then events. Returns 1 if this call ended the run.
_FINISH = (
    "local run_sid = ARGV[5]\n"
    + _PRELUDE
    + """
local current = redis.call('HGET', run, 'status')
if not current or is_terminal(current) then return 0 end
if ARGV[8] ~= '' and current ~= ARGV[8] then return 0 end
if ARGV[9] ~= '0' then
  local lease = tonumber(redis.call('HGET', run, 'lease_until') or '0')
  if lease >= tonumber(ARGV[9]) then return 0 end
end
redis.call('HSET', run, 'status', ARGV[6], 'ended_at', now)
if ARGV[7] ~= '' then redis.call('HSET', run, 'error', ARGV[7]) end
redis.call('SET', status, ARGV[6])
redis.call('ZREM', leases, ARGV[10])
add_from(12)
local started = redis.call('HGET', run, 'started_at')
if ARGV[6] == 'completed' and started then
  redis.call('LPUSH', durations, tonumber(now) - tonumber(started))
  redis.call('LTRIM', durations, 0, tonumber(ARGV[11]) - 1)
end
keep(ttl)
return 1
"""
)


# The newest run of a conversation in one round trip (the session endpoints' hot path).
# KEYS[1]: chat:active:{cid}; ARGV: the run hash and stream key prefixes.
_NEWEST = """
local sid = redis.call('GET', KEYS[1])
if not sid then return false end
local run = redis.call('HGETALL', ARGV[1] .. sid)
local newest = redis.call('XREVRANGE', ARGV[2] .. sid, '+', '-', 'COUNT', 1)
return {run, newest}
"""


# A sliding one-minute window of the runs a user started (no burst at a minute's edge).
# KEYS[1]: chat:rate:{uid}; ARGV: now (ms), window (ms), limit, the new run's session id.
# Returns 0 if the run may start (and counts it), else ms until the oldest start leaves.
_COUNT_START = """
local since = tonumber(ARGV[1]) - tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', since)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return tonumber(oldest[2]) - since
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
"""


@dataclass(frozen=True)
class RunRecord:
    """The `chat:run:*` hash, typed."""

    session_id: str
    conversation_id: str
    user_id: str
    message_id: str
    status: RunStatus
    created_at: int
    started_at: int | None
    ended_at: int | None
    last_activity: int | None
    last_id: str
    worker: str | None
    error: str | None
    user_message_id: str | None
    multitask_after: str | None

    @classmethod
    def from_hash(cls, h: dict[str, str], newest: StreamEntry | None) -> RunRecord:
        """The record from its hash and its stream's newest entry (the cursor and last activity)."""

        def ms(name: str) -> int | None:
            return int(h[name]) if h.get(name) else None

        return cls(
            session_id=h["session_id"],
            conversation_id=h["conversation_id"],
            user_id=h["user_id"],
            message_id=h["message_id"],
            status=RunStatus(h["status"]),
            created_at=int(h["created_at"]),
            started_at=ms("started_at"),
            ended_at=ms("ended_at"),
            last_activity=newest.ts if newest else None,
            last_id=newest.id if newest else "0-0",
            worker=h.get("worker") or None,
            error=h.get("error") or None,
            user_message_id=h.get("user_message_id") or None,
            multitask_after=h.get("after") or None,
        )

    def as_json(self) -> dict[str, Any]:
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
        }


class RunState:
    """The scripts above, bound to one Redis client and the retention settings."""

    def __init__(self, redis: Redis, *, maxlen: int, ttl_seconds: int) -> None:
        self.redis = redis
        self.maxlen = maxlen
        self.ttl_ms = ttl_seconds * 1000
        self._create = redis.register_script(_CREATE)
        self._claim = redis.register_script(_CLAIM)
        self._append = redis.register_script(_APPEND)
        self._heartbeat = redis.register_script(_HEARTBEAT)
        self._finish = redis.register_script(_FINISH)
        self._newest = redis.register_script(_NEWEST)
        self._count_start = redis.register_script(_COUNT_START)

    def _keys(self, k: RunKeys) -> list[str]:
        return [k.stream, k.run, k.status, k.cancel, k.active, keys.LEASES, keys.DURATIONS]

    def _args(self, k: RunKeys, *extra: Any, events: list[Event] = ()) -> list[Any]:  # type: ignore[assignment]
        flat: list[Any] = [now_ms(), self.maxlen, self.ttl_ms, k.channel, k.sid, *extra]
        for event in events:
            flat += [event.type.value, dumps(event.data)]
        return flat

    async def create(
        self, k: RunKeys, fields: dict[str, str], *, enqueue: bool, max_active: int
    ) -> tuple[bool, str | None]:
        """Record a new queued run, point `chat:active` at it, write `queued`.

        If another run of the conversation is active: with `enqueue`, the new
        run waits for it and (True, its id) is returned; else nothing is
        created and (False, its id) is returned. Raises ActiveRunLimit when the
        user already has `max_active` active runs.
        """
        queued = Event(EventType.QUEUED, {"sessionId": k.sid})
        mode = "enqueue" if enqueue else "reject"
        args = self._args(
            k,
            json.dumps(fields),
            mode,
            keys.status_prefix(k.cid),
            keys.user_runs(fields["user_id"]),
            max_active,
            events=[queued],
        )
        created, other = await self._create(keys=self._keys(k), args=args)
        if created == -1:
            raise ActiveRunLimit(max_active)
        return bool(created), other or None

    async def claim(self, k: RunKeys, *, worker: str, lease_seconds: float) -> bool:
        start = Event(EventType.START, {"worker": worker})
        args = self._args(k, worker, _lease_until(lease_seconds), k.lease_member, events=[start])
        return bool(await self._claim(keys=self._keys(k), args=args))

    async def append(self, k: RunKeys, events: list[Event], *, batch: int | None = None) -> bool:
        """Write events; True when a stop was asked (or the run ended under us).

        With `batch` (numbered 1, 2, … by the one writer), sending a batch again is harmless.
        """
        number = "" if batch is None else batch
        args = self._args(k, number, events=events)
        _last_id, stop = await self._append(keys=self._keys(k), args=args)
        return bool(stop)

    async def heartbeat(self, k: RunKeys, *, worker: str, lease_seconds: float) -> int:
        args = self._args(k, worker, _lease_until(lease_seconds), k.lease_member)
        return int(await self._heartbeat(keys=self._keys(k), args=args))

    async def finish(
        self,
        k: RunKeys,
        *,
        status: RunStatus,
        message_id: str,
        error: tuple[str, str] | None = None,
        require: RunStatus | None = None,
        lapsed_before: int = 0,
    ) -> int | None:
        """End the run with its `error` (if any) and `end` events, unless it already ended.

        Returns the end time (ms) the script recorded, or None if the run had ended.
        """
        events = []
        if error is not None:
            message, code = error
            events.append(Event(EventType.ERROR, {"message": message, "code": code}))
        events.append(Event(EventType.END, {"status": status.value, "messageId": message_id}))
        args = self._args(
            k,
            status.value,
            error[0] if error else "",
            require.value if require else "",
            lapsed_before,
            k.lease_member,
            keys.DURATIONS_KEPT,
            events=events,
        )
        ended = await self._finish(keys=self._keys(k), args=args)
        return int(args[0]) if ended else None  # args[0]: the `now` the script wrote

    async def count_start(self, user_id: str, sid: str, *, per_minute: int) -> int:
        """Count a run the user starts now; 0, or the ms to wait if the minute's quota is used."""
        return int(
            await self._count_start(
                keys=[keys.rate(user_id)], args=[now_ms(), 60_000, per_minute, sid]
            )
        )

    async def get(self, k: RunKeys) -> RunRecord | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(k.run)
            pipe.xrevrange(k.stream, count=1)
            h, newest = await pipe.execute()
        if not h:
            return None
        return RunRecord.from_hash(h, StreamEntry.from_redis(*newest[0]) if newest else None)

    async def newest(self, cid: str) -> RunRecord | None:
        """The conversation's newest run (via `chat:active:{cid}`), or None if none is kept."""
        reply = await self._newest(
            keys=[keys.active(cid)], args=[keys.run_prefix(cid), keys.stream_prefix(cid)]
        )
        if not reply or not reply[0]:
            return None
        flat_hash, newest = reply
        entry = None
        if newest:
            entry_id, flat_fields = newest[0]
            entry = StreamEntry.from_redis(entry_id, _pairs(flat_fields))
        return RunRecord.from_hash(_pairs(flat_hash), entry)

    async def wait_ended(self, k: RunKeys, *, poll_seconds: float = 0.05) -> None:
        """Return once the run has ended or its keys expired (callers bound the wait)."""
        while True:
            if not is_live(await self.redis.get(k.status)):
                return
            await asyncio.sleep(poll_seconds)

    async def ask_stop(self, k: RunKeys) -> None:
        await self.redis.set(k.cancel, "1", ex=keys.CANCEL_TTL_SECONDS)

    async def lapsed_leases(self, *, limit: int = 100) -> list[RunKeys]:
        members = await self.redis.zrangebyscore(keys.LEASES, "-inf", now_ms(), 0, limit)
        return [RunKeys.from_lease_member(m) for m in members]


def _pairs(flat: list[str]) -> dict[str, str]:
    """A script's flat [field, value, ...] reply as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _lease_until(lease_seconds: float) -> int:
    return now_ms() + int(lease_seconds * 1000)
