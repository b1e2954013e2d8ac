-- Compare-and-set an experiment definition (all keys share the {P:cfg} tag). The revision is
-- kept in its own hash field so this script never has to decode user data.
-- KEYS[1] definition hash {rev, json}, KEYS[2] index set, KEYS[3] config version,
-- KEYS[4] audit stream.
-- ARGV[1] expected revision ('-1' = must not exist), ARGV[2] new revision, ARGV[3] new JSON
-- or '' to delete, ARGV[4] experiment key, ARGV[5] audit cap, ARGV[6..] the audit entry's
-- field/value pairs (server.stores.audit).
-- Returns 1 on success, 0 when the stored revision differs (and then records nothing).
local current = redis.call('HGET', KEYS[1], 'rev')
if ARGV[1] == '-1' then
  if current then return 0 end
elseif current ~= ARGV[1] then
  return 0
end
-- The entry first: if it cannot be written, the script stops before changing anything.
redis.call('XADD', KEYS[4], 'MAXLEN', ARGV[5], '*', unpack(ARGV, 6))
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[4])
else
  redis.call('HSET', KEYS[1], 'rev', ARGV[2], 'json', ARGV[3])
  redis.call('SADD', KEYS[2], ARGV[4])
end
redis.call('INCR', KEYS[3])
return 1
