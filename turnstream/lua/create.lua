-- create: record a new queued run, point chat:active at it, write its `queued` event.
--
-- Runs after _prelude.lua: KEYS[1..5] and ARGV[1..6] are the prelude's.
-- ARGV[7]  the run's own fields as a JSON object (session_id, user_id, message, ...)
-- ARGV[8]  'reject' or 'enqueue': what to do if another run of the conversation is active
-- ARGV[9]  task:status:{cid}:     the status key prefix of the conversation's runs
-- ARGV[10] the claim deadline (ms): a worker must have claimed the run by then
-- ARGV[11] when the user's place under the cap was reserved (ms, Redis's clock: admit.lua)
-- ARGV[12] how long a reservation may wait for its create (ms)
-- ARGV[13..] events, as (type, data) pairs
-- Returns {1, the session id it waits for, or ''}, {0, the active session id} (reject),
-- or {-1, ''} when the reservation is too old to use (live/admission.py).
--
-- The status key of the run chat:active names is read by a name built here
-- (ARGV[9] .. its id): its hash tag `{cid}` is in the prefix, so it is in this
-- script's slot. The caller has reserved the user's place (another slot) and listed
-- the run in chat:queued:{shard-N} (live/indexes.py) before this.

local mode, status_prefix, claim_by = ARGV[8], ARGV[9], ARGV[10]
local reserved_at, window = tonumber(ARGV[11]), tonumber(ARGV[12])

local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - reserved_at > window then
  return {-1, ''}
end

local after = ''
local current = redis.call('GET', active)
if current then
  local current_status = redis.call('GET', status_prefix .. current)
  if current_status == 'queued' or current_status == 'running' then
    if mode == 'reject' then return {0, current} end
    after = current
  end
end

if after ~= '' then redis.call('HSET', run, 'after', after, 'enqueued', '1') end
for field, value in pairs(cjson.decode(ARGV[7])) do redis.call('HSET', run, field, value) end
redis.call('HSET', run, 'status', 'queued', 'created_at', now, 'seq', 0, 'claim_by', claim_by,
  'look_at', claim_by)
redis.call('SET', status, 'queued')
redis.call('SET', active, run_sid)
add_from(13)
keep(ttl)
return {1, after}
