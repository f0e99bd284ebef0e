-- requeue: a reaper's look at a queued run that is due in chat:queued (no worker claimed
-- it in time), so that no queued run is ever stranded.
--
-- Runs after _prelude.lua: KEYS[1..8] and ARGV[1..5] are the prelude's.
-- KEYS[9]  task:status:{cid}:{after}, the status of the run this one waits for
--          (multitask=enqueue; its `after` never changes), if it waits for one
-- ARGV[6]  the run's member in chat:queued ("{cid} {sid}")
-- ARGV[7]  the next claim deadline (ms): now + the claim window
-- ARGV[8]  the give-up line (ms): a run whose claim deadline is at or before it is given up
-- ARGV[9]  the caller: 'kick' (it can run the run), 'look' (it cannot; it only looks at
--          runs whose score is at or before the give-up line: no process that can run
--          them has looked at them since), or 'all' (a starting in-process serve: hand
--          out every queued run, due or not)
-- Returns 0: nothing to do (no longer queued: dropped from the index; or not due: another
-- reaper acted first), 1: it waits for a live run (its deadline moves on), 2: give it up
-- (the caller ends it, `not_started`), 3: hand it out (the caller kicks it; the index's
-- next look moves on, its deadline stays), 4: leave it to a process that can run it.

local before_status = KEYS[9]
local member, next_deadline, give_up_line, caller =
  ARGV[6], ARGV[7], tonumber(ARGV[8]), ARGV[9]

if redis.call('HGET', run, 'status') ~= 'queued' then
  redis.call('ZREM', queued, member)  -- claimed, ended or expired
  return 0
end

-- The next look at the run comes after one more claim window; with `deadline`, the
-- window starts now (the run could not start before). Its keys live on meanwhile.
local function move_on(deadline)
  if deadline then redis.call('HSET', run, 'claim_by', next_deadline) end
  redis.call('ZADD', queued, next_deadline, member)
  keep(ttl)
end

if caller == 'all' then
  move_on(true)
  return 3
end
local due = tonumber(redis.call('ZSCORE', queued, member))
local line = tonumber(now)
if caller == 'look' then line = give_up_line end
if not due or due > line then return 0 end

if before_status then
  local before = redis.call('GET', before_status)
  if before == 'queued' or before == 'running' then
    move_on(true)  -- it waits its turn: not late
    return 1
  end
end
if (tonumber(redis.call('HGET', run, 'claim_by')) or due) <= give_up_line then
  -- The caller ends it; meanwhile no other reaper takes it up again.
  redis.call('ZADD', queued, next_deadline, member)
  return 2
end
if caller == 'kick' then
  move_on(false)
  return 3
end
return 4
