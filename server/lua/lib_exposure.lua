-- Shared by decide.lua and expose.lua (prepended after lib_learning when registered).
-- An exposure is counted when the visitor really saw the assignment's variant: at decide time
-- for one-call callers, or when the browser SDK confirms what it rendered. A pending record
-- carries 'pe' plus the variants ('vs') and serving probabilities ('s') of its allocation.
-- fade: the experiment's learning decay rate per ms ('' for an experiment without learning).
local function confirm_exposure(totals, epochs, log, a, decision, maxlen, now, fade)
  local cell = a['g'] .. '|' .. a['p'] .. '|' .. a['c']
  redis.call('HINCRBY', totals, 'n|' .. cell .. '|' .. a['v'], 1)
  learn(totals, a['p'] .. '|' .. a['c'] .. '|' .. a['v'], now, fade, tonumber(now), 1, 0, 0, 0)
  redis.call('HINCRBY', epochs, 'n|' .. cell .. '|' .. a['v'] .. '|' .. a['ep'], 1)
  -- The pre-exposure covariate of the exposed visitors (sum and sum of squares), counted with
  -- the exposure so that a pending assignment adds it only once it is seen. Only reports
  -- read it, so only the epoch hash holds it.
  local cx = tonumber(a['cx'] or '')
  if cx and cx ~= 0 then
    local tail = '|' .. cell .. '|' .. a['v'] .. '|' .. a['ep']
    redis.call('HINCRBYFLOAT', epochs, 'x' .. tail, string.format('%.17g', cx))
    redis.call('HINCRBYFLOAT', epochs, 'xx' .. tail, string.format('%.17g', cx * cx))
  end
  -- Expected exposures: the serving probability of every variant, for the ratio check.
  local serving = {}
  for q in string.gmatch(a['s'], '([^,]+)') do table.insert(serving, q) end
  local j = 0
  for variant in string.gmatch(a['vs'], '([^|]+)') do
    j = j + 1
    redis.call('HINCRBYFLOAT', epochs, 'e|' .. cell .. '|' .. variant .. '|' .. a['ep'], serving[j])
  end
  redis.call('XADD', log, 'MAXLEN', '~', maxlen, '*', 'k', 'd', 'd', decision, 'p', a['p'],
             'c', a['c'], 'v', a['v'], 'g', a['g'], 'w', a['w'], 'ep', a['ep'], 't', now)
  -- Outcomes count from the decision on (the page showed it right away): a confirmation
  -- that was queued or retried must not lose the purchases made meanwhile.
  a['pe'] = nil
  a['vs'] = nil
  a['s'] = nil
end

