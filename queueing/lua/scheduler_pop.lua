-- Dispatch request ARGV[o] only if it is still the head (1), else change nothing (0): of two
-- dispatchers that peeked the same head, exactly one wins. ARGV[o+1] = idle-user TTL s.
local names, shares, o = classes()
local h = head(names, shares)
if h == nil or id_of(h[1]) ~= ARGV[o] then
  return 0
end
take(names, shares, h[1], h[2], h[3], true, tonumber(ARGV[o + 1]))
return 1
