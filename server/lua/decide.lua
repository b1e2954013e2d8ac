-- Decide for one visitor, many experiments, atomically, in the visitor's shard slot.
-- KEYS[1] profile hash, KEYS[2] assignments hash, KEYS[2+i] counters hash of entry i.
-- ARGV[1] now (ms), ARGV[2] attributes to merge (JSON object or ''), ARGV[3] channel,
-- ARGV[4] profile TTL (ms, 0 = keep), ARGV[5] number of entries, then 9 values per entry:
--   experiment, seed, rules (JSON list or ''), valid variants ('|'-joined),
--   proposed variant, group (p|h), propensity, decision id, persona.
-- Returns 4 strings per entry: reason, variant, decision id, propensity.
local now = ARGV[1]
local now_n = tonumber(now)
local channel = ARGV[3]
local ttl = tonumber(ARGV[4])
local n = tonumber(ARGV[5])

local attrs = nil
local function load_attrs()
  if attrs == nil then
    local raw = redis.call('HGET', KEYS[1], 'attrs')
    if raw then attrs = cjson.decode(raw) else attrs = {} end
  end
  return attrs
end

if ARGV[2] ~= '' then
  local a = load_attrs()
  for k, v in pairs(cjson.decode(ARGV[2])) do
    if v == cjson.null then a[k] = nil else a[k] = v end
  end
  if next(a) == nil then
    redis.call('HDEL', KEYS[1], 'attrs')
  else
    redis.call('HSET', KEYS[1], 'attrs', cjson.encode(a))
  end
end
redis.call('HSETNX', KEYS[1], 'first_seen', now)
redis.call('HSET', KEYS[1], 'last_seen', now, 'ch:' .. channel, now)

local persona = 'default'
local function fact_value(fact)
  if string.sub(fact, 1, 11) == 'attributes.' then
    return load_attrs()[string.sub(fact, 12)]
  elseif fact == 'channel' then
    return channel
  elseif fact == 'persona' then
    return persona
  end
  return nil
end

local function same(a, b)
  return type(a) == type(b) and a == b
end

local function matches_any(v, wanted)
  -- v may be a list attribute: any element counts.
  if type(v) == 'table' then
    for _, x in ipairs(v) do
      for _, w in ipairs(wanted) do if same(x, w) then return true end end
    end
    return false
  end
  for _, w in ipairs(wanted) do if same(v, w) then return true end end
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
  local op = rule['op']
  local want = rule['value']
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

local out = {}
for i = 0, n - 1 do
  local b = 6 + i * 9
  local exp, seed, rules, variants = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local proposed, group, propensity, decision = ARGV[b + 4], ARGV[b + 5], ARGV[b + 6], ARGV[b + 7]
  persona = ARGV[b + 8]
  local targeted = true
  if rules ~= '' then targeted = eval({all = cjson.decode(rules)}) end
  if not targeted then
    table.insert(out, 'not_targeted'); table.insert(out, ''); table.insert(out, ''); table.insert(out, '')
  else
    local raw = redis.call('HGET', KEYS[2], exp)
    local a = nil
    if raw then a = cjson.decode(raw) end
    if a and a['u'] == seed and string.find('|' .. variants .. '|', '|' .. a['v'] .. '|', 1, true) then
      table.insert(out, 'sticky'); table.insert(out, a['v']); table.insert(out, a['d'])
      table.insert(out, string.format('%.17g', a['w']))
    else
      local record = {u = seed, v = proposed, p = persona, c = channel, g = group, t = now_n,
                      d = decision, w = tonumber(propensity), m = {}}
      redis.call('HSET', KEYS[2], exp, cjson.encode(record))
      redis.call('HINCRBY', KEYS[2 + i + 1], 'n|' .. group .. '|' .. persona .. '|' .. channel .. '|' .. proposed, 1)
      if group == 'h' then table.insert(out, 'holdout') else table.insert(out, 'assigned') end
      table.insert(out, proposed); table.insert(out, decision); table.insert(out, propensity)
    end
  end
end

if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
return out
