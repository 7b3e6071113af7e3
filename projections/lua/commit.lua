-- commit(hold, actual): the request ran and cost `actual`. The hold becomes the amount it
-- keeps reserved (`committed`) until the projection applies the ledger debit that carries
-- this reservation_id (or until settle_ttl passes), so there is no window in which the spend
-- is neither reserved nor debited. committed = 0 releases at once.
--
-- Strict rules (README, "Holds"):
--   * an actual above the hold is kept only up to what the account can spend (its own hold
--     plus its spendable room); the rest is `held_back` and reported, never reserved;
--   * idempotent by hold id: the same actual again gives the same answer, a different one is
--     a conflict, and so is a commit after a release.
-- KEYS: bal, grants, holds, holdx.  ARGV: hold_id, actual, settle_ttl_ms, record_ttl_ms.
-- Returns {status, actual, committed}: status 1 committed, 0 no such hold, 409 conflict
-- (then actual/committed are the recorded ones, or -1/-1 for a released hold).
local now = now_ms()
local bal, holds, holdx = KEYS[1], KEYS[3], KEYS[4]
prune(bal, holds, holdx, now)
local hold = ARGV[1]
local actual = tonumber(ARGV[2])
local record = redis.call('HGET', holds, SETTLED .. hold)
if record then
  if record == 'r' then
    return {409, -1, -1}
  end
  local _, _, was, kept = string.find(record, '^c:(%d+):(%d+)$')
  if tonumber(was) == actual then
    return {1, was, kept}
  end
  return {409, was, kept}
end
local held = redis.call('HGET', holds, hold)
if not held then
  return {0, 0, 0}
end
held = tonumber(held)
local committed = actual
if actual > held then
  local v = read_balance(bal)
  local room, unlimited = spendable(tonumber(v[2]) or 0, (tonumber(v[3]) or 0) - held,
    tonumber(v[4]) or 0, tonumber(v[5]) or 0, v[6] or 'block')
  if not unlimited then
    committed = math.min(actual, math.max(held, room))
  end
  local reserved = tonumber(v[3]) or 0
  committed = math.min(committed, held + math.max(0, MAX_AMOUNT - reserved))
end
if committed <= 0 then
  redis.call('HDEL', holds, hold)
  redis.call('ZREM', holdx, hold)
else
  redis.call('HSET', holds, hold, int(committed))
  redis.call('ZADD', holdx, now + tonumber(ARGV[3]), hold)
end
redis.call('HINCRBY', bal, 'reserved', int(committed - held))
redis.call('HSET', holds, SETTLED .. hold, 'c:' .. int(actual) .. ':' .. int(committed))
redis.call('ZADD', holdx, now + tonumber(ARGV[4]), SETTLED .. hold)
return {1, int(actual), int(committed)}
