-- Store a customer's value predictions, unless the profile has gone meanwhile (erased, expired,
-- or merged into another and now only a link): a fit must never bring back an erased person.
-- KEYS[1] visitor hash. ARGV[1] p_alive, [2] expected purchases in 90 days, [3] value in 365
-- days ('' when the spend model is missing: the field is removed), [4] ms they were made at.
-- Returns 1 when stored, 0 when the profile is not a buyer's any more.
if redis.call('HEXISTS', KEYS[1], 'fp') == 0 or redis.call('HEXISTS', KEYS[1], 'alias') == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'pa', ARGV[1], 'e90', ARGV[2], 'pt', ARGV[4])
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], 'clv')
else
  redis.call('HSET', KEYS[1], 'clv', ARGV[3])
end
return 1
