-- defer: put back an active task whose type the worker that took it has no handler for, so that a worker
-- that has one (a Go worker, or one with other task types) can take it. Like asynq's retry of a non-failure,
-- it goes to the retry set without spending a retry or counting as processed or failed. The time of the
-- first deferral is kept on the task record (fw_unknown_since, ours); the delay grows with the time since
-- then, from the shortest to the longest delay, and once the task has waited the longest wait it is left
-- active and the first-deferral time is cleared (a task run again from the archive starts afresh).
-- KEYS[1] task hash <ns>:{q}:t:<id>
-- KEYS[2] active    <ns>:{q}:active
-- KEYS[3] lease     <ns>:{q}:lease
-- KEYS[4] retry     <ns>:{q}:retry
-- ARGV[1] task id
-- ARGV[2] encoded TaskMessage (error_msg, last_failed_at updated; retried unchanged)
-- ARGV[3] now, Unix seconds (integer)
-- ARGV[4] longest wait from the first deferral, seconds (0 = none: the task is never deferred)
-- ARGV[5] shortest delay, ARGV[6] longest delay, whole seconds
-- returns the time it is due again (Unix s) when deferred, 0 when not found (no longer active here),
-- -1 when it has waited long enough (unchanged and still active: the caller archives it)
if not redis.call("LPOS", KEYS[2], ARGV[1]) then
  return 0
end
local now = tonumber(ARGV[3])
local since = tonumber(redis.call("HGET", KEYS[1], "fw_unknown_since"))
if not since then
  since = now
  redis.call("HSET", KEYS[1], "fw_unknown_since", ARGV[3])
end
local waited = now - since
if waited >= tonumber(ARGV[4]) then
  redis.call("HDEL", KEYS[1], "fw_unknown_since")
  return -1
end
local due = now + math.min(tonumber(ARGV[6]), math.max(tonumber(ARGV[5]), waited))
redis.call("LREM", KEYS[2], 0, ARGV[1])
redis.call("ZREM", KEYS[3], ARGV[1])
redis.call("ZADD", KEYS[4], due, ARGV[1])
redis.call("HSET", KEYS[1], "msg", ARGV[2], "state", "retry")
return due
