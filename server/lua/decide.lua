-- Decide for one visitor and many experiments, atomically, inside the visitor's shard slot.
-- Everything is read and checked before the first write, so an error never leaves half a
-- decision behind. Numbers that must survive a round trip (times, propensities) are stored as
-- strings: cjson keeps only 14 significant digits.
--
-- The persona is found here, next to the profile it reads, so it costs no extra round trip:
-- the caller sends, per experiment, one option per persona it may turn out to be, and only
-- the option of the persona that matches is used.
--
-- KEYS[1] visitor hash (profile, 'a:' attributes, 'x:' assignments), KEYS[2] merge lock,
-- KEYS[3] linked ids, then per entry: totals counters hash, epoch counters hash, log stream.
-- ARGV[1] now (ms), [2] channel, [3] anonymous profile TTL (ms, 0 = keep), [4] epoch length
-- (ms), [5] log MAXLEN, [6] max attributes per profile, [7] number of attribute updates A,
-- [8] number of entries N, [9] explicit persona ('' = evaluate the rules), [10] persona rules
-- (JSON list of {name, when}, or ''), [11] expose ('1': count new exposures now; '0': store
-- them pending until /v1/expose confirms the visitor saw them), [12] profile field that names
-- a known customer ('cid', 'eh' or '' for an anonymous id type), [13] its value, [14] most
-- channels one profile records, [15] the visitor's node (it names the decisions, see
-- decision_of), then A pairs (name, JSON value or '' to delete), then 7 values per entry (one
-- per experiment): experiment, seed, audience rules (JSON list or ''), variants
-- ('|'-joined), the profile field a new assignment snapshots as
-- its pre-exposure covariate 'cx' ('ltv', 'pc' or '' for none), the learning decay rate per
-- ms ('' for an experiment that keeps no learning sums), and the options: one line per
-- persona, each '\n'-terminated and the first '\n'-preceded, of tab-separated fields:
-- persona, proposed variant, group (p|h), propensity, serving probabilities (','-joined, in
-- variant order), early reason ('', 'not_targeted', or 'not_covered': outside the coverage
-- share, which only matters without a sticky assignment), and the segment (persona, channel)
-- a new assignment is counted in (the cap on segments folds excess traffic into 'other').
-- Returns {persona, then 5 strings per experiment: reason, variant, decision id, propensity,
-- pending ('1' while the exposure waits for the caller's confirmation)},
-- or without writing anything: {'!alias', canonical id}, {'!busy'} while a merge holds the
-- profile, {'!too_many_attributes', count}.
local now = ARGV[1]
local now_n = tonumber(now)
local channel = ARGV[2]
local ttl = tonumber(ARGV[3])
local epoch = tostring(math.floor(now_n / tonumber(ARGV[4])))
local maxlen = ARGV[5]
local max_attrs = tonumber(ARGV[6])
local n_attrs = tonumber(ARGV[7])
local n = tonumber(ARGV[8])
local explicit_persona = ARGV[9]
local expose = ARGV[11] == '1'
local known_field, known_value = ARGV[12], ARGV[13]
local max_channels = tonumber(ARGV[14])
local node = ARGV[15]
local first_attr = 16
local first_entry = first_attr + 2 * n_attrs
local DAY = 86400000

local entries = {}
for i = 0, n - 1 do
  local b = first_entry + i * 7
  table.insert(entries, {exp = ARGV[b], seed = ARGV[b + 1], rules = ARGV[b + 2],
                         variants = ARGV[b + 3], covariate = ARGV[b + 4],
                         fade = ARGV[b + 5], options = ARGV[b + 6], totals = KEYS[4 + 3 * i],
                         epochs = KEYS[5 + 3 * i], log = KEYS[6 + 3 * i]})
end

-- 1. Checks and reads, no writes. The visitor hash is read by field, never whole: its
-- attributes may run to hundreds of kilobytes, and only those the rules name are read.
-- 'fields' holds every field name (for the caps), 'profile' the values read; both follow
-- every write below.
local fields = {}
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do fields[f] = true end
local profile = {}
local wanted = {'alias', 'first_seen', 'last_seen', 'known', 'fp', 'lp', 'pc', 'ltv', 'cid', 'eh',
                'pa', 'e90', 'clv', 'ch:' .. channel}
for _, entry in ipairs(entries) do table.insert(wanted, 'x:' .. entry.exp) end
do
  local values = redis.call('HMGET', KEYS[1], unpack(wanted))
  for j, f in ipairs(wanted) do
    if values[j] then profile[f] = values[j] end
  end
end
local alias = profile['alias']
if alias then
  -- A link lives as long as the person is active through it.
  if ttl > 0 and redis.call('PTTL', KEYS[1]) > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
  return {'!alias', alias}
end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'!busy'} end

if n_attrs > 0 then
  local count = 0
  for field, _ in pairs(fields) do
    if string.sub(field, 1, 2) == 'a:' then count = count + 1 end
  end
  for i = 0, n_attrs - 1 do
    local name, value = ARGV[first_attr + 2 * i], ARGV[first_attr + 1 + 2 * i]
    local exists = fields['a:' .. name] ~= nil
    if value == '' and exists then count = count - 1 end
    if value ~= '' and not exists then count = count + 1 end
  end
  if count > max_attrs then return {'!too_many_attributes', tostring(count)} end
end

local persona_rules = nil
if ARGV[10] ~= '' then persona_rules = cjson.decode(ARGV[10]) end

-- The option line of one persona, split at its tabs (empty fields kept).
local function option(options, persona)
  local start = string.find(options, '\n' .. persona .. '\t', 1, true)
  if not start then return nil end
  local stop = string.find(options, '\n', start + 1, true)
  local line = string.sub(options, start + 1, stop - 1)
  local out, from = {}, 1
  while true do
    local tab = string.find(line, '\t', from, true)
    if not tab then table.insert(out, string.sub(line, from)); break end
    table.insert(out, string.sub(line, from, tab - 1))
    from = tab + 1
  end
  return {proposed = out[2], group = out[3], propensity = out[4], serving = out[5],
          early = out[6], seg_persona = out[7], seg_channel = out[8]}
end

-- 2. Profile writes.
for i = 0, n_attrs - 1 do
  local name, value = ARGV[first_attr + 2 * i], ARGV[first_attr + 1 + 2 * i]
  if value == '' then
    redis.call('HDEL', KEYS[1], 'a:' .. name)
    profile['a:' .. name], fields['a:' .. name] = nil, nil
  else
    redis.call('HSET', KEYS[1], 'a:' .. name, value)
    profile['a:' .. name], fields['a:' .. name] = value, true
  end
end
if profile['first_seen'] == nil then
  redis.call('HSET', KEYS[1], 'first_seen', now)
  profile['first_seen'] = now
end
redis.call('HSET', KEYS[1], 'last_seen', now)
profile['last_seen'] = now
if known_field ~= '' then
  -- The id itself names a known customer (a server-side caller deciding by customer id).
  redis.call('HSET', KEYS[1], 'known', '1')
  profile['known'] = '1'
  if profile[known_field] == nil then
    redis.call('HSET', KEYS[1], known_field, known_value)
    profile[known_field] = known_value
  end
end

-- 3. Facts, as rules see them (after this call's attribute updates).
-- Channels seen, bounded: invented channel names cannot grow a profile without end.
if profile['ch:' .. channel] == nil then
  local seen = 0
  for field, _ in pairs(fields) do
    if string.sub(field, 1, 3) == 'ch:' then seen = seen + 1 end
  end
  if seen < max_channels then
    redis.call('HSET', KEYS[1], 'ch:' .. channel, now)
    profile['ch:' .. channel] = now
  end
else
  redis.call('HSET', KEYS[1], 'ch:' .. channel, now)
  profile['ch:' .. channel] = now
end
local decoded = {}
local persona = 'default'
local function attribute(name)
  local field = 'a:' .. name
  if decoded[name] == nil and fields[field] then
    local raw = profile[field]
    if raw == nil then raw = redis.call('HGET', KEYS[1], field) end
    decoded[name] = cjson.decode(raw)
  end
  return decoded[name]
end

local function days_since(field)
  local t = profile[field]
  if t == nil then return nil end
  return (now_n - tonumber(t)) / DAY
end

local function fact_value(fact)
  if string.sub(fact, 1, 11) == 'attributes.' then return attribute(string.sub(fact, 12)) end
  if fact == 'channel' then return channel end
  if fact == 'persona' then return persona end
  if fact == 'days_since_first_purchase' then return days_since('fp') end
  if fact == 'days_since_last_purchase' then return days_since('lp') end
  if fact == 'days_since_first_seen' then return days_since('first_seen') end
  if fact == 'purchase_count' then return tonumber(profile['pc'] or '0') end
  if fact == 'lifetime_value' then return tonumber(profile['ltv'] or '0') end
  if fact == 'known' then return profile['known'] == '1' end
  -- Customer-value predictions, written by the fit; missing until it scored this profile.
  if fact == 'p_alive' then return tonumber(profile['pa'] or '') end
  if fact == 'expected_purchases_90d' then return tonumber(profile['e90'] or '') end
  if fact == 'predicted_clv_365d' then return tonumber(profile['clv'] or '') end
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

-- 4. The persona: explicit, else the first matching rule, else 'default'.
if explicit_persona ~= '' then
  persona = explicit_persona
elseif persona_rules then
  for _, p in ipairs(persona_rules) do
    if eval(p['when']) then persona = p['name']; break end
  end
end

-- 5. Decisions, for the entries of that persona.
local out = {persona}
for _, entry in ipairs(entries) do
  local e = option(entry.options, persona)
  if e == nil then return redis.error_reply('no option for persona ' .. persona) end
  e.exp, e.seed, e.variants = entry.exp, entry.seed, entry.variants
  e.covariate, e.fade = entry.covariate, entry.fade
  e.totals, e.epochs, e.log = entry.totals, entry.epochs, entry.log
  if entry.rules ~= '' then e.rules = cjson.decode(entry.rules) end
  do
    local field = 'x:' .. e.exp
    local raw = profile[field]
    local a = nil
    if raw then a = decode_assignment(raw) end
    local valid = a and a['u'] == seed_tag(e.seed)
      and string.find('|' .. e.variants .. '|', '|' .. a['v'] .. '|', 1, true)
    if e.early == 'not_targeted' or (e.early == 'not_covered' and not valid)
        or (e.rules and not eval({all = e.rules})) then
      -- Out of the audience now: an earlier assignment stops collecting outcomes from here on,
      -- since the visitor is shown the control from now on.
      if valid and not a['x'] then
        a['x'] = now
        redis.call('HSET', KEYS[1], field, encode_assignment(a))
      end
      table.insert(out, 'not_targeted'); table.insert(out, ''); table.insert(out, ''); table.insert(out, '')
      table.insert(out, '')
    elseif valid then
      local decision = decision_of(a, node, e.exp)
      local changed = false
      if a['x'] then
        a['x'] = nil  -- back in the audience: outcomes count again
        changed = true
      end
      if a['pe'] and expose then
        -- Shown now by a caller that counts exposures at once: the pending one counts.
        confirm_exposure(e.totals, e.epochs, e.log, a, decision, maxlen, now, e.fade)
        changed = true
      end
      if changed then redis.call('HSET', KEYS[1], field, encode_assignment(a)) end
      table.insert(out, 'sticky'); table.insert(out, a['v']); table.insert(out, decision)
      table.insert(out, a['w'])
      if a['pe'] then table.insert(out, '1') else table.insert(out, '') end
    else
      -- New assignment (or the stored variant was removed while paused: a new exposure).
      local record = {u = seed_tag(e.seed), v = e.proposed, p = e.seg_persona, c = e.seg_channel,
                      g = e.group, t = now, d = '', w = e.propensity, ep = epoch, m = {},
                      pe = 1, vs = e.variants, s = e.serving}
      -- The visitor's value before this assignment, the covariate that lets reports remove
      -- the spread visitors bring with them (CUPED). Kept as the profile's own string (cjson
      -- would round a number to 14 digits) and left out when zero, as most visitors are.
      local cx = profile[e.covariate]
      local cx_value = tonumber(cx or '')
      if cx_value and cx_value ~= 0 then record['cx'] = cx end
      local decision = decision_of(record, node, e.exp)
      if expose then
        confirm_exposure(e.totals, e.epochs, e.log, record, decision, maxlen, now, e.fade)
      end
      redis.call('HSET', KEYS[1], field, encode_assignment(record))
      if e.group == 'h' then table.insert(out, 'holdout') else table.insert(out, 'assigned') end
      table.insert(out, e.proposed); table.insert(out, decision); table.insert(out, e.propensity)
      if expose then table.insert(out, '') else table.insert(out, '1') end
    end
  end
end

-- Known customers are kept; anonymous profiles expire after a quiet TTL.
for _, k in ipairs({1, 3}) do
  if profile['known'] == '1' or ttl <= 0 then
    redis.call('PERSIST', KEYS[k])
  elseif redis.call('EXISTS', KEYS[k]) == 1 then
    redis.call('PEXPIRE', KEYS[k], ttl)
  end
end
return out
