-- wrk script: create orders at full speed for many customers and products.
--   wrk -t2 -c32 -d10s -s bench/create_order.lua http://127.0.0.1:PORT
-- BENCH_CUSTOMERS / BENCH_PRODUCTS (environment) size the id ranges (default 1000 / 50);
-- every request has two distinct products with quantities 1..3.
-- At the end prints one line "BENCH_JSON {...}" with throughput, latency percentiles
-- and the number of non-2xx answers (counted per thread in response()).
-- After a 503 (refused: overload) the thread's next request waits BACKOFF_MS, as a
-- client honouring Retry-After would wait (a shorter time: this is a load test), so
-- a refused connection does not spin on refusals that cost the server CPU.

local BACKOFF_MS = 10

local customers = tonumber(os.getenv("BENCH_CUSTOMERS") or "1000")
local products = tonumber(os.getenv("BENCH_PRODUCTS") or "50")
local threads = {}

function setup(thread)
   thread:set("id", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   math.randomseed(id * 7919 + os.time())
   bad = 0
   first_bad = 0
   refused = 0
   backoff = false
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
end

function request()
   local c = math.random(customers)
   local p1 = math.random(products)
   local p2 = math.random(products - 1)
   if p2 >= p1 then p2 = p2 + 1 end
   local body = string.format(
      '{"items":[{"productID":"%d","quantity":%d},{"productID":"%d","quantity":%d}]}',
      p1, math.random(3), p2, math.random(3))
   return wrk.format("POST", "/api/customers/c" .. c .. "/orders", nil, body)
end

function delay()
   if backoff then
      backoff = false
      return BACKOFF_MS
   end
   return 0
end

function response(status, headers, body)
   if status == 503 then
      refused = refused + 1
      backoff = true
   end
   if status < 200 or status > 299 then
      bad = bad + 1
      if first_bad == 0 then first_bad = status end
   end
end

function done(summary, latency, requests)
   local bad_total, first, refused_total = 0, 0, 0
   for _, t in ipairs(threads) do
      bad_total = bad_total + (t:get("bad") or 0)
      refused_total = refused_total + (t:get("refused") or 0)
      local f = t:get("first_bad") or 0
      if first == 0 then first = f end
   end
   local e = summary.errors
   local secs = summary.duration / 1e6
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"seconds":%.3f,"rps":%.1f,"ok":%d,"errors":%d,"refused_503":%d,' ..
      '"first_error_status":%d,"socket_errors":%d,"p50_ms":%.3f,"p90_ms":%.3f,' ..
      '"p99_ms":%.3f,"max_ms":%.3f}\n',
      summary.requests, secs, (summary.requests - bad_total) / secs,
      summary.requests - bad_total, bad_total, refused_total, first,
      e.connect + e.read + e.write + e.timeout,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000,
      latency:percentile(99) / 1000, latency.max / 1000))
end
