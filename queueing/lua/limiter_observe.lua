-- Learn from one response's anthropic-ratelimit-* headers, and pause on a 429, in one step.
-- ARGV[5..7]   server limits rpm, itpm, otpm (-1 = header absent)
-- ARGV[8..10]  server remaining (-1 = absent); token values are rounded DOWN to the thousand
-- ARGV[11..13] server reset time in microseconds (-1 = absent)
-- ARGV[14..16] tolerance per dimension (whole units) before our level counts as "too high"
-- ARGV[17] 1 if the status was 429; ARGV[18] retry-after in microseconds (-1 = none)
-- ARGV[19] learned TTL s; ARGV[20] bucket TTL s; ARGV[21] stats TTL s
--
-- (a) A server limit different from ours is adopted (kept in KEYS[2], TTL refreshed by every
--     response). (b) If the server's remaining is lower than our level by more than the
--     tolerance, someone else is spending the same key (or our estimates ran low): our level
--     drops to the server's. The server's level "now" is the larger of its remaining and what
--     its reset time implies (capacity minus the refill still missing), which discounts the
--     staleness of headers computed when the request started. (c) A 429 counts, and with a
--     retry-after pauses every dispatcher of this model class until then.
-- Returns {limits changed, levels lowered, pause until (us) or 0}.
local now = now_us()
local before = effective_limits()
local relimited = 0
local learned_any = false
for n = 1, 3 do
  local server_limit = tonumber(ARGV[n + 4])
  if server_limit >= 0 then
    learned_any = true
    redis.call('HSET', KEYS[2], FIELDS[n], server_limit)
    if server_limit ~= before[n] then
      relimited = relimited + 1
    end
  end
end
if learned_any then
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[19]))
end

local levels, ts = load_levels(before, now)
local lim = effective_limits()
local lowered = 0
for n = 1, 3 do
  if lim[n] > 0 then
    local cap = lim[n] * MICRO
    local level = levels[n]
    if level == nil or level > cap then
      level = cap
    end
    local remaining = tonumber(ARGV[n + 7])
    if remaining >= 0 then
      local server = remaining * MICRO
      local reset = tonumber(ARGV[n + 10])
      if reset >= 0 then
        local missing = math.max(0, reset - now) * lim[n] / 60
        server = math.max(server, math.floor(cap - missing))
      end
      if server + tonumber(ARGV[n + 13]) * MICRO < level then
        level = server
        lowered = lowered + 1
      end
    end
    levels[n] = level
  else
    levels[n] = nil
  end
end
save_levels(levels, ts, tonumber(ARGV[20]))

local paused = 0
if tonumber(ARGV[17]) == 1 then
  redis.call('HINCRBY', KEYS[4], 'n429', 1)
  redis.call('HSET', KEYS[4], 'last429', now)
  local retry_after = tonumber(ARGV[18])
  if retry_after >= 0 then
    paused = pause_until(now, now + retry_after)
  end
end
if lowered > 0 then
  redis.call('HINCRBY', KEYS[4], 'lowered', lowered)
end
if relimited > 0 then
  redis.call('HINCRBY', KEYS[4], 'relimited', relimited)
end
if tonumber(ARGV[17]) == 1 or lowered > 0 or relimited > 0 then
  redis.call('EXPIRE', KEYS[4], tonumber(ARGV[21]))
end
return {relimited, lowered, paused}
