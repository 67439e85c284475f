# shellcheck shell=bash
# Shared shell helpers of the namespace benchmarks (tunnel_throughput.sh, relay_throughput.sh).
# Sourced after the caller set: JSON (0/1), KEEP (0/1), TMP (its temp folder), NAMESPACES (the
# namespaces it creates), PIDS=() (what it starts in the background); optional hook
# bench_extra_cleanup (called before the namespaces go). Installs the EXIT/INT/TERM traps.

log() { if [[ $JSON -eq 1 ]]; then echo "$*" >&2; else echo "$*"; fi; }

cleanup() {
  local rc=$?
  set +e
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  sleep 0.3
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  for ns in "${NAMESPACES[@]}"; do
    if [[ -e /run/netns/$ns ]]; then
      # Anything left inside our own namespaces was started by this script.
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
      ip netns del "$ns" 2>/dev/null
    fi
  done
  if declare -F bench_extra_cleanup >/dev/null; then bench_extra_cleanup; fi
  if [[ $KEEP -eq 1 ]]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# Starts "$@" in namespace $1 in the background, output to $TMP/$2.log; sets BGPID.
bg() {
  local ns=$1 name=$2
  shift 2
  ip netns exec "$ns" "$@" >"$TMP/$name.log" 2>&1 &
  BGPID=$!  # `ip netns exec` execs in place: this is the command's own PID
  PIDS+=("$BGPID")
}

wait_for() {  # wait_for TENTHS CMD...: polls CMD up to TENTHS tenths of a second
  local tenths=$1
  shift
  for ((i = 0; i < tenths; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  return 1
}

cpu_ticks() {  # utime+stime (clock ticks) summed over the given PIDs
  local sum=0 pid f
  for pid in "$@"; do
    # Fields 14 and 15 of /proc/PID/stat, counted after the ")" closing the command name.
    f=$(sed 's/.*) //' "/proc/$pid/stat")
    sum=$((sum + $(echo "$f" | awk '{print $12 + $13}')))
  done
  echo "$sum"
}

torii_json() {  # torii_json KEY < json: prints the value of top-level KEY ("" if absent)
  python3 -c 'import json,sys; v=json.load(sys.stdin).get(sys.argv[1]); print("" if v is None else v)' "$1"
}
