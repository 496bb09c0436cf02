-- limit_release: a task that held concurrency slots finished (whatever its outcome): free its slots, and
-- make the first task parked on each limit pending at once, so it runs without waiting for its fallback time.
-- KEYS: per limit i (i = 0 .. n-1) two keys at 1 + 2i: its slots (ZSET "queue\nid") and parked (LIST)
-- ARGV[1] the task, "queue\nid"
-- ARGV[2] the asynq namespace
-- ARGV[3] now, nanoseconds (pending_since)
-- ARGV[4] wake-up channel ("" = none)
-- returns how many parked tasks were made pending
local released = 0
for i = 1, #KEYS, 2 do
  if redis.call("ZREM", KEYS[i], ARGV[1]) == 1 then
    while true do
      local parked = redis.call("LPOP", KEYS[i + 1])
      if not parked then
        break
      end
      local sep = string.find(parked, "\n", 1, true)
      local queue, id = string.sub(parked, 1, sep - 1), string.sub(parked, sep + 1)
      local prefix = ARGV[2] .. ":{" .. queue .. "}:"
      -- only a task still waiting in the scheduled set (not run, deleted or forwarded meanwhile)
      if redis.call("ZREM", prefix .. "scheduled", id) == 1 then
        redis.call("HSET", prefix .. "t:" .. id, "state", "pending", "pending_since", ARGV[3])
        if redis.call("LPUSH", prefix .. "pending", id) == 1 and ARGV[4] ~= "" then
          redis.call("PUBLISH", ARGV[4], queue)
        end
        released = released + 1
        break
      end
    end
  end
end
return released
