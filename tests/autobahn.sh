#!/usr/bin/env bash
# Runs the Autobahn TestSuite (wstest -m fuzzingclient, cases 1.* – 10.*, and 12.* – 13.*
# for permessage-deflate) against
# `matchstream serve --enable-echo` on /1/echo and compares every case with the committed
# expectation in autobahn/expected-results.json. Any case that is not OK / NON-STRICT /
# INFORMATIONAL, or that is worse than expected, fails the run.
#   bash tests/autobahn.sh            # uses target/release/matchstream
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin=${MATCHSTREAM_BIN:-$root/target/release/matchstream}
work=$root/target/autobahn
wstest_home=${WSTEST_HOME:-/opt/wstest}
mkdir -p "$work"

py2="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")/versions/2.7.18/bin"
if [ ! -x "$wstest_home/bin/wstest" ]; then
  if [ -x "$py2/pip" ]; then
    echo "installing autobahntestsuite 0.8.2 under $wstest_home (Python 2.7)"
    PYTHONUSERBASE=$wstest_home "$py2/pip" install -q --user autobahntestsuite==0.8.2
  else
    echo "Python 2.7 is missing: install pyenv 2.7.18 or use kosoku" >&2
    exit 1
  fi
fi

# wsaccel: C masking and UTF-8 checks for the Python client, which otherwise spends many
# minutes XOR-ing the ~2 GB that cases 12.x/13.x move. Optional: without it the run is slower.
if [ -x "$py2/pip" ] && ! PYTHONUSERBASE=$wstest_home "$py2/python" -c 'import wsaccel' 2>/dev/null; then
  PYTHONUSERBASE=$wstest_home "$py2/pip" install -q --user wsaccel==0.6.2 || true
fi

[ -x "$bin" ] || cargo build --release --locked --bins
"$bin" serve --enable-echo --listen 127.0.0.1:0 --tcp-listen 127.0.0.1:0 --workers 2 \
  --data-dir "$work/data" --admin-token autobahn >"$work/server.out" 2>"$work/server.err" &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q "listening" "$work/server.out" 2>/dev/null && break
  sleep 0.1
done
addr=$(sed -n 's/.*listening http=\([^ ]*\).*/\1/p' "$work/server.out")
[ -n "$addr" ] || { echo "server did not start"; cat "$work/server.err"; exit 1; }

# Three wstest clients in parallel (the Python client, not the server, is the bottleneck; the
# compression groups send 1,000 messages of up to 128 KiB per case), each on a share of the
# cases; their reports are merged before the comparison.
groups=('"1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "8.*", "9.*", "10.*", "12.*"'
        '"13.1.*", "13.2.*", "13.3.*"'
        '"13.4.*", "13.5.*", "13.6.*", "13.7.*"')
rm -rf "$work"/reports-*
pids=()
for i in "${!groups[@]}"; do
  cat >"$work/fuzzingclient-$i.json" <<JSON
{
  "outdir": "$work/reports-$i",
  "servers": [{"agent": "matchstream", "url": "ws://$addr/1/echo"}],
  "cases": [${groups[$i]}],
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
JSON
  (cd "$work" && PYTHONUSERBASE=$wstest_home timeout 2400 "$wstest_home/bin/wstest" -m fuzzingclient \
    -s "fuzzingclient-$i.json" >"$work/wstest-$i.log" 2>&1) &
  pids+=($!)
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { tail -20 "$work/wstest-$i.log"; exit 1; }
done
python3 - "$work" "${#groups[@]}" <<'PY'
import json, sys
work, n = sys.argv[1], int(sys.argv[2])
merged = {}
for i in range(n):
    for agent, cases in json.load(open("%s/reports-%d/index.json" % (work, i))).items():
        merged.setdefault(agent, {}).update(cases)
json.dump(merged, open("%s/index.json" % work, "w"), indent=1, sort_keys=True)
PY

python3 tests/autobahn_compare.py "$work/index.json" autobahn/expected-results.json
