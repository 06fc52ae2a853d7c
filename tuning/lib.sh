# shellcheck shell=bash
# Shared helpers of tuning/check, tuning/apply and tuning/revert (sourced, not run).
#
# Every key of sysctl.d/90-matchstream.conf has a row in key_meta: how a current value is
# compared with the recommended one (mode), whether a miss makes the host "not ready"
# (severity) and whether the key is per network namespace (scope).

TUNING_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROFILE="$TUNING_DIR/sysctl.d/90-matchstream.conf"
# shellcheck disable=SC2034 # used by the scripts that source this file
LIMITS_FILE="$TUNING_DIR/limits.d/90-matchstream.conf"
# Where sysctls are read from / written to; tests may point it at a scratch tree.
SYSCTL_ROOT=${MATCHSTREAM_SYSCTL_ROOT:-/proc/sys}
# Descriptors each worker keeps for itself (io_uring ring, listeners, eventfds, SQLite, logs);
# must match RESERVED_FDS_PER_WORKER in src/os/limits.rs.
RESERVED_FDS=64
# Bytes one connection costs the kernel: its socket's slab objects, measured as 9,270 B for
# both ends of 100K idle loopback pairs (benches/results/README.md), halved.
# shellcheck disable=SC2034 # used by the scripts that source this file
KERNEL_BYTES_PER_CONN=4640
# Bytes one watcher costs matchstream itself, plain and TLS: must match PLAIN_WATCHER_BYTES and
# TLS_WATCHER_BYTES in src/server/footprint.rs (tests/tuning.sh checks; tests/footprint.rs
# checks those against the real server).
# shellcheck disable=SC2034 # used by the scripts that source this file
SERVER_BYTES_PLAIN=450
# shellcheck disable=SC2034 # used by the scripts that source this file
SERVER_BYTES_TLS=700

die() {
  printf '%s: error: %s\n' "$(basename "$0")" "$*" >&2
  exit 2
}

# key_meta KEY -> "MODE SEVERITY SCOPE"
#   MODE: ge (every field >= recommended), le (every field <=), eq, range (lo <= rec lo, hi >= rec hi)
#   SEVERITY: fail (host not ready) or warn
#   SCOPE: netns (per network namespace) or host
key_meta() {
  case "$1" in
    fs.file-max) echo "ge fail host" ;;
    fs.nr_open) echo "ge warn host" ;;
    net.core.somaxconn) echo "ge warn netns" ;;
    net.ipv4.tcp_max_syn_backlog) echo "ge warn netns" ;;
    net.core.netdev_max_backlog) echo "ge warn host" ;;
    net.ipv4.tcp_syncookies) echo "eq warn netns" ;;
    net.ipv4.ip_local_port_range) echo "range warn netns" ;;
    net.ipv4.tcp_mem) echo "ge fail host" ;;
    net.ipv4.tcp_rmem) echo "eq warn netns" ;;
    net.ipv4.tcp_wmem) echo "eq warn netns" ;;
    net.ipv4.tcp_slow_start_after_idle) echo "eq warn netns" ;;
    net.ipv4.tcp_tw_reuse) echo "eq warn netns" ;;
    net.ipv4.tcp_fin_timeout) echo "le warn netns" ;;
    net.ipv4.tcp_max_tw_buckets) echo "ge warn netns" ;;
    net.ipv4.tcp_max_orphans) echo "ge warn host" ;;
    net.ipv4.tcp_keepalive_time) echo "le warn netns" ;;
    net.ipv4.tcp_keepalive_intvl) echo "le warn netns" ;;
    net.ipv4.tcp_keepalive_probes) echo "le warn netns" ;;
    net.netfilter.nf_conntrack_max) echo "ge fail host" ;;
    *) return 1 ;;
  esac
}

# Smallest power of two >= $1 (>= 1).
pow2ceil() {
  local n=$1 p=1
  while [ "$p" -lt "$n" ]; do p=$((p * 2)); done
  echo "$p"
}

# clamp VALUE MIN MAX
clamp() {
  local v=$1
  [ "$v" -lt "$2" ] && v=$2
  [ "$v" -gt "$3" ] && v=$3
  echo "$v"
}

