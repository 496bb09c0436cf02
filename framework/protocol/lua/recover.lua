-- recover: put back a task whose worker died (found by the worker heartbeats), spending no retry.
-- A task its worker died running alone is charged with the death (fw_recoveries on the task record; past
-- the limit the caller archives it as a poison pill). Tasks that died together are not charged: they are
-- marked suspects, and each then runs alone (dequeue.lua), so the one that kills its worker is found.
-- KEYS[1] task hash <ns>:{q}:t:<id>
-- KEYS[2] active    <ns>:{q}:active
-- KEYS[3] lease     <ns>:{q}:lease
-- KEYS[4] pending   <ns>:{q}:pending
-- KEYS[5] suspects  <ext>:{q}:suspects (framework's own key)
-- KEYS[6] cancel request <ext>:{q}:cancel:<id> (framework's own key): the caller cancelled the task while it ran
--         (Client.cancel); it is then not requeued, the caller archives it
-- KEYS[7] optional: the dead worker's in-flight set <ext>:{q}:inflight:<server id>; the id is taken out of it
--         in the same step as the task is requeued, so that set cannot name the task once another worker
--         has taken it (a recoverer pass cut short, say by the requeued task killing the recovering process,
--         would otherwise leave it there, and a later pass would requeue the task's next death, uncharged,
--         under this worker's name)
-- ARGV[1] task id
-- ARGV[2] newest lease expiry a dead owner can have left (Unix s); a later one means a live owner
-- ARGV[3] most recoveries before the task counts as a poison pill
-- ARGV[4] wake-up channel ("" = do not publish)
-- ARGV[5] queue name
-- ARGV[6] "1" = the worker died holding this task alone: charge it; "2" = it died holding several: mark
--         this one a suspect, uncharged; "0" = not a death at all (the owner itself gives back a task whose
--         lease it lost to a Redis outage): neither
-- ARGV[7] seconds a suspect mark lasts (refreshed by each death)
-- returns 1 requeued, 0 no longer leased or active (finished or already recovered), -1 lease still fresh
-- (a live owner, or one that died a moment ago: ask again later), {2, msg} recovered too often (caller archives),
-- {3, msg} cancelled by its caller while it ran (caller archives it as cancelled; neither charged nor a suspect)
local score = redis.call("ZSCORE", KEYS[3], ARGV[1])
if not score then
  return 0
end
if tonumber(score) > tonumber(ARGV[2]) then
  return -1
end
if not redis.call("LPOS", KEYS[2], ARGV[1]) or redis.call("HEXISTS", KEYS[1], "msg") == 0 then
  -- a lease without an active task, or an id without a task record (left by a crash outside a
  -- script): drop them, there is nothing to recover
  redis.call("LREM", KEYS[2], 0, ARGV[1])
  redis.call("ZREM", KEYS[3], ARGV[1])
  return 0
end
if redis.call("EXISTS", KEYS[6]) == 1 then
  return {3, redis.call("HGET", KEYS[1], "msg")}
end
if ARGV[6] == "1" then
  local n = redis.call("HINCRBY", KEYS[1], "fw_recoveries", 1)
  if n > tonumber(ARGV[3]) then
    return {2, redis.call("HGET", KEYS[1], "msg")}
  end
end
if ARGV[6] ~= "0" then
  redis.call("SADD", KEYS[5], ARGV[1])
  redis.call("EXPIRE", KEYS[5], ARGV[7])
end
redis.call("LREM", KEYS[2], 0, ARGV[1])
redis.call("ZREM", KEYS[3], ARGV[1])
if redis.call("RPUSH", KEYS[4], ARGV[1]) == 1 and ARGV[4] ~= "" then
  redis.call("PUBLISH", ARGV[4], ARGV[5])
end
redis.call("HSET", KEYS[1], "state", "pending")
if KEYS[7] then
  redis.call("SREM", KEYS[7], ARGV[1])
end
return 1
