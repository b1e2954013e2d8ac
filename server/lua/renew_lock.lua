-- Extend a lock only while this caller still holds it. KEYS[1] lock, ARGV[1] token, ARGV[2]
-- new time to live (ms). Returns 1 when extended.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
