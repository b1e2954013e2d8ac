-- Record one outcome event for one visitor exactly once, inside the visitor's shard slot.
-- All reads and checks come before the first write.
--
-- KEYS[1] visitor hash (profile, 'x:' assignments, 'e:<event id>' -> ms of the latest events
-- counted), KEYS[2] the older counted events (zset, score ms), KEYS[3] merge lock, KEYS[4]
-- linked ids, KEYS[5] the shard's known buyers (zset), then per candidate: totals counters hash,
-- epoch counters hash, log stream.
-- ARGV[1] now (ms), [2] event id, [3] metric, [4] value, [5] event time (ms), [6] dedupe
-- window (ms), [7] profile TTL (ms, 0 = keep), [8] clock-skew allowance (ms), [9] log MAXLEN,
-- [10] strict (1: give up if the visitor holds an assignment this caller does not know),
-- [11] number of candidates, [12] the metric that counts as a purchase (lifecycle facts),
-- [13] '1' when the call may create a profile (server-side callers; an SDK call for a visitor
-- never seen has no assignment to credit and records nothing), [14] profile field that names
-- a known customer ('cid', 'eh' or ''), [15] its value, [16] the refund metric (lowers
-- lifetime value), [17] the visitor's node (it names the decisions, see decision_of), [18] most
-- events the visitor hash keeps (the older ones move to KEYS[2]), then 5
-- values per candidate: experiment, seed, metric kind ('' when the experiment does not use
-- this metric; 'repeat' is a conversion that needs an earlier purchase), attribution window
-- (ms), learning decay rate per ms ('' unless this is the primary metric of a bandit).
-- Returns {1, exp, variant, ...} when counted, {0} for a duplicate, {2} when nothing was
-- recorded for a visitor never seen, {-1} (nothing written)
-- when strict and the caller's experiment list is stale; {'!alias', canonical} or {'!busy'}
-- (nothing written) when the id is linked to another profile or a merge holds this one.
local now = ARGV[1]
local event_id, metric, value = ARGV[2], ARGV[3], ARGV[4]
local at = tonumber(ARGV[5])
local ttl = tonumber(ARGV[7])
local skew = tonumber(ARGV[8])
local maxlen = ARGV[9]
local strict = ARGV[10] == '1'
local n = tonumber(ARGV[11])
local purchase_metric = ARGV[12]
local may_create = ARGV[13] == '1'
local known_field, known_value = ARGV[14], ARGV[15]
local refund_metric = ARGV[16]
local node = ARGV[17]
local inline_events = tonumber(ARGV[18])
local window = tonumber(ARGV[6])
local now_n = tonumber(now)

local alias = redis.call('HGET', KEYS[1], 'alias')
if alias then
  if ttl > 0 and redis.call('PTTL', KEYS[1]) > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
  return {'!alias', alias}
end
if redis.call('EXISTS', KEYS[3]) == 1 then return {'!busy'} end
if not may_create and redis.call('EXISTS', KEYS[1]) == 0 then return {2} end
if redis.call('HEXISTS', KEYS[1], 'e:' .. event_id) == 1 then return {0} end
if redis.call('ZSCORE', KEYS[2], event_id) then return {0} end

local candidates = {}
for i = 0, n - 1 do
  local b = 19 + i * 5
  candidates[ARGV[b]] = {seed = ARGV[b + 1], kind = ARGV[b + 2], window = tonumber(ARGV[b + 3]),
                         fade = ARGV[b + 4],
                         totals = KEYS[6 + 3 * i], epochs = KEYS[7 + 3 * i], log = KEYS[8 + 3 * i]}
end

-- A repeat purchase is one made after an earlier purchase of the same visitor.
local first_purchase = tonumber(redis.call('HGET', KEYS[1], 'fp') or '')
local is_repeat = metric == purchase_metric and first_purchase ~= nil and first_purchase < at

local credits = {}
local orphans = {}
-- The visitor's assignments ('x:' fields) and the events it holds ('e:'), read by field:
-- the hash may also hold hundreds of kilobytes of attributes that track never needs.
local assignments = {}
local stale, recent = {}, {}
local names = {}
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  local kind = string.sub(f, 1, 2)
  if kind == 'x:' or kind == 'e:' then table.insert(names, f) end
