-- Decide for one visitor and many experiments, atomically, inside the visitor's shard slot.
-- Everything is read and checked before the first write, so an error never leaves half a
-- decision behind. Numbers that must survive a round trip (times, propensities) are stored as
-- strings: cjson keeps only 14 significant digits.
--
-- KEYS[1] profile hash, KEYS[2] attributes hash, KEYS[3] assignments hash, then per entry:
--   totals counters hash, epoch counters hash, decision/outcome log stream.
-- ARGV[1] now (ms), [2] channel, [3] profile TTL (ms, 0 = keep), [4] epoch length (ms),
-- [5] log MAXLEN, [6] max attributes per profile, [7] number of attribute updates A,
-- [8] number of entries N, then A pairs (name, JSON value or '' to delete), then 10 values per
-- entry: experiment, seed, rules (JSON list or ''), variants ('|'-joined), proposed variant,
-- group (p|h), propensity, decision id, persona, serving probabilities (','-joined, in
-- variant order).
-- Returns 4 strings per entry (reason, variant, decision id, propensity), or
-- {'!too_many_attributes', current count} without writing anything.
local now = ARGV[1]
local channel = ARGV[2]
local ttl = tonumber(ARGV[3])
local epoch = tostring(math.floor(tonumber(now) / tonumber(ARGV[4])))
local maxlen = ARGV[5]
local max_attrs = tonumber(ARGV[6])
local n_attrs = tonumber(ARGV[7])
local n = tonumber(ARGV[8])
local first_entry = 9 + 2 * n_attrs

local function split(s, sep)
  local out = {}
  for part in string.gmatch(s, '([^' .. sep .. ']+)') do table.insert(out, part) end
  return out
end

-- 1. Checks and reads, no writes.
if n_attrs > 0 then
  local count = redis.call('HLEN', KEYS[2])
  for i = 0, n_attrs - 1 do
    local name, value = ARGV[9 + 2 * i], ARGV[10 + 2 * i]
    local exists = redis.call('HEXISTS', KEYS[2], name) == 1
    if value == '' and exists then count = count - 1 end
    if value ~= '' and not exists then count = count + 1 end
  end
  if count > max_attrs then return {'!too_many_attributes', tostring(count)} end
end

local entries = {}
for i = 0, n - 1 do
  local b = first_entry + i * 10
  local e = {exp = ARGV[b], seed = ARGV[b + 1], variants = ARGV[b + 3], proposed = ARGV[b + 4],
             group = ARGV[b + 5], propensity = ARGV[b + 6], decision = ARGV[b + 7],
             persona = ARGV[b + 8], serving = split(ARGV[b + 9], ','),
             totals = KEYS[4 + 3 * i], epochs = KEYS[5 + 3 * i], log = KEYS[6 + 3 * i]}
  if ARGV[b + 2] ~= '' then e.rules = cjson.decode(ARGV[b + 2]) end
  local raw = redis.call('HGET', KEYS[3], e.exp)
  if raw then e.stored = cjson.decode(raw) end
  table.insert(entries, e)
end

-- 2. Profile writes.
for i = 0, n_attrs - 1 do
  local name, value = ARGV[9 + 2 * i], ARGV[10 + 2 * i]
  if value == '' then redis.call('HDEL', KEYS[2], name) else redis.call('HSET', KEYS[2], name, value) end
end
redis.call('HSETNX', KEYS[1], 'first_seen', now)
redis.call('HSET', KEYS[1], 'last_seen', now, 'ch:' .. channel, now)

-- 3. Rules see the profile as just updated.
local attrs = nil
local decoded = {}
local persona = 'default'
local function attribute(name)
  if attrs == nil then
    attrs = {}
    local flat = redis.call('HGETALL', KEYS[2])
    for j = 1, #flat, 2 do attrs[flat[j]] = flat[j + 1] end
  end
  if decoded[name] == nil and attrs[name] ~= nil then decoded[name] = cjson.decode(attrs[name]) end
  return decoded[name]
