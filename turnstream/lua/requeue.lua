-- requeue: a reaper's look at a queued run that is due in chat:queued:{shard-N} (no worker
-- claimed it in time), so that no queued run is ever stranded.
--
-- Runs after _prelude.lua: KEYS[1..5] and ARGV[1..6] are the prelude's.
-- KEYS[6]  task:status:{cid}:{after}, the status of the run this one waits for
--          (multitask=enqueue; its `after` never changes), if it waits for one
-- ARGV[7]  the next claim deadline (ms): now + the claim window
-- ARGV[8]  the give-up line (ms): a run whose claim deadline is at or before it is given up
-- ARGV[9]  the caller: 'kick' (it can run the run), 'look' (it cannot; it only looks at
--          runs whose next look is at or before the give-up line: no process that can run
--          them has looked at them since), or 'all' (a starting in-process serve: hand
--          out every queued run, due or not)
-- Returns {code, look_at}: the run's next look (ms; its score in the index, which the
-- caller moves there), or '' when it is no longer queued (the caller drops the entry).
-- code 0: nothing to do (no longer queued; or not due: another reaper acted first), 1: it
-- waits for a live run (its deadline moves on), 2: give it up (the caller ends it,
-- `not_started`), 3: hand it out (the caller kicks it; the next look moves on, its deadline
-- stays), 4: leave it to a process that can run it.
--
-- The run's hash is the truth (`look_at`), the index entry a hint (live/indexes.py), so
-- two reapers that both saw the entry due act once: the second finds `look_at` moved on.

local before_status = KEYS[6]
local next_deadline, give_up_line, caller = ARGV[7], tonumber(ARGV[8]), ARGV[9]

if redis.call('HGET', run, 'status') ~= 'queued' then return {0, ''} end  -- claimed, ended...

-- The next look at the run comes after one more claim window; with `deadline`, the
-- window starts now (the run could not start before). Its keys live on meanwhile.
local function move_on(deadline)
  if deadline then redis.call('HSET', run, 'claim_by', next_deadline) end
  redis.call('HSET', run, 'look_at', next_deadline)
  keep(ttl)
end

local claim_by = tonumber(redis.call('HGET', run, 'claim_by'))
local due = tonumber(redis.call('HGET', run, 'look_at')) or claim_by
if caller == 'all' then
  move_on(true)
  return {3, next_deadline}
end
local line = tonumber(now)
if caller == 'look' then line = give_up_line end
if due > line then return {0, due} end

if before_status then
  local before = redis.call('GET', before_status)
  if before == 'queued' or before == 'running' then
    move_on(true)  -- it waits its turn: not late
    return {1, next_deadline}
  end
end
if (claim_by or due) <= give_up_line then
  -- The caller ends it; meanwhile no other reaper takes it up again.
  redis.call('HSET', run, 'look_at', next_deadline)
  return {2, next_deadline}
end
if caller == 'kick' then
  move_on(false)
  return {3, next_deadline}
end
return {4, due}
