-- claim: queued -> running, a compare-and-set, so a redelivered task never runs twice.
--
-- Runs after _prelude.lua: KEYS[1..8] and ARGV[1..5] are the prelude's.
-- ARGV[6]  the worker's name
-- ARGV[7]  lease expiry (ms)
-- ARGV[8]  the run's member in chat:leases and chat:queued ("{cid} {sid}")
-- ARGV[9..] events, as (type, data) pairs (the `start` event)
-- Returns 1 if this call claimed the run, 0 if it was not queued.

local worker, lease_until, lease_member = ARGV[6], ARGV[7], ARGV[8]

if redis.call('HGET', run, 'status') ~= 'queued' then return 0 end
redis.call('HSET', run, 'status', 'running', 'started_at', now, 'worker', worker,
  'lease_until', lease_until)
redis.call('SET', status, 'running')
redis.call('ZADD', leases, lease_until, lease_member)
redis.call('ZREM', queued, lease_member)
add_from(9)
keep(ttl)
return 1
