-- Apply ledger entries of ONE account, in seq order (idempotent, gap-detecting).
-- Standalone (no lib.lua): this is the hot path of the projection. No JSON on the common
-- path: every field arrives as its own ARGV string and pass-through numbers (balances,
-- timestamps, seq) are written back exactly as Python formatted them (%d), unparsed.
-- KEYS: bal, grants, holds, holdx.
-- ARGV: the entries back to back, each built by projections/apply.py:entry_args as
--   head: 'seq,type,balance_after,overage_after,recorded_at,occurred_at,period_start,
--          period_end,n'
--   reservation_id | ''
--   grant JSON {id, source, amount, priority, effective_at, expires_at | false} | ''
--   terms JSON {plan, policy, overage_limit, monthly_credits, features ('*' or JSON)} | ''
--   then n allocation pairs: grant_id, signed amount
-- Grants hash values are 'remaining|amount|priority|expires_at|effective_at|source'
-- (expires_at empty = never), so a debit rewrites the leading number without JSON.
-- seq <= stored: skipped. seq > stored + 1: a gap, nothing from there on is applied.
-- Spent grants: a grant with nothing left gets no GRANT_EXPIRED entry when it expires, so
-- after each applied entry the grants with remaining 0 and expires_at <= that entry's
-- occurred_at (event time, never the wall clock: a replay must give the same result) are
-- deleted. The balance field `spent_expiry` (the earliest expires_at among spent grants,
-- '' = none; a lower bound, rescanned when reached) keeps the scan off the common path.
-- Returns 'applied:skipped:stored_seq:gap_seq' (gap_seq 0 = no gap).
local bal, grants, holds, holdx = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local HEAD = '^(%d+),([^,]+),(-?%d+),(-?%d+),(-?%d+),(-?%d+),(-?%d+),(-?%d+),(%d+)$'
local EXPIRES = '^[^|]*|[^|]*|[^|]*|(-?%d*)|'
local NONE = math.huge

local function int(n)
  return string.format('%d', n)
end

-- Fields that rarely change are read here so the final HSET can skip them: HSET on the
-- listpack-encoded balance hash costs per field written, and most entries only move
-- seq, available and updated_at.
local cur = redis.call('HMGET', bal, 'seq', 'overage_used', 'period_start', 'period_end',
  'spent_expiry')
local stored = tonumber(cur[1] or '0')
local fresh = stored == 0
-- spent_expiry: NONE when no spent grant expires; missing on an account written before the
-- field existed: scan at its first applied entry.
local spent_expiry = NONE
if cur[5] then
  spent_expiry = tonumber(cur[5]) or NONE
elseif not fresh then
  spent_expiry = -NONE
end
local spent_start = spent_expiry

-- A grant reached remaining 0: its expiry (from its hash value) may come first.
local function note_spent(raw)
  local expires = string.match(raw, EXPIRES)
  if expires and expires ~= '' and tonumber(expires) < spent_expiry then
    spent_expiry = tonumber(expires)
  end
end

-- Delete spent grants expired at event time `at`; recompute spent_expiry from the rest.
local function drop_spent(at)
  local all = redis.call('HGETALL', grants)
  local nxt = NONE
  for k = 1, #all, 2 do
    local raw = all[k + 1]
    local expires = string.match(raw, EXPIRES)
    if expires and expires ~= '' and tonumber(string.match(raw, '^(-?%d+)|')) <= 0 then
      local e = tonumber(expires)
      if e <= at then
        redis.call('HDEL', grants, all[k])
      elseif e < nxt then
        nxt = e
      end
    end
  end
  spent_expiry = nxt
end

local applied, skipped, settled, gap = 0, 0, 0, 0
local last, terms = nil, nil
local l_available, l_overage, l_updated
-- The account's period only moves forward: a late usage entry or a reversal carries the
-- earlier period it belongs to, which is not the account's current one.
local l_pstart, l_pend = cur[3], cur[4]

