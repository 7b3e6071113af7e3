-- balance(account): prune expired holds, then return the balance hash and the grants
-- hash as flat field/value arrays, in one round trip.
-- KEYS: bal, grants, holds, holdx.
prune(KEYS[1], KEYS[3], KEYS[4], now_ms())
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
