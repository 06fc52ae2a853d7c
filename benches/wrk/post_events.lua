-- wrk script of the durable-write storm (benches/write_storm.sh, benches/writes_reads.sh):
-- POSTs a comment to /1/match/elp-tig-2011-10-NN/events, round-robin over STORM_MATCHES
-- matches, with the admin token STORM_TOKEN (both from the environment); counts the answers
-- by status and prints ACKED, BUSY_503, OTHER and the latency p50/p99 in ms.
local matches = tonumber(os.getenv("STORM_MATCHES") or "8")
local token = os.getenv("STORM_TOKEN") or ""
local counter = 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
    created = 0; refused = 0; other = 0
    wrk.method = "POST"
    wrk.headers["Authorization"] = "Bearer " .. token
    wrk.headers["Content-Type"] = "application/json"
    wrk.body = '{"kind":"comment","data":{"text":"storm"}}'
end
function request()
    counter = counter + 1
    return wrk.format(nil, string.format("/1/match/elp-tig-2011-10-%02d/events", (counter % matches) + 1))
end
function response(status, headers, body)
    if status == 201 then created = created + 1
    elseif status == 503 then refused = refused + 1
    else other = other + 1 end
end
function done(summary, latency, requests)
    local c, r, o = 0, 0, 0
    for _, t in ipairs(threads) do
        c = c + t:get("created"); r = r + t:get("refused"); o = o + t:get("other")
    end
    io.write(string.format("ACKED %d\nBUSY_503 %d\nOTHER %d\n", c, r, o))
    io.write(string.format("P50_MS %.3f\nP99_MS %.3f\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
