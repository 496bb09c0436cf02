-- delete_all: one batch of Inspector "delete all": delete up to N tasks of one state and their
-- records, releasing each uniqueness lock the task holds. Pending tasks are taken oldest first.
-- Called again until it takes fewer than N ids. An id whose record names another task state is a stale entry
-- (the task is elsewhere, perhaps running): the entry is dropped, the task left as it is.
-- KEYS[1] source: pending list <ns>:{q}:pending, or zset <ns>:{q}:scheduled | retry | archived |
--         completed | g:<group>
-- KEYS[2] groups set <ns>:{q}:groups
-- ARGV[1] task key prefix <ns>:{q}:t:
-- ARGV[2] N, the most ids to take
-- ARGV[3] "list" or "zset": the type of KEYS[1]
-- ARGV[4] group name when KEYS[1] is a group zset, else ""
-- ARGV[5] optional: the queue's prefix of the framework's own keys <ext>:{q}: (absent or "" = announce nothing)
-- ARGV[6] optional: what is announced (default "deleted"; "deleted\nqueue" when the queue is being removed)
-- ARGV[7] optional: the state of the tasks of KEYS[1] (absent or "" = not checked)
-- ARGV[8] optional, for a list: the id that was at its left end (the newest) when the tasks were counted;
--         the tasks left of it came after the count and are not taken, nor any once it left the list
--         (absent or "" = no bound)
-- returns {ids taken from the source, task records deleted}
--
-- Announcing: each task whose waiting marker <ext>:{q}:waiting:<id> exists has ARGV[6] published on
-- <ext>:{q}:outcome:<id>, and the marker deleted. The queue's flag <ext>:{q}:waited (set beside every marker,
-- expiring no sooner) is looked at first: a batch of a queue nobody waits on pays one EXISTS.
local n = tonumber(ARGV[2])
local ids = take_batch(KEYS[1], ARGV[3], n, ARGV[8] or "", ARGV[1])
if #ids == 0 then
  return {0, 0}
end
local want = ARGV[7] or ""
local deleted = 0
local removed = {}
for _, id in ipairs(ids) do
  local key = ARGV[1] .. id
  local fields = redis.call("HMGET", key, "state", "unique_key")
  local state = fields[1]
  if not state or listed_here(state, want) then
    if fields[2] then
      release_unique(fields[2], id)
    end
    deleted = deleted + redis.call("DEL", key)
    removed[#removed + 1] = id
  end
end
announce_removed(ARGV[5] or "", removed, ARGV[6] or "deleted")
if ARGV[4] ~= "" and redis.call("ZCARD", KEYS[1]) == 0 then
  redis.call("SREM", KEYS[2], ARGV[4])
end
return {#ids, deleted}
