-- Record one outcome event for one visitor, exactly once, in the visitor's shard slot.
-- KEYS[1] profile hash, KEYS[2] assignments hash, KEYS[3] dedupe zset,
-- KEYS[3+i] counters hash of candidate experiment i.
-- ARGV[1] now (ms), ARGV[2] event id, ARGV[3] metric, ARGV[4] value, ARGV[5] event time (ms),
-- ARGV[6] dedupe window (ms), ARGV[7] profile TTL (ms, 0 = keep), ARGV[8] number of
-- candidates, then 4 values per candidate: experiment, seed, kind, attribution window (ms).
-- Returns {1, exp, variant, exp, variant, ...} when counted, {0} for a duplicate.
local now = tonumber(ARGV[1])
local event_id = ARGV[2]
local metric = ARGV[3]
local value = tonumber(ARGV[4])
local at = tonumber(ARGV[5])
local ttl = tonumber(ARGV[7])
local n = tonumber(ARGV[8])
-- Clocks of callers drift: an event may be stamped a little before the assignment it follows.
local skew = 300000

if redis.call('ZSCORE', KEYS[3], event_id) then return {0} end
redis.call('ZADD', KEYS[3], now, event_id)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tonumber(ARGV[6]))
local keep = tonumber(ARGV[6])
if ttl > keep then keep = ttl end
redis.call('PEXPIRE', KEYS[3], keep)

local out = {1}
for i = 0, n - 1 do
  local b = 9 + i * 4
  local exp, seed, kind, window = ARGV[b], ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3])
  local raw = redis.call('HGET', KEYS[2], exp)
  if raw then
    local a = cjson.decode(raw)
    if a['u'] == seed and at + skew >= a['t'] and at <= a['t'] + window then
      local prev = a['m'][metric]
      local suffix = metric .. '|' .. a['g'] .. '|' .. a['p'] .. '|' .. a['c'] .. '|' .. a['v']
      local ckey = KEYS[3 + i + 1]
      if prev == nil then redis.call('HINCRBY', ckey, 'c|' .. suffix, 1) end
      if kind == 'revenue' then
        local before = prev or 0
        local total = before + value
        a['m'][metric] = total
        redis.call('HINCRBYFLOAT', ckey, 's|' .. suffix, ARGV[4])
        redis.call('HINCRBYFLOAT', ckey, 'q|' .. suffix,
                    string.format('%.17g', total * total - before * before))
      else
        a['m'][metric] = 1
      end
      redis.call('HSET', KEYS[2], exp, cjson.encode(a))
      table.insert(out, exp); table.insert(out, a['v'])
    end
  end
end
if ttl > 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return out
