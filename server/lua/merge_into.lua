-- Merge a losing profile's state into the winner (winner's shard slot), exactly once.
-- KEYS[1] profile, KEYS[2] attributes, KEYS[3] assignments, KEYS[4] dedupe zset, KEYS[5] linked
-- ids of the winner. ARGV[1] loser id, ARGV[2] JSON {profile, attrs, assignments, events, ids}
-- with every value as the string Redis held.
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

for field, value in pairs(l) do
  local mine = w[field]
  if field == 'first_seen' or field == 'fp' then
    if mine == nil or num(value) < num(mine) then redis.call('HSET', KEYS[1], field, value) end
  elseif field == 'last_seen' or field == 'lp' or string.sub(field, 1, 3) == 'ch:' then
    if mine == nil or num(value) > num(mine) then redis.call('HSET', KEYS[1], field, value) end
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
for name, value in pairs(d['attrs']) do
  if loser_newer or redis.call('HEXISTS', KEYS[2], name) == 0 then
    redis.call('HSET', KEYS[2], name, value)
  end
end
for exp, record in pairs(d['assignments']) do redis.call('HSETNX', KEYS[3], exp, record) end
for _, pair in ipairs(d['events']) do redis.call('ZADD', KEYS[4], 'NX', pair[2], pair[1]) end
for id, kind in pairs(d['ids']) do redis.call('HSET', KEYS[5], id, kind) end
return 1
