-- claim: queued -> running, a compare-and-set, so a redelivered task never runs twice.
--
-- Runs after _prelude.lua: KEYS[1..5] and ARGV[1..6] are the prelude's.
-- ARGV[7]  the worker's name
-- ARGV[8]  lease expiry (ms)
-- ARGV[9..] events, as (type, data) pairs (the `start` event)
-- Returns {1, look_at} if this call claimed the run (`look_at`: its score in chat:queued,
-- which the caller takes out), {0, the lease expiry it has or ''} if it was not queued.
--
-- The caller lists the run in chat:leases:{shard-N} before this (live/indexes.py), and
-- after a claim that lost, puts back the score of the lease the run has (if any).

local worker, lease_until = ARGV[7], ARGV[8]

if redis.call('HGET', run, 'status') ~= 'queued' then
  return {0, redis.call('HGET', run, 'lease_until') or ''}
end
local look_at = redis.call('HGET', run, 'look_at') or ''
redis.call('HSET', run, 'status', 'running', 'started_at', now, 'worker', worker,
  'lease_until', lease_until)
redis.call('SET', status, 'running')
add_from(9)
keep(ttl)
return {1, look_at}
