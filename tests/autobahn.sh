#!/usr/bin/env bash
# Runs the Autobahn TestSuite (wstest -m fuzzingclient, cases 1.* – 10.*) against
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

if [ ! -x "$wstest_home/bin/wstest" ]; then
  py2="$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")/versions/2.7.18/bin"
  if [ -x "$py2/pip" ]; then
    echo "installing autobahntestsuite 0.8.2 under $wstest_home (Python 2.7)"
    PYTHONUSERBASE=$wstest_home "$py2/pip" install -q --user autobahntestsuite==0.8.2
  else
    echo "Python 2.7 is missing: install pyenv 2.7.18 or use kosoku" >&2
    exit 1
  fi
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

cat >"$work/fuzzingclient.json" <<JSON
{
  "outdir": "$work/reports",
  "servers": [{"agent": "matchstream", "url": "ws://$addr/1/echo"}],
  "cases": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "8.*", "9.*", "10.*"],
  "exclude-cases": ["12.*", "13.*"],
  "exclude-agent-cases": {}
}
JSON
rm -rf "$work/reports"
(cd "$work" && PYTHONUSERBASE=$wstest_home timeout 1200 "$wstest_home/bin/wstest" -m fuzzingclient -s fuzzingclient.json \
  >"$work/wstest.log" 2>&1) || { tail -20 "$work/wstest.log"; exit 1; }

python3 tests/autobahn_compare.py "$work/reports/index.json" autobahn/expected-results.json
