-- Compare-and-set an experiment definition (all keys share the {P:cfg} tag).
-- KEYS[1] definition, KEYS[2] index set, KEYS[3] config version.
-- ARGV[1] expected revision ('-1' = must not exist, '0'... = current revision), ARGV[2] new JSON
-- or '' to delete, ARGV[3] experiment key.
-- Returns 1 on success, 0 when the stored revision differs.
local raw = redis.call('GET', KEYS[1])
local expected = tonumber(ARGV[1])
if expected < 0 then
  if raw then return 0 end
else
  if not raw then return 0 end
  local current = cjson.decode(raw)['revision']
  if current ~= expected then return 0 end
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('SADD', KEYS[2], ARGV[3])
end
redis.call('INCR', KEYS[3])
return 1
