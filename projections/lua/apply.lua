-- Apply ledger entries of ONE account, in seq order (idempotent, gap-detecting).
-- Standalone (no lib.lua): this is the hot path of the projection.
-- KEYS: bal, grants, holds, holdx.
-- ARGV[1]: JSON array of positional entries built by projections/apply.py:
--   {seq, type, amount, balance_after, overage_after, recorded_at, period_start,
--    period_end, allocations {{grant_id, signed amount}} | false, reservation_id | false,
--    grant {id, source, amount, priority, effective_at, expires_at | false} | false,
--    terms {plan, policy, overage_limit, monthly_credits, features ('*' or JSON)} | false}
-- Grants hash values are 'remaining|amount|priority|expires_at|effective_at|source'
-- (expires_at empty = never), so a debit rewrites the leading number without JSON.
-- seq <= stored: skipped. seq > stored + 1: a gap, nothing from there on is applied.
-- Returns 'applied:skipped:stored_seq:gap_seq' (gap_seq 0 = no gap).
local bal, grants, holds, holdx = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

local function int(n)
  return string.format('%d', n)
end

local entries = cjson.decode(ARGV[1])
local stored = tonumber(redis.call('HGET', bal, 'seq') or '0')
local fresh = stored == 0
local applied, skipped, settled, gap = 0, 0, 0, 0
local last, terms = nil, nil

for _, e in ipairs(entries) do
  local seq = e[1]
  if seq <= stored then
    skipped = skipped + 1
  elseif seq ~= stored + 1 then
    gap = seq
    break
  else
    local kind, allocations, grant = e[2], e[9], e[11]
    if kind == 'GRANT_EXPIRED' or kind == 'GRANT_VOIDED' then
      if allocations then
        for _, al in ipairs(allocations) do
          redis.call('HDEL', grants, al[1])
        end
      end
      if grant then
        redis.call('HDEL', grants, grant[1])
      end
    else
      if allocations then
        -- Signed changes of remaining (drawn < 0, created > 0). The creating allocation
        -- of a new grant finds no grant yet: `grant` below creates it.
        for _, al in ipairs(allocations) do
          local raw = redis.call('HGET', grants, al[1])
          if raw then
            local cut = string.find(raw, '|', 1, true)
            local remaining = tonumber(string.sub(raw, 1, cut - 1)) + al[2]
            redis.call('HSET', grants, al[1], int(remaining) .. string.sub(raw, cut))
          end
        end
      end
      if grant then
        local expires = ''
        if grant[6] then
          expires = int(grant[6])
        end
        redis.call('HSET', grants, grant[1], int(grant[3]) .. '|' .. int(grant[3]) .. '|' ..
          int(grant[4]) .. '|' .. expires .. '|' .. int(grant[5]) .. '|' .. grant[2])
      end
    end
    local reservation = e[10]
    if reservation then
      local held = redis.call('HGET', holds, reservation)
      if held then
        redis.call('HDEL', holds, reservation)
        redis.call('ZREM', holdx, reservation)
        settled = settled + tonumber(held)
      end
    end
    if e[12] then
      terms = e[12]
    end
    last = e
    stored = seq
    applied = applied + 1
  end
end

if last then
  if fresh then
    -- A new account: block-by-default terms until a PLAN_ASSIGNED says otherwise.
    redis.call('HSET', bal, 'reserved', '0', 'policy', 'block', 'plan', '', 'features', '*',
      'overage_limit', '0', 'monthly_credits', '0')
  end
  redis.call('HSET', bal, 'seq', int(last[1]), 'available', int(last[4]),
    'overage_used', int(last[5]), 'updated_at', int(last[6]),
    'period_start', int(last[7]), 'period_end', int(last[8]))
  if terms then
    redis.call('HSET', bal, 'plan', terms[1], 'policy', terms[2],
      'overage_limit', int(terms[3]), 'monthly_credits', int(terms[4]), 'features', terms[5])
  end
  if settled ~= 0 then
    redis.call('HINCRBY', bal, 'reserved', int(-settled))
  end
end
return applied .. ':' .. skipped .. ':' .. int(stored) .. ':' .. int(gap)
