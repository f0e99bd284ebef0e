-- finish: end the run (completed, error or cancelled), writing `end` exactly once.
--
-- Runs after _prelude.lua: KEYS[1..8] and ARGV[1..5] are the prelude's.
-- ARGV[6]  the final status
-- ARGV[7]  error text ('' for none)
-- ARGV[8]  the status the run must have now ('' for any live one)
-- ARGV[9]  end it only if its lease lapsed before this time (ms; '0' for always)
-- ARGV[10] the run's member in chat:leases and chat:queued ("{cid} {sid}")
-- ARGV[11] how many durations chat:durations keeps
-- ARGV[12..] events, as (type, data) pairs (`error` if any, then `end`)
-- Returns 1 if this call ended the run, 0 if it had ended or a condition failed.

local final, error_text, required, lapsed_before, lease_member, kept =
  ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], tonumber(ARGV[11])

local current = redis.call('HGET', run, 'status')
if not current or is_terminal(current) then return 0 end
if required ~= '' and current ~= required then return 0 end
if lapsed_before ~= '0' then
  local lease = tonumber(redis.call('HGET', run, 'lease_until') or '0')
  if lease >= tonumber(lapsed_before) then return 0 end
end
redis.call('HSET', run, 'status', final, 'ended_at', now)
if error_text ~= '' then redis.call('HSET', run, 'error', error_text) end
redis.call('SET', status, final)
redis.call('ZREM', leases, lease_member)
redis.call('ZREM', queued, lease_member)
add_from(12)
local started = redis.call('HGET', run, 'started_at')
if final == 'completed' and started then
  redis.call('LPUSH', durations, tonumber(now) - tonumber(started))
  redis.call('LTRIM', durations, 0, kept - 1)
end
keep(ttl)
return 1
