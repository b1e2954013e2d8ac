-- Make the buyers index agree with one profile: it lists a node exactly when the node is a
-- known customer's own profile (not a link) that has bought. Profile and index share the
-- shard's slot, so the check and the change are one step, whatever ran since a caller read
-- the profile.
-- KEYS[1] visitor hash, KEYS[2] the shard's buyers (zset). ARGV[1] the node, [2] now (ms),
-- [3] '1' to (re)stamp a listed node with now: its history just changed (identify, a merge).
-- Returns 1 when the node is listed afterwards, 0 when not.
local buyer = redis.call('HEXISTS', KEYS[1], 'fp') == 1
  and redis.call('HGET', KEYS[1], 'known') == '1'
  and redis.call('HEXISTS', KEYS[1], 'alias') == 0
if not buyer then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 0
end
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1])
end
return 1
