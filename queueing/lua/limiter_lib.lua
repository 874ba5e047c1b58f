-- Helpers shared by every limiter_*.lua script (prepended to each one when it is loaded).
--
-- Every limiter script receives the same KEYS for one model class:
--   KEYS[1] bucket    hash r, i, o = levels of the RPM / ITPM / OTPM buckets in MICRO-units
--                          (1 token = 1e6), t = microsecond timestamp of those levels
--   KEYS[2] learned   hash r, i, o = limits learned from Anthropic's response headers
--   KEYS[3] pause     string: microsecond time until which dispatch is paused (after a 429)
--   KEYS[4] stats     hash n429 = 429 responses seen, last429, lowered, relimited
--   KEYS[5] estimate  hash m, d = EWMA of actual/estimated input tokens and of its absolute
--                          deviation, n = samples
--   KEYS[6] reservation (string, one per admitted reservation; may be a dummy key)
-- and ARGV[1] = explicit now in microseconds or '' for the Redis server clock (TIME),
--     ARGV[2..4] = configured limits rpm, itpm, otpm (settings / admin override, 0 = unlimited).
--
-- Levels are integers of micro-tokens, exact in Lua's doubles up to 2^53 (9e9 tokens), so
-- refilling never drifts. Numbers passed to redis.call are written with 17 significant digits.

local MICRO = 1000000
local FIELDS = {'r', 'i', 'o'}
local NAMES = {'rpm', 'itpm', 'otpm'}

local function now_us()
  if ARGV[1] ~= nil and ARGV[1] ~= '' then
    return tonumber(ARGV[1])
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * MICRO + tonumber(t[2])
end

-- Effective per-minute limits: what the server told us wins over configuration.
local function effective_limits()
  local learned = redis.call('HMGET', KEYS[2], 'r', 'i', 'o')
  local lim = {}
  for n = 1, 3 do
    lim[n] = tonumber(learned[n]) or tonumber(ARGV[n + 1])
  end
  return lim
end

-- Level (micro-units) of a bucket of `limit` per minute at time `now`, continuously refilled
-- at limit/60 per second (= limit/60 micro-units per microsecond) and capped at the limit.
-- A bucket never used (nil level) is full.
local function refill(level, ts, now, limit)
  local cap = limit * MICRO
  if level == nil or ts == nil or level >= cap then
    return cap
  end
  local elapsed = now - ts
  if elapsed <= 0 then
    return level
  end
  if elapsed >= math.ceil((cap - level) * 60 / limit) then
    return cap
  end
  return level + math.floor(elapsed * limit / 60)
end

-- Microseconds until a bucket at `level` holds `amount` (both micro-units).
local function wait_for(level, amount, limit)
  if level >= amount then
    return 0
  end
  return math.ceil((amount - level) * 60 / limit)
end

-- Levels of the limited buckets at `now` (nil for unlimited ones) and the timestamp to store.
local function load_levels(lim, now)
  local raw = redis.call('HMGET', KEYS[1], 'r', 'i', 'o', 't')
  local ts = tonumber(raw[4])
  local levels = {}
  for n = 1, 3 do
    if lim[n] > 0 then
      levels[n] = refill(tonumber(raw[n]), ts, now, lim[n])
    end
  end
  -- A caller passing an explicit `now` older than the last update must not rewind time.
  if ts ~= nil and ts > now then
    return levels, ts
  end
  return levels, now
end

local function save_levels(levels, ts, ttl)
  for n = 1, 3 do
    if levels[n] ~= nil then
      redis.call('HSET', KEYS[1], FIELDS[n], levels[n])
    else
      redis.call('HDEL', KEYS[1], FIELDS[n])
    end
  end
  redis.call('HSET', KEYS[1], 't', ts)
  redis.call('EXPIRE', KEYS[1], ttl)
end

local function pause_until(now, until_us)
  local current = tonumber(redis.call('GET', KEYS[3]))
  if current ~= nil and current >= until_us then
    return current
  end
  local ttl_ms = math.ceil((until_us - now) / 1000) + 1000
  redis.call('SET', KEYS[3], until_us, 'PX', ttl_ms)
  return until_us
end
