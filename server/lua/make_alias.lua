-- Turn a merged profile into a link to the winner (the loser's shard slot).
-- KEYS[1] visitor hash, KEYS[2] older counted event ids, KEYS[3] linked ids. ARGV[1] winner
-- id, ARGV[2] TTL (ms, 0 = keep).
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'alias', ARGV[1])
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
