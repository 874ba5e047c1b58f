-- Give a reservation back (cancelled, or failed before anything was billed). Idempotent.
-- KEYS[1] reservation; ARGV[1] request id. Returns 1 if a reservation was released, else 0.
-- It leaves no marker: if the call was billed after all, a later settle still counts it.
if drop_reservation(KEYS[1], ARGV[1]) then
  return 1
end
return 0
