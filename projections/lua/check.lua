-- check(account, feature, cost): one round trip, read-mostly.
-- KEYS: bal, grants, holds, holdx.  ARGV: feature ('' = any), cost (micro-credits).
-- Holds only exist while `reserved` > 0 (every hold is > 0 and counted in it), so the
-- common case is one HMGET; expired holds are pruned (and the balance re-read) only when
-- something is reserved.
local v = read_balance(KEYS[1])
if v[3] and v[3] ~= '0' and prune(KEYS[1], KEYS[3], KEYS[4], now_ms()) then
  v = read_balance(KEYS[1])
end
return decide_from(v, ARGV[1], tonumber(ARGV[2]))
