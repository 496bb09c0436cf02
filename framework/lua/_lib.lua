-- Shared prelude, prepended to every script by scripts.py. Defines local helpers only.

-- bump(total, day, minute, n, day_expireat, minute_ttl)
-- INCRBY the daily counter (EXPIREAT set when it is created), the per-minute counter (framework's own
-- key, expires) and the all-time total, which restarts at n instead of overflowing MaxInt64.
local function bump(total, day, minute, n, day_expireat, minute_ttl)
  if redis.call("INCRBY", day, n) == n then
    redis.call("EXPIREAT", day, day_expireat)
  end
  if minute ~= "" and redis.call("INCRBY", minute, n) == n then
    redis.call("EXPIRE", minute, minute_ttl)
  end
  local ok = pcall(redis.call, "INCRBY", total, n)
  if not ok then
    redis.call("SET", total, n)
  end
end

-- release_unique(unique_key, id): delete the uniqueness lock only when this task holds it.
local function release_unique(unique_key, id)
  if unique_key ~= "" and redis.call("GET", unique_key) == id then
    redis.call("DEL", unique_key)
  end
end