end
local values = {}
if #names > 0 then values = redis.call('HMGET', KEYS[1], unpack(names)) end
for j, f in ipairs(names) do
  if string.sub(f, 1, 2) == 'x:' then
    table.insert(assignments, {string.sub(f, 3), decode_assignment(values[j])})
  else
    local ms = tonumber(values[j])
    if ms < now_n - window then
      table.insert(stale, f)
    else
      table.insert(recent, {ms, f})
    end
  end
end
for _, pair in ipairs(assignments) do
  local exp, a = pair[1], pair[2]
  local c = candidates[exp]
  local current = c ~= nil and seed_tag(c.seed) == a['u']
  if not current then
    if strict then return {-1} end
    -- The caller has just refreshed: this experiment was deleted (or re-created). Forget the
    -- orphan unless it is brand new (a definition written after the caller's refresh).
    if tonumber(a['t']) < tonumber(now) - 60000 then table.insert(orphans, exp) end
  end
  -- A pending assignment was never confirmed as seen: it collects nothing.
  if current and c.kind ~= '' and not a['pe'] then
    local assigned = tonumber(a['t'])
    -- An assignment stops collecting outcomes once its visitor left the audience ('x').
    local open = a['x'] == nil or at < tonumber(a['x'])
    if c.kind == 'repeat' and not is_repeat then open = false end
    if open and at + skew >= assigned and at <= assigned + c.window then
      table.insert(credits, {exp = exp, a = a, c = c})
    end
  end
end

for _, exp in ipairs(orphans) do redis.call('HDEL', KEYS[1], 'x:' .. exp) end
for _, field in ipairs(stale) do redis.call('HDEL', KEYS[1], field) end
redis.call('HSET', KEYS[1], 'e:' .. event_id, now)
-- The visitor hash keeps only the latest events, so that a visitor sending thousands cannot
-- make every decide read them: the older ones move to the overflow set, where dedupe still
-- finds them until the window has passed.
if #recent + 1 > inline_events then
  table.sort(recent, function(x, y) return x[1] < y[1] or (x[1] == y[1] and x[2] < y[2]) end)
  for i = 1, #recent + 1 - inline_events do
    redis.call('ZADD', KEYS[2], recent[i][1], string.sub(recent[i][2], 3))
    redis.call('HDEL', KEYS[1], recent[i][2])
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_n - window)
  local keep = window
  if ttl > keep then keep = ttl end
  redis.call('PEXPIRE', KEYS[2], keep)
end

