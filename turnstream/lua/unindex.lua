-- unindex: take a run out of an index shard only if its entry is the one the caller saw.
--
-- KEYS[1]  an index shard: chat:leases:{shard-N}, chat:queued:…, chat:waiting:…
-- ARGV[1]  the run's member ("{cid} {sid}")
-- ARGV[2]  a score (ms)
-- ARGV[3]  'eq': remove it if its score is exactly that; 'le': if it is at or before it
-- Returns 1 if it was removed, else 0.
--
-- An index shard lives in another slot than the run it lists, so the scripts that
-- move a run on cannot update it too (live/indexes.py). Whoever adds an entry does
-- so before the change that needs it, always with a score later than any entry it
-- replaces; so an entry someone else just added again (the run moved back into the
-- state this index lists) never matches what the remover saw, and is kept.

local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
local have, want = tonumber(score), tonumber(ARGV[2])
if (ARGV[3] == 'eq' and have == want) or (ARGV[3] == 'le' and have <= want) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
