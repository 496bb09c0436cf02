-- limit_release: a task that held concurrency slots finished (whatever its outcome): free its slots, and
-- make the first task parked on each limit pending at once, so it runs without waiting for its fallback time.
-- A handler given up on (it ran on past its timeout or its cancellation) has its outcome written while it still
-- runs: its slots are kept for it instead (ARGV[5]), under a holder of its own that no later run of the task
-- shares, and freed by a second call once it really ends.
-- KEYS: per limit i (i = 0 .. n-1) two keys at 1 + 2i: its slots (ZSET "queue\nid") and parked (LIST)
-- ARGV[1] the holder whose slots are freed: the task, "queue\nid", or a slot kept as ARGV[5] says
-- ARGV[2] the asynq namespace
-- ARGV[3] now, nanoseconds (pending_since)
-- ARGV[4] wake-up channel ("" = none)
-- ARGV[5] optional: keep the slots rather than free them: ARGV[1]'s slot passes to this holder
--   ("queue\nid\n<run>"), which holds it while its handler runs (renewed by the same call, kept even when the
--   task's own slot was already taken from it: the handler still runs)
-- ARGV[6] with ARGV[5]: Unix s until which the kept slot holds unless renewed, stored as its score negated
--   (limit_take.lua frees a slot with a negative score once that time passed, one with a positive score once
--   its task is no longer leased)
-- returns how many parked tasks were made pending (0 when keeping)
if ARGV[5] and ARGV[5] ~= "" then
  for i = 1, #KEYS, 2 do
    redis.call("ZREM", KEYS[i], ARGV[1])
    redis.call("ZADD", KEYS[i], -tonumber(ARGV[6]), ARGV[5])
  end
  return 0
end
local released = 0
for i = 1, #KEYS, 2 do
  if redis.call("ZREM", KEYS[i], ARGV[1]) == 1 then
    while true do
      local parked = redis.call("LPOP", KEYS[i + 1])
      if not parked then
        break
      end
      local sep = string.find(parked, "\n", 1, true) or 0
      local queue, id = string.sub(parked, 1, sep - 1), string.sub(parked, sep + 1)
      local prefix = ARGV[2] .. ":{" .. queue .. "}:"
      -- only a task still waiting in the scheduled set (not run, deleted or forwarded meanwhile; an entry that
      -- names no task is dropped)
      if sep > 0 and redis.call("ZREM", prefix .. "scheduled", id) == 1 then
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
