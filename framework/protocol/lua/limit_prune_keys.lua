-- limit_prune_keys: drop from a keyed limit's set of seen keys those whose keys hold nothing any more, a page
-- at a time (the set otherwise grows with every value a key ever took: a user id). A key that starts a task
-- again is added back by limit_take.lua. Limits need one server (or Sentinel): the per-key names are built here.
-- KEYS[1] the limit's seen keys   <ext>:limit:{name}:keys (SET)
-- ARGV[1] the per-key prefix      <ext>:limit:{name}:k:   (its tat, slots, parked and waiting follow the key)
-- ARGV[2] SSCAN cursor ("0" to start)
-- ARGV[3] SSCAN COUNT
-- returns {next cursor ("0" when the set was walked through), keys dropped}
local page = redis.call("SSCAN", KEYS[1], ARGV[2], "COUNT", ARGV[3])
local dropped = 0
for _, key in ipairs(page[2]) do
  local base = ARGV[1] .. key
  if redis.call("EXISTS", base .. ":tat", base .. ":slots", base .. ":parked", base .. ":waiting") == 0 then
    dropped = dropped + redis.call("SREM", KEYS[1], key)
  end
end
return { page[1], dropped }
