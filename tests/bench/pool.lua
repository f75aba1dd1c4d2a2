-- wrk script for tests/bench/bench.py: GET <path> with "Authorization: Bearer <token>", cycling
-- through a pool of tokens (one per line). Every configuration runs this same script; a
-- same-token run simply gets a pool of one, and a pool whose only line is "-" sends no
-- Authorization header (the outbound configurations: the proxy injects it).
--
--   wrk -t1 -c32 -d10s -s pool.lua http://127.0.0.1:PORT/data -- TOKEN_FILE [START_OFFSET [HEADER [PREFIX]]]
--
-- HEADER/PREFIX (default "Authorization" and "Bearer "): the session-cookie runs send each line as a
-- whole Cookie header ("Cookie" and "").
-- At the end one machine-readable line is printed: "WRKJSON {...}" (latencies in microseconds;
-- err_status counts responses that were not 2xx/3xx).

local tokens = {}
local n = 0
local i = 0
local header = "Authorization"

function init(args)
   header = args[3] or "Authorization"
   local prefix = args[4] or "Bearer "
   local f = assert(io.open(args[1], "r"))
   for line in f:lines() do
      if line == "-" then
         n = n + 1
         tokens[n] = false
      elseif #line > 0 then
         n = n + 1
         tokens[n] = prefix .. line
      end
   end
   f:close()
   assert(n > 0, "empty token file")
   i = (tonumber(args[2] or "0") or 0) % n
end

function request()
   i = i % n + 1
   if not tokens[i] then
      return wrk.format(nil, nil)
   end
   return wrk.format(nil, nil, { [header] = tokens[i] })
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
      '"err_write":%d,"err_status":%d,"err_timeout":%d,"lat_mean_us":%.1f,"lat_p50_us":%d,' ..
      '"lat_p90_us":%d,"lat_p99_us":%d,"lat_max_us":%d}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
      e.timeout, latency.mean, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max))
end
