-- set_if_newer: write a conversation's cached copy unless the cache already
-- holds a newer one, so that the cached version only ever moves forward.
--
-- KEYS[1]  chat:session:{cid}  the cached conversation: JSON with a `version`,
--                              and `"stale": true` if it is a tombstone
-- ARGV[1]  the value to write: the conversation's JSON, or a tombstone
--          `{"version": <v>, "stale": true}`
-- ARGV[2]  the version of that value
-- ARGV[3]  "1" if the value is a tombstone, "0" if it is a live copy
-- ARGV[4]  the key's time to live, in seconds
--
-- Nothing is written over a higher version, nor over the same version unless
-- a live copy replaces a tombstone (a tombstone never replaces its own
-- version). A cached value without a readable version is overwritten.
-- Returns 1 if the value was written, 0 if not.

local current = redis.call('GET', KEYS[1])
if current then
  local ok, cached = pcall(cjson.decode, current)
  if ok and type(cached) == 'table' and tonumber(cached['version']) then
    local have, want = tonumber(cached['version']), tonumber(ARGV[2])
    if have > want or (have == want and (ARGV[3] == '1' or not cached['stale'])) then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
return 1
