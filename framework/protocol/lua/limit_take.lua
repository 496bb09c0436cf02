-- limit_take: a task just taken by a worker asks its limits to start: take a concurrency slot and a rate
-- token for each, or wait without spending a retry. Limits are shared by every worker and host.
-- KEYS[1] task hash  <ns>:{q}:t:<id>
-- KEYS[2] active     <ns>:{q}:active
-- KEYS[3] lease      <ns>:{q}:lease
-- KEYS[4] scheduled  <ns>:{q}:scheduled
-- KEYS[5] the worker's in-flight set of the queue <ext>:{q}:inflight:<server id> ("" = none)
-- then per limit i (i = 0 .. n-1) six keys at 6 + 6i: its rate timestamp <ext>:limit:{name}[:k:key]:tat
--   (STRING, ms; the interval it was counted at is kept beside it in "<that key>:interval", STRING ms, same
--   hash tag, not passed), slots (ZSET "queue\nid" -> Unix s; a slot kept for a handler given up on: see
--   limit_release.lua), parked (LIST of "queue\nid"), waiting (ZSET "queue\nid" -> due ms), the limit's
--   counters <ext>:limit:{name}:stats (HASH started, delayed, parked) and the keys it has seen
--   <ext>:limit:{name}:keys (SET; for a keyed limit)
-- ARGV[1] task id
-- ARGV[2] queue name
-- ARGV[3] now, Unix ms
-- ARGV[4] the asynq namespace (a slot's holder is alive while its task is leased: <ns>:{queue}:lease)
-- ARGV[5] seconds a parked task waits in the scheduled set before it is looked at again anyway
-- ARGV[6] n, the number of limits
-- then per limit i four arguments at 7 + 4i: ms between two tasks at its rate (0 = no rate), burst (tasks
--   that may start at once), concurrency (0 = no cap), the key within the limit ("" = none)
-- ARGV[7 + 4n] ms within which a task whose token is reserved waits in its worker rather than in Redis
-- ARGV[8 + 4n] ms before its moment a task put off that far is due back from the scheduled set
-- ARGV[9 + 4n] ms past its moment a reserved token is still used; a task that asks later asks for a new one
-- returns {0} may start (its slots taken; a reserved token used); {3, due ms}: the rate allows it only then,
-- which is near (ARGV[7 + 4n]): the token is reserved for it and it stays active, for its worker to ask again
-- at that moment; {1, due ms}: the same, but far: it waits in the scheduled set (state scheduled, no retry
-- spent) until a little before its time, then is held by the worker that takes it; {2, due ms}: every slot
-- of a concurrency limit is taken: it is parked (scheduled, and in the limit's parked list: the next slot
-- freed makes it pending at once); {-1} it is no longer active here.
--
-- Rates are kept with GCRA: one timestamp (tat) per limit and key. A task may start at now when
-- tat - now <= (burst - 1) * interval; starting moves tat to max(tat, now) + interval. One that may not is
-- given the first moment it may (tat - (burst - 1) * interval) and tat moves as if it started then, so a
-- throttled task is put off by a rate once, never again, and the rate holds across every worker exactly. Its worker
-- starts it at that moment (held in memory; from the scheduled set it comes back early to be held), so starts
-- keep the rate's spacing instead of coming back in clumps with each pass of a forwarder. A task parked for a
-- slot gives its reserved token up (it is not handed back: the rate runs one start under, never over), and so
-- does a task that asks more than ARGV[9 + 4n] after its token's moment.
-- "now" is the calling worker's clock: rates assume the hosts' clocks agree (NTP); a skew of d ms lets at most
-- d / interval more tasks start in a window than the rate allows (docs/limits.md).
-- A slot whose holder's task is no longer leased (its worker died, or it finished without releasing) is
-- freed when the slots are all taken: a crash never leaks capacity for longer than a lease. A slot kept for a
-- handler given up on (its score negative, see limit_release.lua) is freed once the time it was kept until passed.
local id, queue, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local member = queue .. "\n" .. id
local n = tonumber(ARGV[6])
if not redis.call("LPOS", KEYS[2], id) then
  return { -1 }
end

local function leave_active(score)
  redis.call("LREM", KEYS[2], 0, id)
  redis.call("ZREM", KEYS[3], id)
  -- asynq's scheduled scores are whole Unix seconds (its inspector parses them as integers): rounded up, so
  -- the task is never forwarded before it may start (the worker holds it until its exact time anyway)
  redis.call("ZADD", KEYS[4], math.ceil(score), id)
  redis.call("HSET", KEYS[1], "state", "scheduled")
  if KEYS[5] ~= "" then
    redis.call("SREM", KEYS[5], id)
  end
end

-- concurrency: every capped limit needs a free slot (or holds one for this task already)
for i = 0, n - 1 do
  local cap = tonumber(ARGV[9 + 4 * i])
  local slots = KEYS[7 + 6 * i]
  if cap > 0 and not redis.call("ZSCORE", slots, member) and redis.call("ZCARD", slots) >= cap then
    drop_dead_holders(slots, ARGV[4], now)
    if redis.call("ZCARD", slots) >= cap then
      local again = now + tonumber(ARGV[5]) * 1000
      leave_active(again / 1000)
      -- a rate token reserved for it is given up: by the time a slot frees, its moment is long past and the rate
      -- has moved on; started on it then, it would start next to a task on a fresh token. Woken, it asks anew.
      redis.call("HDEL", KEYS[1], "fw_limit_at")
      redis.call("RPUSH", KEYS[8 + 6 * i], member)
      redis.call("ZADD", KEYS[9 + 6 * i], again, member)
      redis.call("HINCRBY", KEYS[10 + 6 * i], "parked", 1)
      return { 2, tostring(again) }
    end
  end
end

-- rate: use the token reserved for this task, or take one now, or reserve one for later
local hold, early = tonumber(ARGV[7 + 4 * n]), tonumber(ARGV[8 + 4 * n])
local function wait_for(due)
  if due - now <= hold then
    return { 3, string.format("%.3f", due) } -- near: it stays active, its worker starts it on time
  end
  leave_active((due - early) / 1000) -- far: back early, then held until its time
  return { 1, string.format("%.3f", due) }
end
-- a limit's tat, read at the interval in force now: a tat written at another interval (the settings changed the
-- rate) is rescaled, so the backlog it stands for is spaced at the new rate from now on (a rate raised applies to
-- the next task, not once the old backlog's time has passed). The interval lives beside the tat (same hash tag)
-- rather than in it, so a script that reads the tat as one number still does.
local function read_tat(key, interval)
  local tat = tonumber(redis.call("GET", key) or now)
  local was = tonumber(redis.call("GET", key .. ":interval") or interval)
  if tat > now and was > 0 and math.abs(was - interval) > interval * 1e-9 then
    tat = now + (tat - now) * interval / was
  end
  return math.max(tat, now)
end
-- a token reserved for a moment long past is given up: its task comes back late (its worker died holding it and
-- the recoverer put it back, or no worker was free to take it), and the rate has moved on since; started on it,
-- it would start right next to a task on a fresh token. It asks anew, as a task parked for a slot does.
local stored = redis.call("HGET", KEYS[1], "fw_limit_at")
local reserved = stored and tonumber(stored)
if reserved and reserved > now + 1 then
  return wait_for(reserved)
end
if stored then
  redis.call("HDEL", KEYS[1], "fw_limit_at")
end
if not reserved or reserved < now - tonumber(ARGV[9 + 4 * n]) then
  local due = now
  local tats = {}
  for i = 0, n - 1 do
    local interval = tonumber(ARGV[7 + 4 * i])
    if interval > 0 then
      local tat = read_tat(KEYS[6 + 6 * i], interval)
      tats[i] = tat
      local allowed_at = tat - (tonumber(ARGV[8 + 4 * i]) - 1) * interval
      if allowed_at > due then
        due = allowed_at
      end
    end
  end
  for i = 0, n - 1 do
    local interval = tonumber(ARGV[7 + 4 * i])
    if interval > 0 then
      local tat = math.max(tats[i], due) + interval
      local ttl = math.ceil(tat - now) + 60000
      redis.call("SET", KEYS[6 + 6 * i], string.format("%.3f", tat), "PX", ttl)
      redis.call("SET", KEYS[6 + 6 * i] .. ":interval", string.format("%.6f", interval), "PX", ttl)
    end
  end
  if due > now then
    redis.call("HSET", KEYS[1], "fw_limit_at", string.format("%.3f", due))
    for i = 0, n - 1 do
      if tonumber(ARGV[7 + 4 * i]) > 0 then
        redis.call("ZADD", KEYS[9 + 6 * i], due, member)
        redis.call("HINCRBY", KEYS[10 + 6 * i], "delayed", 1)
      end
    end
    return wait_for(due)
  end
end
for i = 0, n - 1 do
  if tonumber(ARGV[9 + 4 * i]) > 0 then
    redis.call("ZADD", KEYS[7 + 6 * i], now / 1000 + 86400, member)
  end
  redis.call("ZREM", KEYS[9 + 6 * i], member)
  redis.call("ZREMRANGEBYSCORE", KEYS[9 + 6 * i], "-inf", now - 3600000) -- tasks deleted while they waited
  redis.call("HINCRBY", KEYS[10 + 6 * i], "started", 1)
  if ARGV[10 + 4 * i] ~= "" then
    redis.call("SADD", KEYS[11 + 6 * i], ARGV[10 + 4 * i])
  end
end
return { 0 }
