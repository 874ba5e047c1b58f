-- Read-only snapshot of one model class: levels refilled to now (micro-units, false when
-- unlimited), effective limits, learned limits, pause end, stats and estimate factor.
local now = now_us()
local lim = effective_limits()
local levels = load_levels(lim, now)
local learned = redis.call('HMGET', KEYS[2], 'r', 'i', 'o')
local stats = redis.call('HMGET', KEYS[4], 'n429', 'last429', 'lowered', 'relimited')
local estimate = redis.call('HMGET', KEYS[5], 'm', 'd', 'n')
local out = {now}
for n = 1, 3 do
  out[#out + 1] = levels[n] or false
end
for n = 1, 3 do
  out[#out + 1] = lim[n]
end
for n = 1, 3 do
  out[#out + 1] = learned[n] or false
end
out[#out + 1] = redis.call('GET', KEYS[3]) or false
for n = 1, 4 do
  out[#out + 1] = stats[n] or false
end
for n = 1, 3 do
  out[#out + 1] = estimate[n] or false
end
return out
