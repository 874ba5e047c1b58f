-- Where request ARGV[o] stands, or nil. Read-only. Returns
-- {class, cost, user requests ahead, user tokens ahead, class requests ahead, class tokens
--  ahead, then n and tok of every configured class in order, then one room per competitor}.
-- Within its class the count is exact if nothing else arrives: replaying start-time fair
-- queueing, another user's request goes first iff its start tag is smaller (ties: earlier
-- enqueued). Costs O(requests ahead in the class).
--
-- Competitors (optional): ARGV[o+1] = m, then m pairs (user key, weight) of users of the same
-- class who may submit more while this request waits. A competitor's "room" is how many tokens
-- of NEW requests it could still get dispatched ahead of this one: its next request would start
-- at the tag after its own queue (or at the class clock when idle), and every tag below this
-- request's start tag goes first, so room = max(0, start - tail) * weight. 0 when its queue
-- already reaches past this request. Rooms are returned as strings (floats).
local names, shares, o = classes()
local id = ARGV[o]
local req = redis.call('HMGET', req_key(id), 'u', 'p', 'c', 'w', 't', 'm')
if not req[1] then
  return false
end
local u, c, cost, t, m = req[1], req[2], tonumber(req[3]), tonumber(req[5]), req[6]

local function costs(ids)
  local out = {}
  for i, member in ipairs(ids) do
    local r = redis.call('HMGET', req_key(id_of(member)), 'c', 'w', 't')
    out[i] = {num(r[1], 0), num(r[2], 1), num(r[3], 0), member}
  end
  return out
end

local rank = redis.call('ZRANK', fifo_key(c, u), m)
local start = num(redis.call('HGET', user_key(c, u), 'vt'), 0)
local user_tok = 0
if rank > 0 then
  for _, r in ipairs(costs(redis.call('ZRANGE', fifo_key(c, u), 0, rank - 1))) do
    user_tok = user_tok + r[1]
    start = start + r[1] / r[2]
  end
end

local class_n, class_tok = rank, user_tok
local others = redis.call('ZRANGEBYSCORE', users_key(c), '-inf', start, 'WITHSCORES')
local tails = {}  -- backlogged user -> start tag of its next new request, if still below ours
for i = 1, #others, 2 do
  local v = others[i]
  if v ~= u then
    local s = tonumber(others[i + 1])
    -- Batches grow from 1 to 100: most users have only a request or two ahead (their tags
    -- stay close to the class clock), and reading 100 costs for each of them would make one
    -- position cost O(users x 100) instead of O(requests ahead).
    local offset, size, done = 0, 1, false
    while not done do
      local batch = redis.call('ZRANGE', fifo_key(c, v), offset, offset + size - 1)
      if #batch == 0 then
        break
      end
      for _, r in ipairs(costs(batch)) do
        if s < start or (s == start and (r[3] < t or (r[3] == t and r[4] < m))) then
          class_n = class_n + 1
          class_tok = class_tok + r[1]
          s = s + r[1] / r[2]
        else
          done = true
          break
        end
      end
      offset = offset + size
      size = math.min(2 * size, 100)
    end
    if not done then
      tails[v] = s
    end
  end
end

local out = {c, cost, rank, user_tok, class_n, class_tok}
for _, name in ipairs(names) do
  local state = redis.call('HMGET', class_key(name), 'n', 'tok')
  out[#out + 1] = num(state[1], 0)
  out[#out + 1] = num(state[2], 0)
end

local clock = num(redis.call('HGET', class_key(c), 'v'), 0)
local competitors = tonumber(ARGV[o + 1]) or 0
for i = 1, competitors do
  local v = ARGV[o + 2 * i]
  local weight = tonumber(ARGV[o + 2 * i + 1]) or 1
  local tail = nil
  if v ~= u then
    if tails[v] ~= nil then
      tail = tails[v]
    elseif redis.call('ZSCORE', users_key(c), v) == false then
      -- idle: its next request starts at the class clock, or its own tag if that is later
      tail = math.max(num(redis.call('HGET', user_key(c, v), 'vt'), 0), clock)
    end
  end
  local room = 0
  if tail ~= nil and tail < start then
    room = (start - tail) * weight
  end
  out[#out + 1] = tostring(room)
end
return out
