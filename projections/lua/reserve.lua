-- reserve(account, amount, ttl): an atomic hold. Check and hold happen in one script,
-- so concurrent reserves can never overspend.
-- KEYS: bal, grants, holds, holdx.  ARGV: hold_id, amount, ttl_ms, feature ('' = any).
local now = now_ms()
prune(KEYS[1], KEYS[3], KEYS[4], now)
local amount = tonumber(ARGV[2])
local reply = decide(KEYS[1], ARGV[4], amount)
if reply[1] == 1 and tonumber(reply[4]) + amount > MAX_AMOUNT then
  reply[1] = 0  -- even an unlimited account cannot hold more than the counter can count
  reply[2] = 'insufficient_credits'
end
if reply[1] == 1 then
  if redis.call('HEXISTS', KEYS[3], SETTLED .. ARGV[1]) == 1
      or redis.call('HSETNX', KEYS[3], ARGV[1], int(amount)) == 0 then
    return {0, 'duplicate_hold_id', 0, 0, 0, 0, '', 0, 0, 0, ''}
  end
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[3]), ARGV[1])
  local reserved = redis.call('HINCRBY', KEYS[1], 'reserved', int(amount))
  reply[4] = int(reserved)
  if reply[9] == 0 then
    reply[8] = int(tonumber(reply[8]) - amount)
  end
end
return reply
