-- Replace the persona rules and bump the definitions version (both under {P:cfg}).
-- KEYS[1] personas, KEYS[2] config version. ARGV[1] JSON list.
redis.call('SET', KEYS[1], ARGV[1])
return redis.call('INCR', KEYS[2])
