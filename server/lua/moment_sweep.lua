-- Update one moment's membership for a batch of customers, atomically, so that the entry
-- sequence numbers a member list pages by are given in order: a reader that has seen entry n
-- never misses an entry numbered below n that appears later.
-- KEYS[1] the moment's members (zset node -> entry sequence number), KEYS[2] its entries
-- (hash node -> 'entries|entered ms', and '~seq' the last number given).
-- ARGV[1] now (ms), [2] cool-down (ms; 0 = a member stays in until the rule stops holding),
-- then pairs (node, '1' when the rule holds for it now, '0' when not).
-- Entering (again) gives the node a new sequence number and counts one more entry; a member
-- whose entry is older than the cool-down and for whom the rule still holds enters again.
-- Returns {entered, left}.
local now = tonumber(ARGV[1])
local cooldown = tonumber(ARGV[2])
local entered, left = 0, 0
for i = 3, #ARGV, 2 do
  local node, holds = ARGV[i], ARGV[i + 1] == '1'
  local member = redis.call('ZSCORE', KEYS[1], node)
  if holds then
    local count, since = 0, nil
    local state = redis.call('HGET', KEYS[2], node)
    if state then
      local bar = string.find(state, '|', 1, true)
      count, since = tonumber(string.sub(state, 1, bar - 1)), tonumber(string.sub(state, bar + 1))
    end
    if not member or (cooldown > 0 and (since == nil or now - since >= cooldown)) then
      local seq = redis.call('HINCRBY', KEYS[2], '~seq', 1)
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
