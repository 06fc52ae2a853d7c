-- wrk script of the GET measurements (benches/get_vs_nginx.sh, benches/writes_reads.sh): prints
-- the latency p50/p99 in ms and the count of errors (non-2xx/3xx, connect, read, timeout).
function done(summary, latency, requests)
    io.write(string.format("P50_MS %.3f\nP99_MS %.3f\nERRORS %d\n", latency:percentile(50) / 1000,
        latency:percentile(99) / 1000, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout))
end
