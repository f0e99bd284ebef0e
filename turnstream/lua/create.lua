-- create: record a new queued run, point chat:active at it, write its `queued` event.
--
-- Runs after _prelude.lua: KEYS[1..8] and ARGV[1..5] are the prelude's.
-- KEYS[9]  chat:user-runs:{uid}   the user's active runs (their status keys), for the cap
-- ARGV[6]  the run's own fields as a JSON object (session_id, user_id, message, ...)
-- ARGV[7]  'reject' or 'enqueue': what to do if another run of the conversation is active
-- ARGV[8]  task:status:{cid}:     the status key prefix of the conversation's runs
-- ARGV[9]  the user's cap on active runs
-- ARGV[10] the claim deadline (ms): a worker must have claimed the run by then (chat:queued)
-- ARGV[11] the run's member in chat:queued ("{cid} {sid}")
-- ARGV[12..] events, as (type, data) pairs
-- Returns {1, the session id it waits for, or ''}, {0, the active session id} (reject),
-- or {-1, ''} when the user is at the cap.
--
-- Two keys are read that cannot be named in advance: the status key of the run
-- chat:active names (ARGV[8] .. its id), and the status keys the user-runs set
-- holds. See "Redis Cluster" in docs/architecture.md.

local user_runs, mode, status_prefix, cap = KEYS[9], ARGV[7], ARGV[8], tonumber(ARGV[9])
local claim_by, queued_member = ARGV[10], ARGV[11]

local after = ''
local current = redis.call('GET', active)
if current then
  local current_status = redis.call('GET', status_prefix .. current)
  if current_status == 'queued' or current_status == 'running' then
    if mode == 'reject' then return {0, current} end
    after = current
  end
end

-- The user's cap on active runs: the set holds their runs' status keys; ended or
-- expired ones leave it here, so it never needs a sweep elsewhere.
for _, member in ipairs(redis.call('ZRANGE', user_runs, 0, -1)) do
  local s = redis.call('GET', member)
  if not s or is_terminal(s) then redis.call('ZREM', user_runs, member) end
end
if redis.call('ZCARD', user_runs) >= cap then return {-1, ''} end
redis.call('ZADD', user_runs, now, status)
redis.call('PEXPIRE', user_runs, ttl)

if after ~= '' then redis.call('HSET', run, 'after', after, 'enqueued', '1') end
for field, value in pairs(cjson.decode(ARGV[6])) do redis.call('HSET', run, field, value) end
redis.call('HSET', run, 'status', 'queued', 'created_at', now, 'seq', 0, 'claim_by', claim_by)
redis.call('SET', status, 'queued')
redis.call('SET', active, run_sid)
-- The reapers' index of queued runs: one that no worker claims in time is handed out
-- again, or in the end ended (the requeue script), so none is stranded.
redis.call('ZADD', queued, claim_by, queued_member)
add_from(12)
keep(ttl)
return {1, after}
