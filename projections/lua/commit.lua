-- commit(hold, actual): the request ran and cost `actual`. The hold shrinks (or grows)
-- to `actual` and stays reserved until the projection applies the ledger debit that
-- carries this reservation_id (or until settle_ttl passes), so there is no window in
-- which the spend is neither reserved nor debited. actual = 0 releases at once.
-- KEYS: bal, grants, holds, holdx.  ARGV: hold_id, actual, settle_ttl_ms.
-- Returns {found (0/1), reserved_after}.
local now = now_ms()
prune(KEYS[1], KEYS[3], KEYS[4], now)
local held = redis.call('HGET', KEYS[3], ARGV[1])
if not held then
  return {0, int(tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0'))}
end
local actual = tonumber(ARGV[2])
local delta = actual - tonumber(held)
if actual <= 0 then
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
else
  redis.call('HSET', KEYS[3], ARGV[1], int(actual))
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[3]), ARGV[1])
end
local reserved = redis.call('HINCRBY', KEYS[1], 'reserved', int(delta))
return {1, int(reserved)}
