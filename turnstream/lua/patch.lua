-- patch: replace a conversation's cached copy with the next version, only if the
-- cache still holds the live copy it was patched from: a compare-and-set on the
-- version, which needs no WATCH (a transaction redis-py's cluster client cannot
-- carry through a failover).
--
-- KEYS[1]  chat:session:{cid}  the cached conversation (see set_if_newer.lua)
-- ARGV[1]  the patched copy's JSON
-- ARGV[2]  the version it was patched from: the one the cache must hold, live
--
-- The key keeps its time to live. Returns 1 if the copy was written, 0 if the
-- cache held anything else (nothing, a tombstone, another version).

local current = redis.call('GET', KEYS[1])
if not current then
  return 0
end
local ok, cached = pcall(cjson.decode, current)
if not (ok and type(cached) == 'table' and not cached['stale']
        and tonumber(cached['version']) == tonumber(ARGV[2])) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
return 1
