-- heartbeat: renew the worker's lease on its running run and the run's keys' TTL.
--
-- Runs after _prelude.lua: KEYS[1..8] and ARGV[1..5] are the prelude's.
-- ARGV[6]  the worker's name
-- ARGV[7]  the new lease expiry (ms)
-- ARGV[8]  the run's member in chat:leases ("{cid} {sid}")
-- Returns -1 if the run is no longer this worker's (ended, or taken over),
-- else whether a stop was asked (0/1).

local worker, lease_until, lease_member = ARGV[6], ARGV[7], ARGV[8]

if redis.call('HGET', run, 'status') ~= 'running'
  or redis.call('HGET', run, 'worker') ~= worker then
  return -1
end
redis.call('HSET', run, 'lease_until', lease_until)
redis.call('ZADD', leases, 'XX', lease_until, lease_member)
keep(ttl)
return redis.call('EXISTS', cancel)
