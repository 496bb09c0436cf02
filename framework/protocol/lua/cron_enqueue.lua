-- cron_enqueue: claim one tick of one cron entry and enqueue its task, atomically, so any number of
-- schedulers enqueue each tick exactly once. The claim key carries the queue's hash tag.
-- KEYS[1] claim     <ext>:{q}:cron:<entry id>:<tick>
-- KEYS[2] task hash <ns>:{q}:t:<id>
-- KEYS[3] pending   <ns>:{q}:pending
-- KEYS[4] unique lock <ns>:{q}:unique:<type>:<md5(payload)> (only when ARGV[7] > 0)
-- ARGV[1] claim TTL, seconds
-- ARGV[2] encoded TaskMessage
-- ARGV[3] task id (derived from the entry and the tick)
-- ARGV[4] now, nanoseconds (pending_since)
-- ARGV[5] wake-up channel ("" = do not publish)
-- ARGV[6] queue name
-- ARGV[7] uniqueness lock TTL, whole seconds (0: the task type is not unique)
-- ARGV[8] the tick, Unix seconds
-- returns 1 fired, 0 this tick was already claimed, -1 claimed but not enqueued: the previous tick's task of
-- this unique task type still holds its lock (as asynq's scheduler, whose enqueue answers ErrDuplicateTask)
--
-- A claim lives its TTL from the later of now and the tick, by the server's clock: a scheduler whose clock
-- runs ahead claims a tick before it is due, and its claim must outlive the moment the others reach that
-- tick (by at most a week: a clock further off is broken, not skewed).
--
-- Writes already made are not undone when a later command of a script fails, so a pending key of another type
-- (written by something else) is refused before the claim: a claim whose task never reached the queue would
-- make every retry of the tick a no-op.
local pending_type = redis.call("TYPE", KEYS[3])["ok"]
if pending_type ~= "list" and pending_type ~= "none" then
  return redis.error_reply("WRONGTYPE " .. KEYS[3] .. " holds a " .. pending_type .. ", not a list; tick not claimed")
end
local claim_ttl = tonumber(ARGV[1])
local early = tonumber(ARGV[8]) - tonumber(redis.call("TIME")[1])
if early > 0 then
  claim_ttl = claim_ttl + math.min(early, 604800)
end
if not redis.call("SET", KEYS[1], ARGV[3], "NX", "EX", claim_ttl) then
  return 0
end
if redis.call("EXISTS", KEYS[2]) == 1 then
  return 0
end
local ttl = tonumber(ARGV[7])
if ttl > 0 then
  if not redis.call("SET", KEYS[4], ARGV[3], "NX", "EX", ttl) then
    return -1
  end
  redis.call("HSET", KEYS[2], "msg", ARGV[2], "state", "pending", "pending_since", ARGV[4], "unique_key", KEYS[4])
else
  redis.call("HSET", KEYS[2], "msg", ARGV[2], "state", "pending", "pending_since", ARGV[4])
end
if redis.call("LPUSH", KEYS[3], ARGV[3]) == 1 and ARGV[5] ~= "" then
  redis.call("PUBLISH", ARGV[5], ARGV[6])
end
return 1
