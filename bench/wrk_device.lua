-- wrk script for device writes (bench/httpgen.py runs it): one identity per wrk thread.
--
--   wrk -t T -c C -d D -s bench/wrk_device.lua URL -- TOKENS BODY [HEADER]
--
-- TOKENS is a file with one X-Exosite-CIK token per line, or "" for peers that take none;
-- with HEADER (e.g. Authorization) each line is that header's value instead (Basic …).
-- Thread i (1-based) puts token i on every request of each of its C/T connections, so each
-- connection keeps one identity for its life, and T devices write over C connections.  BODY
-- is the form body of `POST <URL path>` (Content-Length set by wrk.format).  The URL's host
-- is the Host header and the TLS SNI, but the address is always 127.0.0.1 (wrk.resolve
-- below replaces the name lookup), so `<cid>.m2.localhost` needs no resolver or hosts entry.
-- At the end one line `WRKJSON {...}` carries the counts and latency percentiles (µs).

local counter = 0

function wrk.resolve(host, service)
  wrk.addrs = wrk.lookup("127.0.0.1", service)
end

function setup(thread)
  counter = counter + 1
  thread:set("index", counter)
end

function init(args)
  local tokens = {}
  if args[1] ~= nil and args[1] ~= "" then
    for line in io.lines(args[1]) do
      if line ~= "" then
        tokens[#tokens + 1] = line
      end
    end
  end
  local header = args[3]
  if header == nil or header == "" then
    header = "X-Exosite-CIK"
  end
  wrk.method = "POST"
  wrk.body = args[2] or ""
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8"
  if #tokens > 0 then
    if index > #tokens then
      error("wrk thread " .. index .. " has no token (" .. #tokens .. " tokens)")
    end
    wrk.headers[header] = tokens[index]
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
      .. '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
