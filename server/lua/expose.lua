-- Confirm exposures the visitor really saw (the browser SDK calls this after rendering), inside
-- the visitor's shard slot. Confirming twice counts once.
-- KEYS[1] visitor hash, KEYS[2] merge lock, then per entry: totals counters hash, epoch
-- counters hash, log stream.
-- ARGV[1] now (ms), [2] log MAXLEN, [3] number of entries N, [4] the visitor's node (it names
-- the decisions, see decision_of), then 4 values per entry:
-- experiment, seed, decision id, learning decay rate per ms ('' = none).
-- Returns {exposed, duplicates, ignored}, or without writing anything {'!alias', canonical}
-- or {'!busy'}.
local now = ARGV[1]
local maxlen = ARGV[2]
local n = tonumber(ARGV[3])
local node = ARGV[4]

local alias = redis.call('HGET', KEYS[1], 'alias')
if alias then return {'!alias', alias} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'!busy'} end

local exposed, duplicates, ignored = 0, 0, 0
for i = 0, n - 1 do
  local b = 5 + i * 4
  local exp, seed, decision, fade = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local raw = redis.call('HGET', KEYS[1], 'x:' .. exp)
  local a = nil
  if raw then a = decode_assignment(raw) end
  if a == nil or a['u'] ~= seed_tag(seed) or decision_of(a, node, exp) ~= decision then
    ignored = ignored + 1
  elseif not a['pe'] then
    duplicates = duplicates + 1
  else
    confirm_exposure(KEYS[3 + 3 * i], KEYS[4 + 3 * i], KEYS[5 + 3 * i], a, decision, maxlen, now,
                     fade)
    redis.call('HSET', KEYS[1], 'x:' .. exp, encode_assignment(a))
    exposed = exposed + 1
  end
end
return {exposed, duplicates, ignored}
