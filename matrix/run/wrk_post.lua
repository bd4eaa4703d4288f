-- forkwise load script for wrk 4.x (run by forkwise.matrix.run.load).
-- POSTs JSON bodies round robin, read from the file given as the first script argument
-- (`wrk ... URL -- FILE`) or in $FORKWISE_WRK_BODIES, one body per line.
-- Each thread counts answers by status class in its own Lua state; done() (main state)
-- sums them with thread:get() and prints a marker line followed by one JSON object;
-- "sent" - "requests" is what was still in flight (unacknowledged) when the run stopped.
-- Latencies are in microseconds; they cover every answer wrk recorded (wrk cannot tell
-- which were 2xx). "grid" holds [percentile, value] pairs so runs can be merged.

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("tid", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

local reqs, n, i = {}, 0, 0

function init(args)
   local path = args[1] or os.getenv("FORKWISE_WRK_BODIES")
   local f = assert(io.open(path, "rb"), "cannot open bodies file " .. tostring(path))
   local headers = { ["Content-Type"] = "application/json" }
   for line in f:lines() do
      if #line > 0 then
         n = n + 1
         reqs[n] = wrk.format("POST", nil, headers, line)
      end
   end
   f:close()
   assert(n > 0, "no bodies in " .. path)
   i = (tid or 0) % n
   ok, http_4xx, http_5xx = 0, 0, 0
   -- wrk calls request() once on thread 0 to check the request before the run starts
   sent = (tid == 0) and -1 or 0
end

function request()
   i = i % n + 1
   sent = sent + 1
   return reqs[i]
end

function response(status, headers, body)
   if status >= 200 and status < 300 then
      ok = ok + 1
   elseif status >= 500 then
      http_5xx = http_5xx + 1
   elseif status >= 400 then
      http_4xx = http_4xx + 1
   end
end

local GRID = {}
for p = 1, 99 do GRID[#GRID + 1] = p end
for p = 99.1, 99.95, 0.1 do GRID[#GRID + 1] = p end
GRID[#GRID + 1] = 99.99

function done(summary, latency, requests)
   local sums = { ok = 0, http_4xx = 0, http_5xx = 0, sent = 0 }
   for _, t in ipairs(threads) do
      for k, v in pairs(sums) do sums[k] = v + (t:get(k) or 0) end
   end
   local e = summary.errors
   local answered = summary.requests - e.timeout
   local grid, mean, max = {}, 0, 0
   if answered > 0 then
      for _, p in ipairs(GRID) do
         grid[#grid + 1] = string.format("[%.2f,%d]", p, latency:percentile(p))
      end
      mean, max = latency.mean, latency.max
   end
   io.write("\n", "FORKWISE-WRK-JSON", "\n", string.format(
      '{"requests":%d,"sent":%d,"ok":%d,"http_4xx":%d,"http_5xx":%d,"timeout":%d,"connect":%d,' ..
      '"duration_us":%d,"mean_us":%.3f,"max_us":%d,"grid":[%s]}',
      summary.requests, sums.sent, sums.ok, sums.http_4xx, sums.http_5xx, e.timeout,
      e.connect + e.read + e.write, summary.duration, mean, max, table.concat(grid, ",")), "\n")
end
