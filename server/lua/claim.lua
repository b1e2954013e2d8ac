-- Link an id to a canonical profile unless the id already belongs to one (id's shard slot).
-- KEYS[1] profile hash of the id. ARGV[1] canonical id, ARGV[2] TTL (ms, 0 = keep),
-- ARGV[3] a dead canonical this id may still point at ('' = none): such a dangling link is
-- replaced.
-- Returns the id's owner: ARGV[1] when this call linked it, else the existing alias target,
-- or '=' when the id is a canonical profile of its own.
local alias = redis.call('HGET', KEYS[1], 'alias')
if alias and alias ~= ARGV[3] then return alias end
if not alias and redis.call('EXISTS', KEYS[1]) == 1 then return '=' end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'alias', ARGV[1])
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return ARGV[1]
