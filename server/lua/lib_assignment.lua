-- Shared by decide.lua, expose.lua and track.lua (prepended when the scripts are registered).
-- The assignment record, stored in the visitor hash under 'x:<experiment>'. Python twin:
-- server.stores.assignment_record; tests/golden/assignment_records.json holds both to the
-- same bytes. One line of space-separated fields, in this order (an empty field is empty):
--   seed tag (the experiment seed's first 8 characters), variant, group (p|h), persona ('' for
--   'default'), channel, epoch, assigned at (ms in base 36), decision id ('' when derived,
--   see decision_of), propensity, outcomes ('metric|k=total' joined by ',', k the kind's
--   first letter), covariate 'cx' (the profile's string, '' when zero), left the audience at
--   (ms, '' while inside), then only while the exposure waits for confirmation: the
--   variants ('|'-joined) and serving probabilities (','-joined). Without those, trailing
--   empty fields are left out.
-- Why not JSON: this is most of a visitor's memory. About 55 bytes instead of 190 keep a
-- visitor hash small and, on a Redis tuned as the README says, listpack-encoded.
local SEED_TAG = 8

local function seed_tag(seed) return string.sub(seed, 1, SEED_TAG) end

local function split(text, sep)
  local out, from = {}, 1
  while true do
    local at = string.find(text, sep, from, true)
    if not at then table.insert(out, string.sub(text, from)); return out end
    table.insert(out, string.sub(text, from, at - 1))
    from = at + 1
  end
end

local function nonempty(s) if s == nil or s == '' then return nil end return s end

-- The decision id of a record. A decision is one (visitor, experiment incarnation, moment), so
-- its id is derived from those and never stored; only a record a merge carried over from
-- another id keeps its id written out ('d'), since its visitor id is no longer the key's.
local function decision_of(a, node, exp)
  if a.d ~= '' then return a.d end
  return string.sub(redis.sha1hex(node .. '\n' .. exp .. '\n' .. a.u .. '\n' .. a.t), 1, 32)
end

-- Base 36 (0-9a-z) for the assignment time: 8 characters where decimal milliseconds take 13.
local DIGITS = '0123456789abcdefghijklmnopqrstuvwxyz'
local function base36(ms)
  local n, out = tonumber(ms), ''
  repeat
    local digit = n % 36
    out = string.sub(DIGITS, digit + 1, digit + 1) .. out
    n = (n - digit) / 36
  until n == 0
  return out
end

-- The record as a table: u v g p c ep t d w m {['metric|k'] = total} [cx] [x] [pe vs s];
-- t is decimal ms (as everywhere else), d is '' for a derived id (decision_of).
local function decode_assignment(raw)
  local f = split(raw, ' ')
  local persona = f[4]
  if persona == '' then persona = 'default' end
  local a = {u = f[1], v = f[2], g = f[3], p = persona, c = f[5], ep = f[6],
             t = string.format('%d', tonumber(f[7], 36)), d = f[8], w = f[9],
             cx = nonempty(f[11]), x = nonempty(f[12]), m = {}}
  if f[10] ~= nil and f[10] ~= '' then
    for _, pair in ipairs(split(f[10], ',')) do
      local eq = string.find(pair, '=', 1, true)
      a.m[string.sub(pair, 1, eq - 1)] = string.sub(pair, eq + 1)
    end
  end
  if f[13] ~= nil then a.pe = 1; a.vs = f[13]; a.s = f[14] end
  return a
end

local function encode_assignment(a)
  local metrics = {}
  for key, total in pairs(a.m) do table.insert(metrics, key .. '=' .. total) end
  table.sort(metrics)  -- one record, one spelling
  local persona = a.p
  if persona == 'default' then persona = '' end
  local f = {a.u, a.v, a.g, persona, a.c, a.ep, base36(a.t), a.d, a.w,
             table.concat(metrics, ','), a.cx or '', a.x or ''}
  if a.pe then
    table.insert(f, a.vs); table.insert(f, a.s)
  else
    while f[#f] == '' do table.remove(f) end  -- trailing empty fields are left out
  end
  return table.concat(f, ' ')
end
