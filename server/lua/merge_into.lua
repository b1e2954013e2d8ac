-- Merge a losing profile's state into the winner (winner's shard slot), exactly once.
-- KEYS[1] visitor hash, KEYS[2] older counted event ids (zset), KEYS[3] linked ids of the
-- winner. ARGV[1] loser id, ARGV[2] JSON {profile, attrs, assignments, events, ids} with every
-- value as the string Redis held (attribute names, experiments and event ids without their
-- field prefix; assignment records with their decision ids written out), ARGV[3] most
-- attributes a profile holds, ARGV[4] most channels a profile records (a merge keeps both
-- caps), ARGV[5] how long the event ids are kept (ms). The loser's event ids join the
-- winner's older ones, so that the visitor hash keeps its bound.
-- Policy: the winner's assignment of an experiment wins, else the loser's carries over;
-- attributes of the more recently seen profile win; counts and lifecycle facts are combined.
-- Returns 1 when merged, 0 when this loser had been merged already (a retried merge).
-- The marker names the loser's life (its first_seen): an id that expired and came back is a
-- new profile and merges again.
local d = cjson.decode(ARGV[2])
local life = d['profile']['first_seen'] or ''
if redis.call('HSETNX', KEYS[1], 'merged:' .. ARGV[1] .. ':' .. life, '1') == 0 then return 0 end
local w = {}
local flat = redis.call('HGETALL', KEYS[1])
for j = 1, #flat, 2 do w[flat[j]] = flat[j + 1] end
local l = d['profile']

local function num(x) return tonumber(x or '0') or 0 end
local loser_newer = num(l['last_seen']) > num(w['last_seen'])

-- The first purchase's value goes with the first purchase (the spend model leaves it out).
local loser_bought_first = l['fp'] ~= nil and (w['fp'] == nil or num(l['fp']) < num(w['fp']))
if loser_bought_first and l['fv'] ~= nil then redis.call('HSET', KEYS[1], 'fv', l['fv']) end

for field, value in pairs(l) do
  local mine = w[field]
  if field == 'first_seen' or field == 'fp' then
    if mine == nil or num(value) < num(mine) then redis.call('HSET', KEYS[1], field, value) end
  elseif field == 'last_seen' or field == 'lp' then
    if mine == nil or num(value) > num(mine) then redis.call('HSET', KEYS[1], field, value) end
  elseif string.sub(field, 1, 3) == 'ch:' then
    if mine == nil or num(value) > num(mine) then
      redis.call('HSET', KEYS[1], field, value)
      w[field] = value  -- the trim below ranks channels by their newest time
    end
  elseif field == 'pc' then
    redis.call('HINCRBY', KEYS[1], 'pc', value)
  elseif field == 'ltv' then
    redis.call('HINCRBYFLOAT', KEYS[1], 'ltv', value)
  elseif field == 'known' then
    if value == '1' then redis.call('HSET', KEYS[1], 'known', '1') end
  elseif field == 'cid' or field == 'eh' then
    if mine == nil then redis.call('HSET', KEYS[1], field, value) end
  end
end
-- Channels: keep the most recently seen ones within the cap.
local max_channels = tonumber(ARGV[4])
local channels = {}
for field, value in pairs(w) do
  if string.sub(field, 1, 3) == 'ch:' then table.insert(channels, {field, num(value)}) end
end
if #channels > max_channels then
  table.sort(channels, function(x, y) return x[2] > y[2] or (x[2] == y[2] and x[1] < y[1]) end)
  for i = max_channels + 1, #channels do redis.call('HDEL', KEYS[1], channels[i][1]) end
end
-- Attributes: the more recently seen profile wins; within the cap, its own attributes are
-- kept whole and the other's fill the room left (in name order, so the result is stable).
local max_attrs = tonumber(ARGV[3])
local names = {}
for name, _ in pairs(d['attrs']) do table.insert(names, name) end
table.sort(names)
local count = 0
for field, _ in pairs(w) do
  if string.sub(field, 1, 2) == 'a:' then count = count + 1 end
end
if loser_newer then
  for _, name in ipairs(names) do
    if w['a:' .. name] == nil then count = count + 1 end
    redis.call('HSET', KEYS[1], 'a:' .. name, d['attrs'][name])
  end
  if count > max_attrs then
    local extra = {}
    for field, _ in pairs(w) do
      local name = string.sub(field, 3)
      if string.sub(field, 1, 2) == 'a:' and d['attrs'][name] == nil then
        table.insert(extra, name)
      end
    end
    table.sort(extra)
    for i = #extra, 1, -1 do
      if count <= max_attrs then break end
      redis.call('HDEL', KEYS[1], 'a:' .. extra[i])
      count = count - 1
    end
  end
else
  for _, name in ipairs(names) do
    if w['a:' .. name] == nil and count < max_attrs then
      redis.call('HSET', KEYS[1], 'a:' .. name, d['attrs'][name])
      count = count + 1
    end
  end
end
for exp, record in pairs(d['assignments']) do redis.call('HSETNX', KEYS[1], 'x:' .. exp, record) end
for _, pair in ipairs(d['events']) do redis.call('ZADD', KEYS[2], 'NX', pair[2], pair[1]) end
if #d['events'] > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
for id, kind in pairs(d['ids']) do redis.call('HSET', KEYS[3], id, kind) end
return 1
