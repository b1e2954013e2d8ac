-- Update one moment's membership for a batch of customers, atomically, so that the entry
-- sequence numbers a member list pages by are given in order: a reader that has seen entry n
-- never misses an entry numbered below n that appears later.
-- KEYS[1] the moment's members (zset node -> entry sequence number), KEYS[2] its entries
-- (hash node -> 'entries|entered ms'), KEYS[3] its last sequence number, KEYS[4] the moment
-- generations (hash name -> generation).
-- ARGV[1] now (ms), [2] cool-down (ms; 0 = none), [3] the moment's name, [4] the generation
-- the caller read its definition under, then pairs (node, '1' when the rule holds for it now,
-- '0' when not).
-- Entering gives the node a new sequence number and counts one more entry. With a cool-down,
-- a member still in after it enters again (it did not react), and nobody enters twice within
-- it (a rule that flickers around a threshold must not mail every day).
-- Returns {entered, left}, or {-1, -1} (nothing written) when the moment was deleted or
-- defined anew since the caller read it.
local now = tonumber(ARGV[1])
local cooldown = tonumber(ARGV[2])
if redis.call('HGET', KEYS[4], ARGV[3]) ~= ARGV[4] then return {-1, -1} end
local entered, left = 0, 0
for i = 5, #ARGV, 2 do
  local node, holds = ARGV[i], ARGV[i + 1] == '1'
  local member = redis.call('ZSCORE', KEYS[1], node)
  if holds then
    local count, since = 0, nil
    local state = redis.call('HGET', KEYS[2], node)
    if state then
      local bar = string.find(state, '|', 1, true)
      count, since = tonumber(string.sub(state, 1, bar - 1)), tonumber(string.sub(state, bar + 1))
    end
    local cooled = cooldown > 0 and (since == nil or now - since >= cooldown)
    if (not member and (cooldown == 0 or cooled)) or (member and cooled) then
      local seq = redis.call('INCR', KEYS[3])
      redis.call('ZADD', KEYS[1], seq, node)
      redis.call('HSET', KEYS[2], node, string.format('%d|%d', count + 1, now))
      entered = entered + 1
    end
  elseif member then
    redis.call('ZREM', KEYS[1], node)
    left = left + 1
  end
end
return {entered, left}