# recommend KEY N -> the value N connections need (profile value for keys not scaled with N).
recommend() {
  local key=$1 n=$2 page pages
  case "$key" in
    fs.file-max) echo $((2 * n + 65536)) ;;
    fs.nr_open)
      local need
      need=$(pow2ceil $((n + RESERVED_FDS)))
      [ "$need" -lt 1048576 ] && need=1048576
      echo "$need"
      ;;
    net.core.somaxconn | net.ipv4.tcp_max_syn_backlog)
      clamp "$(pow2ceil $(((n + 15) / 16)))" 4096 65535
      ;;
    net.core.netdev_max_backlog) clamp "$(pow2ceil $(((n + 63) / 64)))" 1000 65536 ;;
    net.ipv4.tcp_mem)
      page=$(getconf PAGESIZE 2>/dev/null || echo 4096)
      pages=$(((n * 4096 + page - 1) / page))
      echo "$pages $((2 * pages)) $((3 * pages))"
      ;;
    net.ipv4.tcp_max_tw_buckets | net.ipv4.tcp_max_orphans) echo "$n" ;;
    net.netfilter.nf_conntrack_max) echo $((n + 65536)) ;;
    *) profile_value "$key" ;;
  esac
}

# Lines "KEY<TAB>VALUE" of the profile, in file order.
profile_entries() {
  local line key value fields
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line%%#*}
    [[ $line == *=* ]] || continue
    key=${line%%=*}
    value=${line#*=}
    read -r key <<<"$key"
    read -r -a fields <<<"$value"
    if [ -n "$key" ]; then printf '%s\t%s\n' "$key" "${fields[*]}"; fi
  done <"$PROFILE"
}

profile_value() {
  profile_entries | awk -F '\t' -v k="$1" '$1 == k { print $2; found = 1 } END { exit !found }'
}

key_path() {
  echo "$SYSCTL_ROOT/${1//.//}"
}

# read_key KEY -> current value with whitespace collapsed; status 1 when the key is absent.
read_key() {
  local path
  path=$(key_path "$1")
  [ -r "$path" ] || return 1
  xargs <"$path"
}

# write_key KEY VALUE: sysctl -w on the live kernel, a plain file write under a scratch root.
write_key() {
  if [ "$SYSCTL_ROOT" = /proc/sys ]; then
    sysctl -q -w "$1=$2" >/dev/null
  else
    printf '%s\n' "$2" >"$(key_path "$1")"
  fi
}

# meets MODE CURRENT RECOMMENDED -> status 0 when CURRENT satisfies RECOMMENDED.
meets() {
  local mode=$1 have want i
  read -r -a have <<<"$2"
  read -r -a want <<<"$3"
  case "$mode" in
    eq) [ "${have[*]}" = "${want[*]}" ] ;;
    range) [ "${#have[@]}" -eq 2 ] && [ "${have[0]}" -le "${want[0]}" ] && [ "${have[1]}" -ge "${want[1]}" ] ;;
    ge | le)
      [ "${#have[@]}" -eq "${#want[@]}" ] || return 1
      for i in "${!want[@]}"; do
        if [ "$mode" = ge ]; then
          [ "${have[$i]}" -ge "${want[$i]}" ] || return 1
        else
          [ "${have[$i]}" -le "${want[$i]}" ] || return 1
        fi
      done
      ;;
    *) return 1 ;;
  esac
}

# merge MODE CURRENT TARGET -> the value apply writes: never lowers a ge key that is already
# higher (per field), never raises an le key that is already lower.
merge() {
  local mode=$1 have want fields=() i
  read -r -a have <<<"$2"
  read -r -a want <<<"$3"
  if [ "${#have[@]}" -ne "${#want[@]}" ]; then
    echo "$3"
    return
  fi
  case "$mode" in
    ge | le)
      for i in "${!want[@]}"; do
        if { [ "$mode" = ge ] && [ "${have[$i]}" -gt "${want[$i]}" ]; } ||
          { [ "$mode" = le ] && [ "${have[$i]}" -lt "${want[$i]}" ]; }; then
          fields+=("${have[$i]}")
        else
          fields+=("${want[$i]}")
        fi
      done
      echo "${fields[*]}"
      ;;
    range)
      local lo=${want[0]} hi=${want[1]}
      [ "${have[0]}" -lt "$lo" ] && lo=${have[0]}
      [ "${have[1]}" -gt "$hi" ] && hi=${have[1]}
      echo "$lo $hi"
      ;;
    *) echo "$3" ;;
  esac
}

# Whether the live /proc/sys shows the initial (host) network namespace: host-wide net.*
# keys such as net.ipv4.tcp_mem are only visible there.
in_host_netns() {
  [ -e /proc/sys/net/ipv4/tcp_mem ] || [ -e /proc/sys/net/core/netdev_max_backlog ]
}

# Default state file of apply/revert.
# shellcheck disable=SC2034 # used by the scripts that source this file
STATE_FILE=${MATCHSTREAM_TUNING_STATE:-/var/lib/matchstream/tuning-saved.conf}
# Where --persist installs the profile files (tests point it at a scratch dir).
# shellcheck disable=SC2034 # used by the scripts that source this file
ETC_DIR=${MATCHSTREAM_TUNING_ETC:-/etc}
