-- Create an empty canonical profile for an id first seen in identify, unless the id is a
-- live link (its profile hash holds 'alias'). KEYS[1] profile, KEYS[2] linked ids.
-- ARGV[1] now (ms), ARGV[2] TTL (ms, 0 = keep), ARGV[3] a dead canonical a dangling link of
-- this id points at ('' = none): that link is dropped. Returns 1 when the id is canonical.
local alias = redis.call('HGET', KEYS[1], 'alias')
if alias then
  if alias ~= ARGV[3] then return 0 end
  redis.call('DEL', KEYS[1])
end
redis.call('HSETNX', KEYS[1], 'first_seen', ARGV[1])
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('PERSIST', KEYS[1])
end
return 1
