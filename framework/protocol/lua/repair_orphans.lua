-- repair_orphans: give a lease to active tasks that have none (left by a crash between steps in other
-- clients), so the lease-expiry recovery picks them up.
-- KEYS[1] active <ns>:{q}:active
-- KEYS[2] lease  <ns>:{q}:lease
-- ARGV[1] lease score to give them (Unix s; already expired)
-- returns the number of tasks repaired
local ids = redis.call("LRANGE", KEYS[1], 0, -1)
local n = 0
for _, id in ipairs(ids) do
  if not redis.call("ZSCORE", KEYS[2], id) then
    redis.call("ZADD", KEYS[2], ARGV[1], id)
    n = n + 1
  end
end
return n
