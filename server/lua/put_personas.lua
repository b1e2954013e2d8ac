-- Replace the persona rules, bump the definitions version and record the change (all under
-- {P:cfg}). KEYS[1] personas, KEYS[2] config version, KEYS[3] audit stream.
-- ARGV[1] JSON list, ARGV[2] audit cap, ARGV[3..] the audit entry's field/value pairs.
-- The entry first: if it cannot be written, the script stops before changing anything.
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[2], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[1], ARGV[1])
return redis.call('INCR', KEYS[2])
