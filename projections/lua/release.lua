-- release(hold): the request did not run; give the held amount back.
-- KEYS: bal, grants, holds, holdx.  ARGV: hold_id.  Returns {found (0/1), reserved_after}.
prune(KEYS[1], KEYS[3], KEYS[4], now_ms())
local held = redis.call('HGET', KEYS[3], ARGV[1])
if not held then
  return {0, int(tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0'))}
end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
local reserved = redis.call('HINCRBY', KEYS[1], 'reserved', int(-tonumber(held)))
return {1, int(reserved)}
