-- Helpers shared by every scheduler_*.lua script (prepended to each one when it is loaded).
--
-- Layout (all under gw:sch:, <c> = priority class, <u> = user key, <id> = request id):
--   req:<id>        hash u, p, c = cost (tokens), w = weight, t = enqueued_at (s), m = member
--   fifo:<c>:<u>    zset of members (zero-padded ids) scored by enqueued_at: one user's FIFO
--   users:<c>       zset of BACKLOGGED users of a class scored by their start tag (virtual time)
--   user:<c>:<u>    hash vt = start tag of the user's next request, n, tok = queued count/tokens
--                   (kept with a TTL after the user's queue empties, so idling earns no credit)
--   class:<c>       hash v = class virtual time, n, tok = queued count/tokens, d = share credit
-- Keys are derived from data inside the scripts: one Redis (or Sentinel), not Redis Cluster.
--
-- ARGV[1] = number of classes K, ARGV[2..K+1] class names highest priority first,
-- ARGV[K+2..2K+1] their minimum shares; script-specific arguments follow at ARGV[2K+2].

local P = 'gw:sch:'

local function req_key(id) return P .. 'req:' .. id end
local function fifo_key(c, u) return P .. 'fifo:' .. c .. ':' .. u end
local function users_key(c) return P .. 'users:' .. c end
local function user_key(c, u) return P .. 'user:' .. c .. ':' .. u end
local function class_key(c) return P .. 'class:' .. c end

local function classes()
  local k = tonumber(ARGV[1])
  local names, shares = {}, {}
  for i = 1, k do
    names[i] = ARGV[1 + i]
    shares[i] = tonumber(ARGV[1 + k + i])
  end
  return names, shares, 2 * k + 2
end

local function num(value, default)
  return tonumber(value) or default
end

-- Members are zero-padded ids (so equal enqueue times sort by id); never round-trip an id
-- through a Lua number, whose tostring keeps only 14 digits.
local function id_of(member)
  local id = string.gsub(member, '^0+(%d)', '%1')
  return id
end

-- The user of class c whose next request starts first (smallest start tag); ties go to the
-- earliest-enqueued head, then the lowest id, so a rebuilt queue keeps its original order.
local function head_user(c)
  local first = redis.call('ZRANGE', users_key(c), 0, 0, 'WITHSCORES')
  if #first == 0 then
    return nil
  end
  local tied = redis.call('ZRANGEBYSCORE', users_key(c), first[2], first[2], 'LIMIT', 0, 100)
  if #tied <= 1 then
    return first[1]
  end
  local best, best_t, best_m = nil, nil, nil
  for _, u in ipairs(tied) do
    local head = redis.call('ZRANGE', fifo_key(c, u), 0, 0, 'WITHSCORES')
    if #head > 0 then
      local t = tonumber(head[2])
      if best == nil or t < best_t or (t == best_t and head[1] < best_m) then
        best, best_t, best_m = u, t, head[1]
      end
    end
  end
  return best or first[1]
end

-- Cost of the request class c would dispatch next (0 if none).
local function head_cost(c)
  local u = head_user(c)
  if u == nil then
    return 0
  end
  local first = redis.call('ZRANGE', fifo_key(c, u), 0, 0)
  if #first == 0 then
    return 0
  end
  return num(redis.call('HGET', req_key(id_of(first[1])), 'c'), 0)
end

-- Which class dispatches next: the highest-priority non-empty class whose share credit covers
-- its next request (it was owed that much service while competing), else the highest
-- non-empty class.
local function head_class(names, shares)
  local first = nil
  for i, c in ipairs(names) do
    local state = redis.call('HMGET', class_key(c), 'n', 'd')
    if num(state[1], 0) > 0 then
      local credit = num(state[2], 0)
      if shares[i] > 0 and credit > 0 and credit >= head_cost(c) then
        return c
      end
      if first == nil then
        first = c
      end
    end
  end
  return first
end

-- {member, class, user} of the request dispatch would take next, or nil.
local function head(names, shares)
  local c = head_class(names, shares)
  if c == nil then
    return nil
  end
  local u = head_user(c)
  if u == nil then
    return nil
  end
  local first = redis.call('ZRANGE', fifo_key(c, u), 0, 0)
  if #first == 0 then
    return nil
  end
  return {first[1], c, u}
end

-- Take request (member m of user u in class c) out of the queue. With dispatched = true also
-- advance the fair-queueing clocks and the class shares (a dispatch); false is a cancel.
local function take(names, shares, m, c, u, dispatched, idle_ttl)
  local id = id_of(m)
  local req = redis.call('HMGET', req_key(id), 'c', 'w')
  local cost = num(req[1], 0)
  local weight = num(req[2], 1)
  redis.call('ZREM', fifo_key(c, u), m)
  redis.call('DEL', req_key(id))

  local uk = user_key(c, u)
  local user = redis.call('HMGET', uk, 'vt', 'n')
  local vt = num(user[1], 0)
  local left = num(user[2], 1) - 1
  if dispatched then
    -- start-time fair queueing: the class clock moves to the start tag just served
    redis.call('HSET', class_key(c), 'v', vt)
    vt = vt + cost / weight
  end
  redis.call('HSET', uk, 'vt', vt, 'n', left)
  redis.call('HINCRBY', uk, 'tok', -cost)
  if left <= 0 then
    redis.call('ZREM', users_key(c), u)
    redis.call('HSET', uk, 'n', 0, 'tok', 0)
    redis.call('EXPIRE', uk, idle_ttl)
  else
    redis.call('ZADD', users_key(c), vt, u)
  end

  if dispatched then
    -- every competing (non-empty) class earns its share of this dispatch as credit; the class
    -- served spends the cost. Credit never goes below zero: being served while nobody else
    -- was owed anything is not held against a class later.
    for i, name in ipairs(names) do
      local ck = class_key(name)
      if num(redis.call('HGET', ck, 'n'), 0) > 0 then
        local d = num(redis.call('HGET', ck, 'd'), 0) + cost * shares[i]
        if name == c then
          d = math.max(d - cost, 0)
        end
        redis.call('HSET', ck, 'd', d)
      end
    end
  end
  local ck = class_key(c)
  local n = redis.call('HINCRBY', ck, 'n', -1)
  redis.call('HINCRBY', ck, 'tok', -cost)
  if n <= 0 then
    -- an empty class banks no credit for later
    redis.call('HSET', ck, 'n', 0, 'tok', 0, 'd', 0)
  end
end
