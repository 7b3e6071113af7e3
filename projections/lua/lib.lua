-- Shared helpers, prepended to every script by projections/scripts.py.
-- Numbers: Lua numbers are doubles, exact for integers below 2^53 micro-credits
-- (~9 billion credits). Integers are written back with %d, never tostring (%.14g).

local function int(n)
  return string.format('%d', n)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The holds hash has two kinds of field:
--   <hold_id>   -> amount held (every one is counted in the balance's `reserved`);
--   s:<hold_id> -> how the hold was settled: 'r' (released) or 'c:<actual>:<committed>',
--                  kept an hour so a retried commit or release gets the same answer.
-- holdx scores both by when they lapse.
local SETTLED = 's:'
-- Most a balance field may hold: Lua numbers are exact below 2^53, and `reserved` must never
-- overflow Redis's 64-bit HINCRBY, however many holds an unlimited account makes.
local MAX_AMOUNT = 9007199254740991

local function is_record(id)
  return string.sub(id, 1, 2) == SETTLED
end

-- Drop holds whose TTL passed and give their amount back to `reserved`, and settlement
-- records that lapsed. Every check/reserve/commit/balance script calls this first (check
-- only when something is reserved), so an expired hold never blocks spending even though
-- Redis key expiry is not used for holds. Returns true when it removed anything.
local function prune(bal, holds, holdx, now)
  local expired = redis.call('ZRANGEBYSCORE', holdx, '-inf', now, 'LIMIT', 0, 1000)
  if #expired == 0 then
    return false
  end
  local total = 0
  for _, id in ipairs(expired) do
    local amount = redis.call('HGET', holds, id)
    if amount then
      if not is_record(id) then
        total = total + tonumber(amount)
      end
      redis.call('HDEL', holds, id)
    end
  end
  redis.call('ZREM', holdx, unpack(expired))
  if total ~= 0 then
    redis.call('HINCRBY', bal, 'reserved', int(-total))
  end
  return true
end

-- Spendable amount: available - reserved + overage headroom.
-- Returns (spendable, unlimited).
local function spendable(available, reserved, overage_used, overage_limit, policy)
  local base = available - reserved
  if policy == 'unlimited' then
    return base, true
  end
  if policy == 'allow' then
    local headroom = overage_limit - overage_used
    if headroom < 0 then
      headroom = 0
    end
    return base + headroom, false
  end
  return base, false
end

local function feature_allowed(features, feature)
  if feature == '' or features == false or features == nil or features == '*' then
    return true
  end
  local ok, list = pcall(cjson.decode, features)
  if not ok or type(list) ~= 'table' then
    return false
  end
  for _, f in ipairs(list) do
    if f == feature then
      return true
    end
  end
  return false
end

-- The balance fields a decision needs, in one HMGET (v[3] is `reserved`).
local function read_balance(bal)
  return redis.call('HMGET', bal, 'seq', 'available', 'reserved', 'overage_used',
    'overage_limit', 'policy', 'features', 'plan')
end

-- Decide whether `cost` fits the balance `v` (from read_balance). Returns the reply array
-- {allowed, reason, available, reserved, overage_used, overage_limit, policy,
--  spendable, unlimited, seq, plan}.
local function decide_from(v, feature, cost)
  if not v[1] then
    return {0, 'unknown_account', 0, 0, 0, 0, '', 0, 0, 0, ''}
  end
  local available = tonumber(v[2]) or 0
  local reserved = tonumber(v[3]) or 0
  local overage_used = tonumber(v[4]) or 0
  local overage_limit = tonumber(v[5]) or 0
  local policy = v[6] or 'block'
  local plan = v[8] or ''
  local room, unlimited = spendable(available, reserved, overage_used, overage_limit, policy)
  local reply = {0, 'ok', int(available), int(reserved), int(overage_used), int(overage_limit),
    policy, int(room), unlimited and 1 or 0, v[1], plan}
  if not feature_allowed(v[7], feature) then
    reply[2] = 'feature_not_in_plan'
    return reply
  end
  if unlimited or room >= cost then
    reply[1] = 1
  else
    reply[2] = 'insufficient_credits'
  end
  return reply
end

-- Read the balance and decide whether `cost` fits (see decide_from).
local function decide(bal, feature, cost)
  return decide_from(read_balance(bal), feature, cost)
end
