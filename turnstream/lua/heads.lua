-- heads: the newest seq and the status of many runs in one call (the stream hub's sweep).
--
-- KEYS[1..n]  chat:run:{cid}:{sid}, the run hashes
-- ARGV[]      none
-- Returns {seq 1, status 1, seq 2, status 2, ...}, each false where the run hash
-- lacks the field (both, for a run whose keys expired).
--
-- One script, not a pipeline of HMGETs: at 10,000 quiet runs a client-side
-- pipeline cost the API process more CPU than the idle streams themselves.

local out = {}
for i, run in ipairs(KEYS) do
  local fields = redis.call('HMGET', run, 'seq', 'status')
  out[2 * i - 1] = fields[1]
  out[2 * i] = fields[2]
end
return out