local i, n = 1, #ARGV
while i <= n do
  local seq_s, kind, available, overage, updated, occurred, pstart, pend, nalloc =
    string.match(ARGV[i], HEAD)
  if not seq_s then
    return redis.error_reply('apply: malformed entry head ' .. ARGV[i])
  end
  local seq = tonumber(seq_s)
  local first_alloc = i + 4
  local next_entry = first_alloc + 2 * tonumber(nalloc)
  if seq <= stored then
    skipped = skipped + 1
  elseif seq ~= stored + 1 then
    gap = seq
    break
  else
    local grant = ARGV[i + 2]
    if kind == 'GRANT_EXPIRED' or kind == 'GRANT_VOIDED' then
      for j = first_alloc, next_entry - 1, 2 do
        redis.call('HDEL', grants, ARGV[j])
      end
      if grant ~= '' then
        redis.call('HDEL', grants, cjson.decode(grant)[1])
      end
    else
      -- Signed changes of remaining (drawn < 0, created > 0). The creating allocation
      -- of a new grant finds no grant yet: `grant` below creates it.
      for j = first_alloc, next_entry - 1, 2 do
        local raw = redis.call('HGET', grants, ARGV[j])
        if raw then
          local cut = string.find(raw, '|', 1, true)
          local remaining = tonumber(string.sub(raw, 1, cut - 1)) + tonumber(ARGV[j + 1])
          redis.call('HSET', grants, ARGV[j], int(remaining) .. string.sub(raw, cut))
          if remaining <= 0 then
            note_spent(raw)
          end
        end
      end
      if grant ~= '' then
        local g = cjson.decode(grant)
        local expires = ''
        if g[6] then
          expires = int(g[6])
        end
        local raw = int(g[3]) .. '|' .. int(g[3]) .. '|' .. int(g[4]) .. '|' .. expires ..
          '|' .. int(g[5]) .. '|' .. g[2]
        redis.call('HSET', grants, g[1], raw)
        if g[3] <= 0 then
          note_spent(raw)
        end
      end
    end
    if spent_expiry ~= NONE and tonumber(occurred) >= spent_expiry then
      drop_spent(tonumber(occurred))
    end
    local reservation = ARGV[i + 1]
    -- 's:<hold>' is a settlement record, never a hold: a reservation id shaped like one is
    -- left alone (it settles nothing).
    if reservation ~= '' and string.sub(reservation, 1, 2) ~= 's:' then
      local held = redis.call('HGET', holds, reservation)
      if held then
        redis.call('HDEL', holds, reservation)
        redis.call('ZREM', holdx, reservation)
        settled = settled + tonumber(held)
      end
    end
    if ARGV[i + 3] ~= '' then
      terms = ARGV[i + 3]
    end
    last = seq_s
    l_available, l_overage, l_updated = available, overage, updated
    if not l_pend or tonumber(pend) >= tonumber(l_pend) then
      l_pstart, l_pend = pstart, pend
    end
    stored = seq
    applied = applied + 1
  end
  i = next_entry
end

if last then
  if fresh then
    -- A new account: block-by-default terms until a PLAN_ASSIGNED says otherwise. Holds that
    -- outlived a lost balance hash (a rebuild or self-heal keeps them) stay reserved.
    local held = 0
    local flat = redis.call('HGETALL', holds)
    for h = 1, #flat, 2 do
      if string.sub(flat[h], 1, 2) ~= 's:' then
        held = held + tonumber(flat[h + 1])
      end
    end
    redis.call('HSET', bal, 'reserved', int(held), 'policy', 'block', 'plan', '', 'features',
      '*', 'overage_limit', '0', 'monthly_credits', '0')
    settled = 0  -- the holds this call settled are already gone from `held`
  end
  if l_overage == cur[2] and l_pstart == cur[3] and l_pend == cur[4] then
    redis.call('HSET', bal, 'seq', last, 'available', l_available, 'updated_at', l_updated)
  else
    redis.call('HSET', bal, 'seq', last, 'available', l_available, 'overage_used', l_overage,
      'updated_at', l_updated, 'period_start', l_pstart, 'period_end', l_pend)
  end
  if terms then
    local t = cjson.decode(terms)
    redis.call('HSET', bal, 'plan', t[1], 'policy', t[2],
      'overage_limit', int(t[3]), 'monthly_credits', int(t[4]), 'features', t[5])
  end
  if settled ~= 0 then
    redis.call('HINCRBY', bal, 'reserved', int(-settled))
  end
  if fresh or spent_expiry ~= spent_start then
    local value = ''
    if spent_expiry ~= NONE then
      value = int(spent_expiry)
    end
    redis.call('HSET', bal, 'spent_expiry', value)
  end
end
return applied .. ':' .. skipped .. ':' .. int(stored) .. ':' .. int(gap)
