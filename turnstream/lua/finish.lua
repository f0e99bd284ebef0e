-- finish: end the run (completed, error or cancelled), writing `end` exactly once.
--
-- Runs after _prelude.lua: KEYS[1..5] and ARGV[1..6] are the prelude's.
-- ARGV[7]  the final status
-- ARGV[8]  error text ('' for none)
-- ARGV[9]  the status the run must have now ('' for any live one)
-- ARGV[10] end it only if its lease lapsed before this time (ms; '0' for always)
-- ARGV[11..] events, as (type, data) pairs (`error` if any, then `end`)
-- Returns {1, user id, duration (ms) or ''} if this call ended the run (the duration of a
-- completed run that started), {0} if it had ended or a condition failed. The caller
-- then takes the run out of the indexes, gives back its place under the user's cap and
-- records the duration (live/state.py): those keys live in other slots.

local final, error_text, required, lapsed_before = ARGV[7], ARGV[8], ARGV[9], ARGV[10]

local current = redis.call('HGET', run, 'status')
if not current or is_terminal(current) then return {0} end
if required ~= '' and current ~= required then return {0} end
if lapsed_before ~= '0' then
  local lease = tonumber(redis.call('HGET', run, 'lease_until') or '0')
  if lease >= tonumber(lapsed_before) then return {0} end
end
redis.call('HSET', run, 'status', final, 'ended_at', now)
if error_text ~= '' then redis.call('HSET', run, 'error', error_text) end
redis.call('SET', status, final)
add_from(11)
local duration = ''
local started = redis.call('HGET', run, 'started_at')
if final == 'completed' and started then duration = tonumber(now) - tonumber(started) end
keep(ttl)
return {1, redis.call('HGET', run, 'user_id') or '', duration}
