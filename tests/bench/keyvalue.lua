-- wrk script for tests/bench/keyvalue.sh: half the requests increment one hot counter
-- (/incr/default/hot), half get one of the 10,000 keys f0..f9999 the script's setup stored
-- (/get/default/fN, N uniform at random per request).
local n = 0
request = function()
  n = n + 1
  if n % 2 == 0 then
    return wrk.format("GET", "/incr/default/hot")
  end
  return wrk.format("GET", "/get/default/f" .. math.random(0, 9999))
end