end

local function fact_value(fact)
  if string.sub(fact, 1, 11) == 'attributes.' then return attribute(string.sub(fact, 12)) end
  if fact == 'channel' then return channel end
  if fact == 'persona' then return persona end
  return nil
end

local function same(a, b) return type(a) == type(b) and a == b end

local function matches_any(v, wanted)
  -- v may be a list attribute: any element counts.
  local values = v
  if type(v) ~= 'table' then values = {v} end
  for _, x in ipairs(values) do
    for _, w in ipairs(wanted) do if same(x, w) then return true end end
  end
  return false
end

local eval
eval = function(rule)
  if rule['all'] then
    for _, r in ipairs(rule['all']) do if not eval(r) then return false end end
    return true
  elseif rule['any'] then
    for _, r in ipairs(rule['any']) do if eval(r) then return true end end
    return false
  elseif rule['not'] then
    return not eval(rule['not'])
  end
  local v = fact_value(rule['fact'])
  local op, want = rule['op'], rule['value']
  if v == nil or v == cjson.null then
    if op == 'exists' then return want == false end
    return op == 'ne' or op == 'nin'
  end
  if op == 'exists' then return want == true end
  if op == 'eq' then return matches_any(v, {want}) end
  if op == 'ne' then return not matches_any(v, {want}) end
  if op == 'in' then return matches_any(v, want) end
  if op == 'nin' then return not matches_any(v, want) end
  if type(v) ~= 'number' or type(want) ~= 'number' then return false end
  if op == 'lt' then return v < want end
  if op == 'lte' then return v <= want end
  if op == 'gt' then return v > want end
  if op == 'gte' then return v >= want end
  return false
end

-- 4. Decisions.
local out = {}
for _, e in ipairs(entries) do
  persona = e.persona
  local a = e.stored
  if e.rules and not eval({all = e.rules}) then
    table.insert(out, 'not_targeted'); table.insert(out, ''); table.insert(out, ''); table.insert(out, '')
  elseif a and a['u'] == e.seed and string.find('|' .. e.variants .. '|', '|' .. a['v'] .. '|', 1, true) then
    table.insert(out, 'sticky'); table.insert(out, a['v']); table.insert(out, a['d']); table.insert(out, a['w'])
  else
    -- New assignment (or the stored variant was removed while paused: a new exposure).
    local cell = e.group .. '|' .. e.persona .. '|' .. channel
    local record = {u = e.seed, v = e.proposed, p = e.persona, c = channel, g = e.group, t = now,
                    d = e.decision, w = e.propensity, ep = epoch, m = {}}
    redis.call('HSET', KEYS[3], e.exp, cjson.encode(record))
    redis.call('HINCRBY', e.totals, 'n|' .. cell .. '|' .. e.proposed, 1)
    redis.call('HINCRBY', e.epochs, 'n|' .. cell .. '|' .. e.proposed .. '|' .. epoch, 1)
    -- Expected exposures: the serving probability of every variant, for the ratio check.
    for j, variant in ipairs(split(e.variants, '|')) do
      redis.call('HINCRBYFLOAT', e.epochs, 'e|' .. cell .. '|' .. variant .. '|' .. epoch, e.serving[j])
    end
    redis.call('XADD', e.log, 'MAXLEN', '~', maxlen, '*', 'k', 'd', 'd', e.decision,
               'p', e.persona, 'c', channel, 'v', e.proposed, 'g', e.group, 'w', e.propensity,
               'ep', epoch, 't', now)
    if e.group == 'h' then table.insert(out, 'holdout') else table.insert(out, 'assigned') end
    table.insert(out, e.proposed); table.insert(out, e.decision); table.insert(out, e.propensity)
  end
end

if ttl > 0 then
  for k = 1, 3 do
    if redis.call('EXISTS', KEYS[k]) == 1 then redis.call('PEXPIRE', KEYS[k], ttl) end
  end
end
return out
