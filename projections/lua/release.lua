-- release(hold): the request did not run; give the held amount back. Idempotent: releasing
-- a released hold answers the same; releasing a committed one is a conflict (its spend is
-- on its way to the ledger and must stay reserved until the debit lands).
-- KEYS: bal, grants, holds, holdx.  ARGV: hold_id, record_ttl_ms.
-- Returns {status}: 1 released, 0 no such hold, 409 already committed.
local now = now_ms()
local bal, holds, holdx = KEYS[1], KEYS[3], KEYS[4]
prune(bal, holds, holdx, now)
local hold = ARGV[1]
local record = redis.call('HGET', holds, SETTLED .. hold)
if record then
  if record == 'r' then
    return {1}
  end
  return {409}
end
local held = redis.call('HGET', holds, hold)
if not held then
  return {0}
end
redis.call('HDEL', holds, hold)
redis.call('ZREM', holdx, hold)
redis.call('HINCRBY', bal, 'reserved', int(-tonumber(held)))
redis.call('HSET', holds, SETTLED .. hold, 'r')
redis.call('ZADD', holdx, now + tonumber(ARGV[2]), SETTLED .. hold)
return {1}
