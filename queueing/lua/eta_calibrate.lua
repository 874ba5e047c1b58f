-- Fold the errors of predictions that just came true into the ETA's calibration (eta.py).
-- KEYS[1] hash: m = EWMA of ln(actual / predicted), d = EWMA of its absolute deviation from m,
-- n = samples. ARGV = alpha, TTL s, then one ln(actual / predicted) per dispatched request.
-- The first samples are averaged (weight 1/(n+1)), as limiter_estimate.lua does.
local raw = redis.call('HMGET', KEYS[1], 'm', 'd', 'n')
local alpha = tonumber(ARGV[1])
local samples = tonumber(raw[3]) or 0
local mean = tonumber(raw[1])
local deviation = tonumber(raw[2]) or 0
for i = 3, #ARGV do
  local x = tonumber(ARGV[i])
  if mean == nil then
    mean = x
  else
    local weight = math.max(alpha, 1 / (samples + 1))
    deviation = deviation + weight * (math.abs(x - mean) - deviation)
    mean = mean + weight * (x - mean)
  end
  samples = samples + 1
end
redis.call('HSET', KEYS[1], 'm', string.format('%.17g', mean), 'd', string.format('%.17g', deviation), 'n', samples)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return samples
