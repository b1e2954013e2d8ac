-- Link an id to a canonical profile unless the id already belongs to one (id's shard slot).
-- KEYS[1] profile hash of the id. ARGV[1] canonical id, ARGV[2] TTL (ms, 0 = keep).
-- Returns the id's owner: ARGV[1] when this call linked it, else the existing alias target
-- or the id itself when it is a canonical profile of its own.
local alias = redis.call('HGET', KEYS[1], 'alias')
if alias then return alias end
if redis.call('EXISTS', KEYS[1]) == 1 then return '=' end
redis.call('HSET', KEYS[1], 'alias', ARGV[1])
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return ARGV[1]