local out = {1}
for _, credit in ipairs(credits) do
  local a, c = credit.a, credit.c
  -- A repeat purchase is counted as a conversion ('c'), once per assignment.
  local key = metric .. '|' .. (c.kind == 'revenue' and 'r' or 'c')
  local prev = a['m'][key]
  local cell = metric .. '|' .. a['g'] .. '|' .. a['p'] .. '|' .. a['c'] .. '|' .. a['v']
  local ep = '|' .. a['ep']
  -- The visitor's pre-exposure covariate (absent: zero, nothing to add to cx*y).
  local cx = tonumber(a['cx'] or '')
  if cx == 0 then cx = nil end
  local learning = a['p'] .. '|' .. a['c'] .. '|' .. a['v']
  local exposed_ms = tonumber(a['t'])
  if prev == nil then
    learn(c.totals, learning, now, c.fade, exposed_ms, 0, 1, 0, 0)
    learn_delay(c.totals, c.fade, tonumber(now) - exposed_ms)
    redis.call('HINCRBY', c.totals, 'c|' .. cell, 1)
    redis.call('HINCRBY', c.epochs, 'c|' .. cell .. ep, 1)
    if cx and c.kind ~= 'revenue' then
      -- A conversion's outcome is 1 from the first one on: cx*y grows once, by cx.
      redis.call('HINCRBYFLOAT', c.epochs, 'xy|' .. cell .. ep, string.format('%.17g', cx))
    end
  end
  if c.kind == 'revenue' then
    local before = tonumber(prev or '0')
    local total = before + tonumber(value)
    local square = string.format('%.17g', total * total - before * before)
    a['m'][key] = string.format('%.17g', total)
    redis.call('HINCRBYFLOAT', c.totals, 's|' .. cell, value)
    redis.call('HINCRBYFLOAT', c.totals, 'q|' .. cell, square)
    learn(c.totals, learning, now, c.fade, exposed_ms, 0, 0, tonumber(value),
          total * total - before * before)
    redis.call('HINCRBYFLOAT', c.epochs, 's|' .. cell .. ep, value)
    redis.call('HINCRBYFLOAT', c.epochs, 'q|' .. cell .. ep, square)
    if total ~= before then
      -- Log-normal model of positive visitor totals: how many are positive and the sums of
      -- ln(total) and ln(total)^2. The visitor's old total leaves the sums and the new one
      -- enters, in one increment per sum (as for the squares above). Only reports read
      -- these, so only the epoch hash holds them.
      local p, l, ll, ps = 0, 0, 0, 0
      if before > 0 then
        local lb = math.log(before)
        p, l, ll, ps = -1, -lb, -lb * lb, -before
      end
      if total > 0 then
        local lt = math.log(total)
        p, l, ll, ps = p + 1, l + lt, ll + lt * lt, ps + total
      end
      if p ~= 0 then redis.call('HINCRBY', c.epochs, 'p|' .. cell .. ep, p) end
      if before > 0 or total > 0 then
        redis.call('HINCRBYFLOAT', c.epochs, 'l|' .. cell .. ep, string.format('%.17g', l))
        redis.call('HINCRBYFLOAT', c.epochs, 'll|' .. cell .. ep, string.format('%.17g', ll))
        -- The positive totals' own sum: with net refunds the value sum also holds negative
        -- totals, and the spend model needs the sum of exactly the totals it has ln sums of.
        redis.call('HINCRBYFLOAT', c.epochs, 'ps|' .. cell .. ep, string.format('%.17g', ps))
      end
      if cx then
        redis.call('HINCRBYFLOAT', c.epochs, 'xy|' .. cell .. ep,
                   string.format('%.17g', cx * (total - before)))
      end
    end
  else
    a['m'][key] = '1'
  end
  redis.call('HSET', KEYS[1], 'x:' .. credit.exp, encode_assignment(a))
  redis.call('XADD', c.log, 'MAXLEN', '~', maxlen, '*', 'k', 'o',
             'd', decision_of(a, node, credit.exp), 'm', metric,
             'x', value, 'e', event_id, 'v', a['v'], 'p', a['p'], 'c', a['c'], 'g', a['g'],
             'ep', a['ep'], 't', now)
  table.insert(out, credit.exp); table.insert(out, a['v'])
end
-- Lifecycle facts: first and last purchase (event time), count, lifetime value, the first
-- purchase's value (the spend model wants the mean of the repeat purchases only).
if metric == purchase_metric then
  local stamp = string.format('%d', at)
  if not first_purchase or first_purchase > at then
    redis.call('HSET', KEYS[1], 'fp', stamp, 'fv', value)
  end
  local last = redis.call('HGET', KEYS[1], 'lp')
  if not last or tonumber(last) < at then redis.call('HSET', KEYS[1], 'lp', stamp) end
  redis.call('HINCRBY', KEYS[1], 'pc', 1)
  redis.call('HINCRBYFLOAT', KEYS[1], 'ltv', value)
  redis.call('HSETNX', KEYS[1], 'first_seen', now)
elseif metric == refund_metric and tonumber(value) ~= 0 then
  -- Refunds lower lifetime value (never below zero), whatever sign the caller gave.
  local ltv = tonumber(redis.call('HGET', KEYS[1], 'ltv') or '0')
  local after = ltv - math.abs(tonumber(value))
  if after < 0 then after = 0 end
  redis.call('HSET', KEYS[1], 'ltv', string.format('%.17g', after))
  redis.call('HSETNX', KEYS[1], 'first_seen', now)
end
if known_field ~= '' then
  redis.call('HSET', KEYS[1], 'known', '1')
  redis.call('HSETNX', KEYS[1], known_field, known_value)
end

local known = redis.call('HGET', KEYS[1], 'known') == '1'
-- The buyers index lists known customers who bought (the customer-value fit and the moments
-- read it); an anonymous buyer joins it when identify makes them known.
if known and metric == purchase_metric then redis.call('ZADD', KEYS[5], now, ARGV[17]) end
for _, k in ipairs({1, 4}) do
  if known or ttl <= 0 then
    redis.call('PERSIST', KEYS[k])
  elseif redis.call('EXISTS', KEYS[k]) == 1 then
    redis.call('PEXPIRE', KEYS[k], ttl)
  end
end
return out
