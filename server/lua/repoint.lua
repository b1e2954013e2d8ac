-- Point a link straight at its canonical profile, if it is still a link (its own slot).
-- KEYS[1] profile hash of the linked id. ARGV[1] canonical id.
-- A link that expired meanwhile is left gone: writing it would leave a key with no TTL.
if redis.call('HEXISTS', KEYS[1], 'alias') == 1 then
  redis.call('HSET', KEYS[1], 'alias', ARGV[1])
  return 1
end
return 0
