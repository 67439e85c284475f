#!/usr/bin/env bash
# Where an idle session's memory goes (docs/benchmarks.md, benchmark 2, "what limits it"). Builds
# nothing. Runs toriid under valgrind massif with N idle sessions (bench_idle, keepalive on),
# prints the per-session heap breakdown of the peak snapshot by component
# (bench/massif_breakdown.py), then bench_sslmem's exact OpenSSL figures per server session.
# Slow under valgrind: N=1500 takes ~3 minutes. Loopback only; stops what it started.
#
#   bench/memory.sh [-n SESSIONS] [-k]   (-k: keep the temp dir with massif.out)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build/release}
TORIID=$BUILD/apps/toriid
BR=$BUILD/bench/bench_register
BI=$BUILD/bench/bench_idle
BS=$BUILD/bench/bench_sslmem
N=1500
KEEP=0
while getopts "n:k" opt; do
  case $opt in
    n) N=$OPTARG ;;
    k) KEEP=1 ;;
    *) sed -n 2,9p "$0"; exit 2 ;;
  esac
done
for b in "$TORIID" "$BR" "$BI" "$BS"; do
  [[ -x $b ]] || { echo "missing $b: build first" >&2; exit 1; }
done
command -v valgrind >/dev/null || { echo "valgrind is needed" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"
(( N + 100 < $(ulimit -n) )) || { echo "open-files limit $(ulimit -n) too low for $N sessions" >&2; exit 1; }

WORK=$(mktemp -d /tmp/torii-bench-memory.XXXXXX)
TORIID_PID=""
cleanup() {
  local rc=$?
  if [[ -n $TORIID_PID ]] && kill -0 "$TORIID_PID" 2>/dev/null; then
    kill -TERM "$TORIID_PID" 2>/dev/null || true
    for _ in $(seq 300); do kill -0 "$TORIID_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$TORIID_PID" 2>/dev/null || true
  fi
  if [[ $KEEP == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

DATA=$WORK/data
$BR provision --data-dir "$DATA" --devices "$N" --group bench
valgrind --tool=massif --massif-out-file="$WORK/massif.out" --depth=40 --threshold=0.2 \
  "$TORIID" --data-dir "$DATA" --listen 127.0.0.1:0 --stun 127.0.0.1:0 --relay 127.0.0.1:0 --api 127.0.0.1:0 \
  --threads 2 >"$WORK/toriid.log" 2>&1 &
TORIID_PID=$!
PORT=""
for _ in $(seq 1200); do
  PORT=$(grep -oP 'control\s+127\.0\.0\.1:\K[0-9]+' "$WORK/toriid.log" || true)
  [[ -n $PORT ]] && break
  kill -0 "$TORIID_PID" 2>/dev/null || { cat "$WORK/toriid.log"; exit 1; }
  sleep 0.1
done
[[ -n $PORT ]] || { echo "toriid did not start under valgrind"; exit 1; }
echo "== toriid under massif on 127.0.0.1:$PORT; opening $N sessions (slow under valgrind)"
$BI --server "127.0.0.1:$PORT" --creds "$DATA/bench" --count "$N" --rate 50 --pending 16 \
  --keepalive 25 --hold 40 --ramp-timeout 900 --close-timeout 120 --report-every 30 \
  --source-base 127.30.0.0 >"$WORK/client.json" 2>"$WORK/client.log" || true
cat "$WORK/client.json"
kill -TERM "$TORIID_PID"
for _ in $(seq 600); do kill -0 "$TORIID_PID" 2>/dev/null || break; sleep 0.1; done
TORIID_PID=""
echo "== toriid heap per session at the peak ($N sessions), by component"
python3 "$ROOT/bench/massif_breakdown.py" "$WORK/massif.out" "$N"
echo "== OpenSSL alone, per server session (bench_sslmem, in process, exact)"
$BS --data-dir "$DATA" --connections 200
