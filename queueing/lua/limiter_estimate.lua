-- Fold one actual/estimated input-token ratio into the model class's estimate statistics.
-- ARGV[5] = ratio (already clamped), ARGV[6] = EWMA alpha, ARGV[7] = TTL s.
-- Keeps m = EWMA of the ratio and d = EWMA of its absolute deviation (from the mean before this
-- sample). The first samples are averaged (weight 1/(n+1)) so a fresh estimate converges
-- quickly; after that each new sample weighs alpha. Returns {m, d} as exact strings.
local raw = redis.call('HMGET', KEYS[5], 'm', 'd', 'n')
local ratio = tonumber(ARGV[5])
local samples = tonumber(raw[3]) or 0
local mean = tonumber(raw[1]) or ratio
local deviation = tonumber(raw[2]) or 0
local weight = math.max(tonumber(ARGV[6]), 1 / (samples + 1))
if samples > 0 then
  deviation = deviation + weight * (math.abs(ratio - mean) - deviation)
end
mean = mean + weight * (ratio - mean)
redis.call('HSET', KEYS[5], 'm', mean, 'd', deviation, 'n', samples + 1)
redis.call('EXPIRE', KEYS[5], tonumber(ARGV[7]))
return {string.format('%.17g', mean), string.format('%.17g', deviation)}
