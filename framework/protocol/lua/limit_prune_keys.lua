-- limit_prune_keys: drop from a keyed limit's set of seen keys those whose keys hold nothing any more, a page
-- at a time (the set otherwise grows with every value a key ever took: a user id). A key that starts a task
-- again is added back by limit_take.lua. Limits need one server (or Sentinel): the per-key names are built here.
-- First each key's slots lose their dead holders (drop_dead_holders, the rule limit_take.lua applies): a task no
-- longer leased (its worker died, and it was archived as a poison pill or deleted rather than run again), or a
-- slot kept for a handler given up on past its time. limit_take.lua drops them only when the key's slots are all
-- taken, so a key that never fills them again would keep a dead holder, and so its slots and its place in the
-- set, for ever.
-- KEYS[1] the limit's seen keys   <ext>:limit:{name}:keys (SET)
-- ARGV[1] the per-key prefix      <ext>:limit:{name}:k:   (its tat, slots, parked and waiting follow the key)
-- ARGV[2] SSCAN cursor ("0" to start)
-- ARGV[3] SSCAN COUNT
-- ARGV[4] the asynq namespace (a slot's holder is alive while its task is leased: <ns>:{queue}:lease)
-- ARGV[5] now, Unix ms
-- returns {next cursor ("0" when the set was walked through), keys dropped}
local page = redis.call("SSCAN", KEYS[1], ARGV[2], "COUNT", ARGV[3])
local now = tonumber(ARGV[5])
local dropped = 0
for _, key in ipairs(page[2]) do
  local base = ARGV[1] .. key
  local slots = base .. ":slots"
  drop_dead_holders(slots, ARGV[4], now)
  if redis.call("EXISTS", base .. ":tat", slots, base .. ":parked", base .. ":waiting") == 0 then
    dropped = dropped + redis.call("SREM", KEYS[1], key)
  end
end
return { page[1], dropped }
