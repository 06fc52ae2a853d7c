#!/usr/bin/env bash
# Tests of tuning/check, tuning/apply and tuning/revert.
#
#   bash tests/tuning.sh
#
# Never changes the host's own settings: net.* keys are applied and reverted only inside a
# fresh network namespace (unshare -n), host-wide keys only with --dry-run or in a scratch
# sysctl tree (--sysctl-root). Prints "ok - NAME" / "not ok - NAME" per test and a last line
# "N passed, M failed"; exits non-zero on any failure.
# shellcheck source-path=SCRIPTDIR/..
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# --- inside the namespace: run by the outer script as `unshare -n bash tests/tuning.sh --in-netns DIR`
if [ "${1:-}" = --in-netns ]; then
  dir=$2
  source tuning/lib.sh
  res() { if [ "$1" = 0 ]; then echo "ok - $2"; else echo "not ok - $2${3:+: $3}"; fi; }
  if in_host_netns; then
    res 1 "netns: running in a fresh network namespace" "host-wide keys visible; refusing to go on"
    exit 0
  fi
  mapfile -t keys < <(profile_entries | while IFS=$'\t' read -r k _; do
    read -r _ _ scope <<<"$(key_meta "$k")"
    if [ "$scope" = netns ]; then echo "$k"; fi
  done)
  snapshot() { for k in "${keys[@]}"; do printf '%s=%s\n' "$k" "$(sysctl -n "$k" | xargs)"; done; }
  snapshot >"$dir/before"
  state=$dir/state
  out=$(tuning/apply --only-netns --state "$state" 2>&1) && rc=0 || rc=$?
  res "$rc" "netns: apply --only-netns exits 0" "$out"
  snapshot >"$dir/applied"
  changed=$(diff "$dir/before" "$dir/applied" | grep -c '^>' || true)
  [ "$changed" -gt 0 ] && rc=0 || rc=1
  res "$rc" "netns: apply changed values ($changed keys)"
  bad=""
  for k in "${keys[@]}"; do
    read -r mode _ _ <<<"$(key_meta "$k")"
    meets "$mode" "$(sysctl -n "$k" | xargs)" "$(profile_value "$k")" || bad+=" $k"
  done
  res "$([ -z "$bad" ] && echo 0 || echo 1)" "netns: every net.* key meets the profile after apply" "$bad"
  [ -f "$state" ] && rc=0 || rc=1
  res "$rc" "netns: state file written"
  saved=$(grep -c '=' "$state" || true)
  [ "$saved" = "$changed" ] && rc=0 || rc=1
  res "$rc" "netns: state file saves exactly the changed keys ($saved)"
  cp "$state" "$dir/state.first"
  out=$(tuning/apply --only-netns --state "$state" 2>&1) && rc=0 || rc=$?
  { [ "$rc" = 0 ] && cmp -s "$state" "$dir/state.first" && [[ $out == *"applied 0 changes"* ]]; } && rc=0 || rc=1
  res "$rc" "netns: second apply is a no-op and keeps the saved originals" "$out"
  out=$(tuning/check --connections 100000 --workers 1000 2>&1) || true
  bad=""
  for k in "${keys[@]}"; do
    grep -E "^  $k +" <<<"$out" | grep -qE ' ok($|  )' || bad+=" $k"
  done
  res "$([ -z "$bad" ] && echo 0 || echo 1)" "netns: check reports every net.* key ok after apply" "$bad"
  out=$(tuning/revert --only-netns --state "$state" 2>&1) && rc=0 || rc=$?
  res "$rc" "netns: revert exits 0" "$out"
  snapshot >"$dir/after"
  if cmp -s "$dir/before" "$dir/after"; then rc=0; else rc=1; fi
  res "$rc" "netns: revert restores every value exactly" "$(diff "$dir/before" "$dir/after" || true)"
  [ ! -e "$state" ] && rc=0 || rc=1
  res "$rc" "netns: revert removes the state file"
  out=$(tuning/revert --only-netns --state "$state" 2>&1) && rc=0 || rc=$?
  { [ "$rc" = 0 ] && [[ $out == *"nothing to revert"* ]]; } && rc=0 || rc=1
  res "$rc" "netns: second revert is a no-op" "$out"
  exit 0
fi

