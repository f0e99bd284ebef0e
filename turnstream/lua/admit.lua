-- admit: reserve one of the user's active-run places, in the user's own slot.
--
-- KEYS[1]  chat:user-runs:{uid}  status keys of the user's active runs, scored by when
--                                each was reserved (ms, this server's clock)
-- ARGV[1]  the new run's status key (task:status:{cid}:{sid})
-- ARGV[2]  the user's cap on active runs
-- ARGV[3]  the key's lifetime (ms)
-- ARGV[4]  grace (ms): a reservation whose run's status is missing is let go only past it
-- ARGV[5..] pairs (member, 'ended' | 'missing'): places the caller found free (it read
--          their status keys, which live in other slots)
-- Returns {1, at}: reserved at `at` (the create must come within its window, see
-- create.lua); or {0, now, member 1, score 1, ...}: at the cap, with the holders, whose
-- status keys the caller reads before it asks again.
--
-- The create is a second step in the conversation's slot (live/admission.py). A
-- reservation whose create never came (a crash between the steps) has no status key:
-- it is let go once older than the grace, which is longer than the window a create
-- has to use its reservation, so no run that was created loses its count.

local user_runs, member, cap, ttl, grace =
  KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

for i = 5, #ARGV, 2 do
  local held = redis.call('ZSCORE', user_runs, ARGV[i])
  if held and (ARGV[i + 1] == 'ended' or now - tonumber(held) > grace) then
    redis.call('ZREM', user_runs, ARGV[i])
  end
end
local mine = redis.call('ZSCORE', user_runs, member)
if mine then return {1, tonumber(mine)} end  -- asked again: the first reservation holds
if redis.call('ZCARD', user_runs) >= cap then
  local out = {0, now}
  for _, v in ipairs(redis.call('ZRANGE', user_runs, 0, -1, 'WITHSCORES')) do
    table.insert(out, v)
  end
  return out
end
redis.call('ZADD', user_runs, now, member)
redis.call('PEXPIRE', user_runs, ttl)
return {1, now}
