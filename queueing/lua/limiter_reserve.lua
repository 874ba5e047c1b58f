-- Admit a request only if ALL of RPM, ITPM and OTPM hold its amounts, and reserve them.
-- ARGV[5..7] = requests, input tokens, output tokens; ARGV[8] = reservation TTL s;
-- ARGV[9] = bucket TTL s; ARGV[10..12] = headroom per bucket as a fraction of its capacity
-- (RPM's rounded down to whole requests).
-- Headroom: a bucket must keep that much ABOVE the amount to admit (nothing extra is taken).
-- It absorbs estimate errors of the calls in flight, whose real charge the server already knows
-- and we do not yet; under saturation it costs no throughput (the level just hovers above it).
-- An amount larger than a bucket's capacity is admitted when that bucket is full (the level then
-- goes negative), so a huge request is delayed, never blocked forever. An active pause (after a
-- 429) refuses everything until it ends.
-- Returns {1, 0, ''} when admitted, else {0, wait_us, binding} where binding is 'pause', 'rpm',
-- 'itpm' or 'otpm' (the constraint that needs the longest wait) and nothing is written.
local now = now_us()
local lim = effective_limits()
local need = {tonumber(ARGV[5]) * MICRO, tonumber(ARGV[6]) * MICRO, tonumber(ARGV[7]) * MICRO}
local levels, ts = load_levels(lim, now)

local wait, binding = 0, ''
local paused = tonumber(redis.call('GET', KEYS[3]))
if paused ~= nil and paused > now then
  wait, binding = paused - now, 'pause'
end
for n = 1, 3 do
  if lim[n] > 0 then
    local cap = lim[n] * MICRO
    local headroom = math.floor(cap * tonumber(ARGV[n + 9]))
    if n == 1 then
      -- Requests are whole: a fraction of one would refuse the last request of a small limit.
      headroom = math.floor(headroom / MICRO + 1e-9) * MICRO
    end
    local target = math.min(need[n] + headroom, cap)
    local w = wait_for(levels[n], target, lim[n])
    if w > wait then
      wait, binding = w, NAMES[n]
    end
  end
end
if wait > 0 then
  return {0, wait, binding}
end

for n = 1, 3 do
  if lim[n] > 0 then
    levels[n] = levels[n] - need[n]
  end
end
save_levels(levels, ts, tonumber(ARGV[9]))
redis.call('SET', KEYS[6], '1', 'EX', tonumber(ARGV[8]))
return {1, 0, ''}
