-- decide: the user's decision on one approval; the run goes on once all are decided.
--
-- Runs after _prelude.lua: KEYS[1..5] and ARGV[1..6] are the prelude's.
-- ARGV[7]  the approval id, or '' for every undecided one (the reapers' expiry)
-- ARGV[8]  '1' approved, '0' denied
-- ARGV[9]  the reason ('' for none)
-- ARGV[10] the claim deadline (ms) if the run goes on now
-- The caller listed the run in chat:queued:{shard-N} with that deadline before this, and
-- takes it out of chat:waiting:{shard-N} after a code 2 (live/indexes.py).
-- Returns {code, 'approved'|'denied'} ({2, word, its `wait_until`} for code 2): code 1
-- decided now and the run still waits, 2 decided now and the run is queued to go on
-- (the caller hands it to a worker), 3 the same decision
-- was made before, 4 another decision was made before (the second part is that one),
-- 0 no such approval, 5 it expired, 6 the run no longer waits (it ended).

local id, approved, reason, claim_by = ARGV[7], ARGV[8] == '1', ARGV[9], ARGV[10]
local function word(yes) if yes then return 'approved' end return 'denied' end

local function decide(field, a)
  a.approved, a.reason = approved, reason
  redis.call('HSET', run, field, cjson.encode(a))
  add('approval', cjson.encode({approvalId = a.approvalId, toolCallId = a.toolCallId,
    approved = approved, reason = reason}))
  return redis.call('HINCRBY', run, 'pending', -1)
end

local left
if id == '' then
  if redis.call('HGET', run, 'status') ~= 'waiting' then return {6, ''} end
  for _, asked in ipairs(cjson.decode(redis.call('HGET', run, 'asked'))) do
    local field = 'approval:' .. asked
    local a = cjson.decode(redis.call('HGET', run, field))
    if a.approved == nil then left = decide(field, a) end
  end
  if left == nil then return {6, ''} end
else
  local field = 'approval:' .. id
  local raw = redis.call('HGET', run, field)
  if not raw then return {0, ''} end
  local a = cjson.decode(raw)
  if a.approved ~= nil then
    if a.approved == approved then return {3, word(a.approved)} end
    return {4, word(a.approved)}
  end
  if redis.call('HGET', run, 'status') ~= 'waiting' then return {6, ''} end
  if tonumber(a.expiresAt) <= tonumber(now) then return {5, ''} end
  left = decide(field, a)
end
if left ~= 0 then return {1, word(approved)} end
redis.call('HSET', run, 'status', 'queued', 'claim_by', claim_by, 'look_at', claim_by)
redis.call('SET', status, 'queued')
keep(ttl)
return {2, word(approved), redis.call('HGET', run, 'wait_until') or ''}
