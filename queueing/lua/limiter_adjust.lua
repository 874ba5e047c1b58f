-- Give back (or take more of) a reservation's amounts, once: reconcile and release.
-- ARGV[5..7] = requests, input tokens, output tokens to ADD to the levels (negative when the
-- actual charge exceeded the reservation); ARGV[8] = bucket TTL s.
-- The reservation key is deleted in the same step, so a second call for the same reservation
-- (a redelivered job) changes nothing. Levels never rise above capacity; they may go negative.
-- Returns 1 if applied, 0 if the reservation was already settled (or expired).
if redis.call('DEL', KEYS[6]) == 0 then
  return 0
end
local now = now_us()
local lim = effective_limits()
local levels, ts = load_levels(lim, now)
for n = 1, 3 do
  if lim[n] > 0 then
    levels[n] = math.min(levels[n] + tonumber(ARGV[n + 4]) * MICRO, lim[n] * MICRO)
  end
end
save_levels(levels, ts, tonumber(ARGV[8]))
return 1
