-- heartbeat: renew the worker's lease on its running run and the run's keys' TTL.
--
-- Runs after _prelude.lua: KEYS[1..5] and ARGV[1..6] are the prelude's.
-- ARGV[7]  the worker's name
-- ARGV[8]  the new lease expiry (ms)
-- Returns -1 if the run is no longer this worker's (ended, or taken over),
-- else whether a stop was asked (0/1). The caller then moves the run's score in
-- chat:leases:{shard-N} (live/indexes.py).

local worker, lease_until = ARGV[7], ARGV[8]

if redis.call('HGET', run, 'status') ~= 'running'
  or redis.call('HGET', run, 'worker') ~= worker then
  return -1
end
redis.call('HSET', run, 'lease_until', lease_until)
keep(ttl)
return redis.call('EXISTS', cancel)
