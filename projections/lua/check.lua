-- check(account, feature, cost): one round trip, prunes expired holds first.
-- KEYS: bal, grants, holds, holdx.  ARGV: feature ('' = any), cost (micro-credits).
prune(KEYS[1], KEYS[3], KEYS[4], now_ms())
return decide(KEYS[1], ARGV[1], tonumber(ARGV[2]))
