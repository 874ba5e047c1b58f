-- Queue depth, read-only: for each configured class {n, tok, users...} where users is a flat
-- list of user, n, tok for every backlogged user of the class.
local names = classes()
local out = {}
for _, c in ipairs(names) do
  local state = redis.call('HMGET', class_key(c), 'n', 'tok')
  local users = {}
  for _, u in ipairs(redis.call('ZRANGE', users_key(c), 0, -1)) do
    local row = redis.call('HMGET', user_key(c, u), 'n', 'tok')
    users[#users + 1] = u
    users[#users + 1] = num(row[1], 0)
    users[#users + 1] = num(row[2], 0)
  end
  out[#out + 1] = {num(state[1], 0), num(state[2], 0), users}
end
return out
