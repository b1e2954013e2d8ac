-- Shared by decide.lua, expose.lua and track.lua (prepended when the scripts are registered).
-- What a bandit learns from, per (persona, channel, variant) cell of its totals hash: sums
-- that fade with the experiment's half-life and, for exposures, one sum per delay component
-- that also fades with that component's mean delay. Each sum holds its value as of the cell's
-- 'bt' (ms) and is decayed when next touched, so no exposure history is kept. Python twin:
-- bandits.evidence.CellState (exposed / converted); the tests hold both to the same numbers.
local DELAY_MS = {120000, 900000, 5400000, 32400000, 194400000}
local KERNELS = #DELAY_MS

local function fmt(x) return string.format('%.17g', x) end

-- fade: decay rate per ms ('' = this experiment keeps no learning sums). exposures: 1 when a
-- visitor is exposed now; conversions, value, square: the outcome of a visitor exposed at
-- exposed_ms, weighted by how much that exposure has faded.
local function learn(totals, cell, now, fade, exposed_ms, exposures, conversions, value, square)
  if fade == '' then return end
  local rate = tonumber(fade)
  local names = {'bt|' .. cell, 'bn|' .. cell}
  for j = 1, KERNELS do table.insert(names, 'bw' .. j .. '|' .. cell) end
  for _, prefix in ipairs({'bc|', 'bs|', 'bq|'}) do table.insert(names, prefix .. cell) end
  local v = redis.call('HMGET', totals, unpack(names))
  local t = tonumber(now)
  local at = tonumber(v[1] or '') or t
  local dt = t - at
  if dt < 0 then dt = 0 end  -- another host's clock ran ahead: never decay backwards
  if at > t then t = at end
  local f = math.exp(-rate * dt)
  local out = {names[1], string.format('%d', t)}
  table.insert(out, names[2]); table.insert(out, fmt((tonumber(v[2] or '0')) * f + exposures))
  for j = 1, KERNELS do
    local g = math.exp(-(rate + 1 / DELAY_MS[j]) * dt)
    table.insert(out, names[2 + j])
    table.insert(out, fmt((tonumber(v[2 + j] or '0')) * g + exposures))
  end
  local age = tonumber(now) - exposed_ms
  if age < 0 then age = 0 end
  local w = math.exp(-rate * age)
  local add = {conversions, value, square}
  for j = 1, 3 do
    local i = 2 + KERNELS + j
    table.insert(out, names[i])
    table.insert(out, fmt((tonumber(v[i] or '0')) * f + w * add[j]))
  end
  redis.call('HSET', totals, unpack(out))
end

-- The delay of a first conversion, for the delay model: a count and, per component, the sum
-- of exp(-delay / mean). Python twin: bandits.evidence.DelayStats.observed.
local function learn_delay(totals, fade, delay_ms)
  if fade == '' then return end
  if delay_ms < 0 then delay_ms = 0 end
  redis.call('HINCRBYFLOAT', totals, 'bdk', 1)
  for j = 1, KERNELS do
    redis.call('HINCRBYFLOAT', totals, 'bd' .. j, fmt(math.exp(-delay_ms / DELAY_MS[j])))
  end
end
