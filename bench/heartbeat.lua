-- wrk script for bench/heartbeat.py: each request is one node's heartbeat, the nodes taken in turn from the
-- file given after "--" (one "id secret" a line), as the real agent sends it (its secret in the header).
local nodes, i = {}, 0
local body = '{"running":[],"usage":{"cpu_percent":5.0,"memory_percent":10.0}}'

function init(args)
  for line in io.lines(args[1]) do
    local id, secret = line:match("(%S+) (%S+)")
    nodes[#nodes + 1] = {id, secret}
  end
  i = math.random(#nodes)
end

function request()
  i = i % #nodes + 1
  return wrk.format("POST", "/v1/agent/nodes/" .. nodes[i][1] .. "/heartbeat",
                    {["Content-Type"] = "application/json", ["X-Corral-Node-Secret"] = nodes[i][2]}, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {"requests": %d, "seconds": %.3f, "errors": %d, "non_2xx": %d, ' ..
                         '"p50_ms": %.2f, "p99_ms": %.2f}\n', summary.requests, summary.duration / 1e6,
                         e.connect + e.read + e.write + e.timeout, e.status,
                         latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
