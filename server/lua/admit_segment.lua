-- Admit a (persona, channel) segment into an experiment's registry unless the cap is reached.
-- KEYS[1] the experiment's segment set ({P:cfg} slot). ARGV[1] segment 'persona|channel',
-- ARGV[2] the cap. Returns 1 when the segment is (now) admitted, 0 when the registry is full.
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
