-- balance(account): prune expired holds, then return the balance hash, the grants hash
-- (flat field/value arrays) and Redis's clock in ms, in one round trip. The caller hides
-- spent grants (remaining 0) whose expires_at <= that clock: they are deleted by the apply
-- script only once an entry's event time passes their expiry, which for an idle account
-- may be much later. Reading never deletes: the projection stays a function of the ledger.
-- It also returns what a check would allow now (the one spend rule, lib's `spendable`), so
-- no reader re-implements it: {bal, grants, now, spendable, unlimited}.
-- KEYS: bal, grants, holds, holdx.
local now = now_ms()
prune(KEYS[1], KEYS[3], KEYS[4], now)
local v = read_balance(KEYS[1])
local room, unlimited = spendable(tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0,
  tonumber(v[5]) or 0, v[6] or 'block')
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), now, int(room),
  unlimited and 1 or 0}
