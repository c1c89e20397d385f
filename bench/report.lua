-- wrk script for plain GETs (the /healthz ceiling): prints "BENCH_JSON {...}" like
-- create_order.lua (non-2xx are counted as errors).
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   bad = 0
end

function response(status, headers, body)
   if status < 200 or status > 299 then bad = bad + 1 end
end

function done(summary, latency, requests)
   local bad_total = 0
   for _, t in ipairs(threads) do bad_total = bad_total + (t:get("bad") or 0) end
   local e = summary.errors
   local secs = summary.duration / 1e6
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"seconds":%.3f,"rps":%.1f,"ok":%d,"errors":%d,' ..
      '"socket_errors":%d,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f}\n',
      summary.requests, secs, (summary.requests - bad_total) / secs,
      summary.requests - bad_total, bad_total, e.connect + e.read + e.write + e.timeout,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000,
      latency:percentile(99) / 1000, latency.max / 1000))
end