passed=0
failed=0
ok() {
  passed=$((passed + 1))
  echo "ok - $1"
}
not_ok() {
  failed=$((failed + 1))
  echo "not ok - $1"
  if [ -n "${2:-}" ]; then printf '%s\n' "$2" | sed 's/^/#   /'; fi
}
# check_that NAME COMMAND...: ok when COMMAND succeeds.
check_that() {
  local name=$1
  shift
  if "$@"; then ok "$name"; else not_ok "$name"; fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source tuning/lib.sh

# Every profile key as "KEY=VALUE" read from the live kernel (absent keys show as "-").
host_snapshot() {
  profile_entries | while IFS=$'\t' read -r k _; do printf '%s=%s\n' "$k" "$(read_key "$k" || echo -)"; done
}
host_snapshot >"$tmp/host.before"

# --- static -------------------------------------------------------------------------------
if command -v shellcheck >/dev/null 2>&1; then
  if out=$(shellcheck -x tuning/check tuning/apply tuning/revert tuning/lib.sh tests/*.sh 2>&1); then
    ok "shellcheck: tuning/* and tests/*.sh are clean"
  else
    not_ok "shellcheck: tuning/* and tests/*.sh are clean" "$out"
  fi
else
  not_ok "shellcheck: installed (bash tests/install.sh)"
fi

missing=""
while IFS=$'\t' read -r k _; do key_meta "$k" >/dev/null || missing+=" $k"; done < <(profile_entries)
check_that "profile: every key has a key_meta row$missing" test -z "$missing"
rust_reserve=$(grep -oE 'RESERVED_FDS_PER_WORKER: u64 = [0-9]+' src/os/limits.rs | grep -oE '[0-9]+$')
check_that "reserve per worker agrees with src/os/limits.rs ($RESERVED_FDS = ${rust_reserve:-?})" \
  test "$RESERVED_FDS" = "${rust_reserve:-}"
for pair in "PLAIN_WATCHER_BYTES SERVER_BYTES_PLAIN" "TLS_WATCHER_BYTES SERVER_BYTES_TLS"; do
  read -r rust_name sh_name <<<"$pair"
  rust_value=$(grep -oE "$rust_name: u64 = [0-9_]+" src/server/footprint.rs | grep -oE '[0-9_]+$' | tr -d _)
  check_that "$sh_name agrees with $rust_name in src/server/footprint.rs (${!sh_name} = ${rust_value:-?})" \
    test "${!sh_name}" = "${rust_value:-}"
done
unit_ok=1
for line in 'ExecStart=/usr/local/bin/matchstream serve' 'LimitNOFILE=1048576' 'LimitMEMLOCK=infinity' \
  'KillSignal=SIGTERM' 'TimeoutStopSec=' 'Restart=on-failure'; do
  grep -q "^$line" tuning/matchstream.service || unit_ok=0
done
check_that "systemd unit: ExecStart, LimitNOFILE, LimitMEMLOCK, KillSignal, TimeoutStopSec, Restart" test "$unit_ok" = 1
check_that "limits.d: nofile 1048576 and memlock unlimited" \
  bash -c "grep -qE 'hard +nofile +1048576' tuning/limits.d/90-matchstream.conf && grep -qE 'memlock +unlimited' tuning/limits.d/90-matchstream.conf"

# --- check ----------------------------------------------------------------------------------
hard=$(ulimit -Hn)
cpus=$(nproc)
out=$(tuning/check --connections 100000 2>&1) && rc=0 || rc=$?
per=$((hard - RESERVED_FDS))
need=$(((100000 + per - 1) / per))
if [ $((cpus * per)) -lt 100000 ]; then
  if [ "$rc" = 1 ] && [[ $out == *"hard limit $hard < 100000"* ]] &&
    [[ $out == *"matchstream serve --workers $need"* ]] && [[ $out == *"NOT READY"* ]]; then
    ok "check --connections 100000: not ready here (hard limit $hard, $cpus CPUs), advises --workers $need"
  else
    not_ok "check --connections 100000: not ready here (hard limit $hard, $cpus CPUs), advises --workers $need" "rc=$rc
$out"
  fi
else
  if [[ $out == *"workers x $per = "*" >= 100000: ok"* ]]; then
    ok "check --connections 100000: capacity ok here (hard limit $hard)"
  else
    not_ok "check --connections 100000: capacity ok here (hard limit $hard)" "$out"
  fi
fi

# The same with a 20,000 hard limit on any host (lowering a limit needs no privilege).
if (ulimit -n 20000) 2>/dev/null; then
  out=$(ulimit -n 20000 && tuning/check --connections 100000 --workers 2 2>&1) && rc=0 || rc=$?
  if [ "$rc" = 1 ] && [[ $out == *"hard limit 20000 < 100000"* ]] &&
    grep -qF "\`matchstream serve --workers 6\`" <<<"$out" && [[ $out == *"2 workers x 19936 = 39872 connections < 100000: FAIL"* ]]; then
    ok "check at hard limit 20000, 2 workers: not ready, prints 20000 and --workers 6"
  else
    not_ok "check at hard limit 20000, 2 workers: not ready, prints 20000 and --workers 6" "rc=$rc
$out"
  fi
  out=$(ulimit -n 20000 && tuning/check --connections 100000 --workers 6 2>&1) || true
  check_that "check at hard limit 20000, 6 workers: capacity 119616 >= 100000 ok" \
    grep -q "6 workers x 19936 = 119616 connections >= 100000: ok" <<<"$out"
else
  ok "check at hard limit 20000 # skip: hard limit already below 20000"
fi

out=$(tuning/check --connections 100000 2>&1) || true
if [[ $out == *"io_uring:"* ]] && [[ $out == *RLIMIT_NOFILE* ]] && [[ $out == *RLIMIT_MEMLOCK* ]]; then
  ok "check reports io_uring and RLIMIT_NOFILE / RLIMIT_MEMLOCK"
else
  not_ok "check reports io_uring and RLIMIT_NOFILE / RLIMIT_MEMLOCK" "$out"
fi
out=$(tuning/check --connections 1000000 2>&1) || true
check_that "check scales with --connections (file-max >= 2065536 for 1M)" grep -q ">= 2065536" <<<"$out"
out=$(tuning/check --connections nope 2>&1) && rc=0 || rc=$?
check_that "check rejects a bad --connections with exit 2" test "$rc" = 2

# A scratch sysctl tree: ready when everything meets the profile, not ready on a FAIL key.
fake=$tmp/sys
make_tree() {
  rm -rf "$fake"
  while IFS=$'\t' read -r k v; do
    mkdir -p "$(dirname "$fake/${k//.//}")"
    printf '%s\n' "$v" >"$fake/${k//.//}"
  done < <(profile_entries)
  mkdir -p "$fake/kernel"
  echo 0 >"$fake/kernel/io_uring_disabled"
}
make_tree
out=$(tuning/check --sysctl-root "$fake" --connections 1000 --workers 1000 2>&1) && rc=0 || rc=$?
if [ "$rc" = 0 ] && [[ $out == *"READY for 1000 connections"* ]]; then
  ok "check on a tree at the profile values: READY, exit 0"
else
  not_ok "check on a tree at the profile values: READY, exit 0" "rc=$rc
$out"
fi
echo 1000 >"$fake/fs/file-max"
out=$(tuning/check --sysctl-root "$fake" --connections 1000 --workers 1000 2>&1) && rc=0 || rc=$?
if [ "$rc" = 1 ] && grep -qE '^  fs.file-max +1000 .*FAIL' <<<"$out"; then
  ok "check with fs.file-max too low: FAIL, exit 1"
else
  not_ok "check with fs.file-max too low: FAIL, exit 1" "rc=$rc
$out"
fi

# --- apply / revert of host-wide keys: scratch tree round trip, then --dry-run on the host ------
make_tree
# Values below (or, for <= keys, above) the profile, like a fresh host.
printf '%s\n' 1000 >"$fake/fs/file-max"
printf '%s\n' 1024 >"$fake/fs/nr_open"
printf '%s\n' "1000 2000 3000" >"$fake/net/ipv4/tcp_mem"
printf '%s\n' "32768 60999" >"$fake/net/ipv4/ip_local_port_range"
printf '%s\n' 7200 >"$fake/net/ipv4/tcp_keepalive_time"
printf '%s\n' 99999999 >"$fake/net/netfilter/nf_conntrack_max"
(cd "$fake" && find . -type f | sort | while read -r f; do printf '%s=%s\n' "$f" "$(xargs <"$f")"; done) >"$tmp/tree.before"
state=$tmp/tree.state
out=$(tuning/apply --sysctl-root "$fake" --state "$state" 2>&1) && rc=0 || rc=$?
tree_ok=1
[ "$rc" = 0 ] || tree_ok=0
[ "$(xargs <"$fake/fs/file-max")" = "$(profile_value fs.file-max)" ] || tree_ok=0
[ "$(xargs <"$fake/net/ipv4/tcp_mem")" = "$(profile_value net.ipv4.tcp_mem)" ] || tree_ok=0
[ "$(xargs <"$fake/net/ipv4/tcp_keepalive_time")" = 300 ] || tree_ok=0
# A >= key already above the profile is never lowered.
[ "$(xargs <"$fake/net/netfilter/nf_conntrack_max")" = 99999999 ] || tree_ok=0
if [ "$tree_ok" = 1 ]; then ok "apply (scratch tree): raises fs.* / tcp_mem, lowers keepalive, never lowers a higher value"; else not_ok "apply (scratch tree): raises fs.* / tcp_mem, lowers keepalive, never lowers a higher value" "$out"; fi
cp "$state" "$tmp/tree.state.first"
tuning/apply --sysctl-root "$fake" --state "$state" >/dev/null 2>&1 || true
check_that "apply (scratch tree) twice: state file keeps the first originals" cmp -s "$state" "$tmp/tree.state.first"
out=$(tuning/revert --sysctl-root "$fake" --state "$state" 2>&1) && rc=0 || rc=$?
(cd "$fake" && find . -type f | sort | while read -r f; do printf '%s=%s\n' "$f" "$(xargs <"$f")"; done) >"$tmp/tree.after"
if [ "$rc" = 0 ] && cmp -s "$tmp/tree.before" "$tmp/tree.after" && [ ! -e "$state" ]; then
  ok "revert (scratch tree): every value back exactly, state file removed"
else
  not_ok "revert (scratch tree): every value back exactly, state file removed" "$out
$(diff "$tmp/tree.before" "$tmp/tree.after" || true)"
fi

# --persist into a scratch /etc, and revert removes what it installed.
etc=$tmp/etc
make_tree
state=$tmp/persist.state
MATCHSTREAM_TUNING_ETC=$etc tuning/apply --sysctl-root "$fake" --state "$state" --persist >/dev/null 2>&1 || true
persist_ok=1
cmp -s tuning/sysctl.d/90-matchstream.conf "$etc/sysctl.d/90-matchstream.conf" || persist_ok=0
cmp -s tuning/limits.d/90-matchstream.conf "$etc/security/limits.d/90-matchstream.conf" || persist_ok=0
MATCHSTREAM_TUNING_ETC=$etc tuning/revert --sysctl-root "$fake" --state "$state" >/dev/null 2>&1 || persist_ok=0
[ -e "$etc/sysctl.d/90-matchstream.conf" ] && persist_ok=0
[ -e "$state" ] && persist_ok=0
check_that "apply --persist installs sysctl.d and limits.d files; revert removes them" test "$persist_ok" = 1

# The live host, dry run only: prints the plan, writes nothing.
state=$tmp/host.state
out=$(tuning/apply --dry-run --state "$state" 2>&1) && rc=0 || rc=$?
host_snapshot >"$tmp/host.dry"
if [ "$rc" = 0 ] && [[ $out == *"dry run:"* ]] && [[ $out == *"fs.file-max"* ]] && [[ $out == *"fs.nr_open"* ]] &&
  [ ! -e "$state" ] && cmp -s "$tmp/host.before" "$tmp/host.dry"; then
  ok "apply --dry-run on the host: lists fs.* keys, changes nothing, writes no state"
else
  not_ok "apply --dry-run on the host: lists fs.* keys, changes nothing, writes no state" "rc=$rc
$out"
fi
printf '# test\nfs.file-max = 12345\nfs.nr_open = 4096\n' >"$state"
out=$(tuning/revert --dry-run --state "$state" 2>&1) && rc=0 || rc=$?
host_snapshot >"$tmp/host.dry2"
if [ "$rc" = 0 ] && [[ $out == *"would set fs.file-max"* ]] && [ -e "$state" ] && cmp -s "$tmp/host.before" "$tmp/host.dry2"; then
  ok "revert --dry-run on the host: lists fs.* keys, changes nothing, keeps the state"
else
  not_ok "revert --dry-run on the host: lists fs.* keys, changes nothing, keeps the state" "rc=$rc
$out"
fi
rm -f "$state"

if [ -e /proc/sys/net/ipv4/tcp_mem ]; then
  out=$(tuning/apply --only-netns --state "$tmp/refused.state" 2>&1) && rc=0 || rc=$?
  host_snapshot >"$tmp/host.refused"
  if [ "$rc" = 2 ] && [[ $out == *refusing* ]] && cmp -s "$tmp/host.before" "$tmp/host.refused"; then
    ok "apply --only-netns in the host's network namespace is refused"
  else
    not_ok "apply --only-netns in the host's network namespace is refused" "rc=$rc
$out"
  fi
else
  ok "apply --only-netns refused on the host # skip: not in the host's network namespace"
fi

# --- apply / check / revert of net.* keys inside a fresh network namespace -------------------
if unshare -n true 2>/dev/null; then
  mkdir -p "$tmp/netns"
  out=$(unshare -n bash "$root/tests/tuning.sh" --in-netns "$tmp/netns" 2>&1) || true
  while IFS= read -r line; do
    case "$line" in
      "ok - "*) ok "${line#ok - }" ;;
      "not ok - "*) not_ok "${line#not ok - }" ;;
      *) [ -n "$line" ] && echo "#   $line" ;;
    esac
  done <<<"$out"
  grep -q '^ok - netns: revert restores every value exactly' <<<"$out" || not_ok "netns: round trip ran to the end"
else
  ok "netns round trip # skip: unshare -n not permitted here"
fi

host_snapshot >"$tmp/host.after"
if cmp -s "$tmp/host.before" "$tmp/host.after"; then
  ok "host settings unchanged by the whole run"
else
  not_ok "host settings unchanged by the whole run" "$(diff "$tmp/host.before" "$tmp/host.after" || true)"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
