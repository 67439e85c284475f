#!/usr/bin/env bash
# Concurrent idle device sessions (docs/benchmarks.md, benchmark 2). Builds nothing: uses the
# binaries in $BUILD (default build/release). Raises the open-files limit as far as allowed,
# provisions the devices, starts toriid on 127.0.0.1 with free ports, records its baseline RSS,
# runs PROCS bench_idle clients (sessions split evenly, each from its own 127.x.0.0/16 source
# block), samples toriid's VmRSS and /metrics while sessions ramp up and through the hold, then
# prints sessions reached, bytes per idle session and ECHOs/s. Loopback only; no sysctl is
# changed. Everything started here is stopped on exit (trap).
#
#   bench/idle.sh [-n TARGET] [-p PROCS] [-k KEEPALIVE_S] [-H HOLD_S] [-r RATE] [-t THREADS]
#                 [-o RESULTS.json] [-K]   (-K: keep the temp dir)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build/release}
TORIID=$BUILD/apps/toriid
BR=$BUILD/bench/bench_register
BI=$BUILD/bench/bench_idle
TARGET=100000
PROCS=4
KEEPALIVE=10
HOLD=""
RATE=1000
THREADS=2
OUT=""
KEEP=0
while getopts "n:p:k:H:r:t:o:K" opt; do
  case $opt in
    n) TARGET=$OPTARG ;;
    p) PROCS=$OPTARG ;;
    k) KEEPALIVE=$OPTARG ;;
    H) HOLD=$OPTARG ;;
    r) RATE=$OPTARG ;;
    t) THREADS=$OPTARG ;;
    o) OUT=$OPTARG ;;
    K) KEEP=1 ;;
    *) sed -n 2,11p "$0"; exit 2 ;;
  esac
done
[[ -n $HOLD ]] || HOLD=$(python3 -c "print(max(30, 3 * $KEEPALIVE))")
for b in "$TORIID" "$BR" "$BI"; do
  [[ -x $b ]] || { echo "missing $b: build first (cmake --build build/release -j2)" >&2; exit 1; }
done
command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }

# Open files: toriid needs one descriptor per session (+ ~30); each client one per session.
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
REQUESTED=$TARGET
LIMIT_NOTE=""
if (( TARGET + 200 > NOFILE )); then
  TARGET=$(( NOFILE - 200 ))
  LIMIT_NOTE="RLIMIT_NOFILE is $NOFILE (hard limit; raising it needs CAP_SYS_RESOURCE, which this process does not have): one toriid process can hold at most ~$(( NOFILE - 30 )) sessions, so the target $REQUESTED is capped at $TARGET"
  echo "!! $LIMIT_NOTE" >&2
fi
PER=$(( (TARGET + PROCS - 1) / PROCS ))
while (( PER + 100 > NOFILE )); do PROCS=$(( PROCS + 1 )); PER=$(( (TARGET + PROCS - 1) / PROCS )); done

WORK=$(mktemp -d /tmp/torii-bench-idle.XXXXXX)
TORIID_PID=""
CLIENT_PIDS=()
cleanup() {
  local rc=$?
  for p in "${CLIENT_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${CLIENT_PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  if [[ -n $TORIID_PID ]] && kill -0 "$TORIID_PID" 2>/dev/null; then
    kill -TERM "$TORIID_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$TORIID_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$TORIID_PID" 2>/dev/null || true
  fi
  if [[ $KEEP == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

DATA=$WORK/data
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), RAM $(free -m | awk '/Mem:/{print $2}') MiB, open files $NOFILE"
echo "== target $TARGET sessions ($PROCS clients x $PER), keepalive ${KEEPALIVE}s, hold ${HOLD}s, connect rate $RATE/s"
echo "== provisioning $REQUESTED devices"
PROV=$($BR provision --data-dir "$DATA" --devices "$REQUESTED" --group bench --json)
echo "$PROV"

"$TORIID" --data-dir "$DATA" --listen 127.0.0.1:0 --stun 127.0.0.1:0 --relay 127.0.0.1:0 --api 127.0.0.1:0 \
  --threads "$THREADS" >"$WORK/toriid.log" 2>&1 &
TORIID_PID=$!
PORT=""
for _ in $(seq 100); do
  PORT=$(grep -oP 'control\s+127\.0\.0\.1:\K[0-9]+' "$WORK/toriid.log" || true)
  [[ -n $PORT ]] && break
  kill -0 "$TORIID_PID" 2>/dev/null || { cat "$WORK/toriid.log"; exit 1; }
  sleep 0.1
done
[[ -n $PORT ]] || { echo "toriid did not start"; cat "$WORK/toriid.log"; exit 1; }
API=$(cat "$DATA/api.endpoint")
echo "== toriid pid $TORIID_PID on 127.0.0.1:$PORT, API $API, --threads $THREADS, fd limit $(awk '/Max open files/{print $4}' /proc/$TORIID_PID/limits)"

metric() { awk -v m="$1" '$1==m{print $2}' <<<"$2"; }
sample() {  # t rss_kib anon_kib sessions connections echoes tcp_mem_pages slab_kib cpu_ticks
  local m st
  m=$(curl -s --max-time 5 "http://$API/metrics" || true)
  st=$(cat "/proc/$TORIID_PID/status" 2>/dev/null || true)
  printf '%s %s %s %s %s %s %s %s %s\n' "$(date +%s.%N)" \
    "$(awk '/^VmRSS:/{print $2}' <<<"$st")" "$(awk '/^RssAnon:/{print $2}' <<<"$st")" \
    "$(metric torii_sessions_active "$m")" "$(metric torii_connections_active "$m")" \
    "$(metric torii_echoes_total "$m")" "$(awk '/^TCP:/{for(i=1;i<NF;i++) if($i=="mem") print $(i+1)}' /proc/net/sockstat)" \
    "$(awk '/^Slab:/{print $2}' /proc/meminfo)" \
    "$(awk '{print $14 + $15}' "/proc/$TORIID_PID/stat" 2>/dev/null)"
}

sleep 2
sample >"$WORK/baseline"
echo "== baseline: $(cat "$WORK/baseline")  (t rss_kib anon_kib sessions connections echoes tcp_mem_pages slab_kib cpu_ticks)"

RAMP_TIMEOUT=$(python3 -c "print(int($TARGET / $RATE * 3 + 60))")
for ((p = 0; p < PROCS; p++)); do
  first=$(( p * PER ))
  n=$(( TARGET - first < PER ? TARGET - first : PER ))
  (( n > 0 )) || break
  ( ulimit -n "$NOFILE"
    exec "$BI" --server "127.0.0.1:$PORT" --creds "$DATA/bench" --first "$first" --count "$n" \
      --rate "$(python3 -c "print($RATE / $PROCS)")" --keepalive "$KEEPALIVE" --hold "$HOLD" \
      --ramp-timeout "$RAMP_TIMEOUT" --source-base "127.$(( 20 + p )).0.0" --per-address 10000 \
      --report-every 10 >"$WORK/client$p.json" 2>"$WORK/client$p.log" ) &
  CLIENT_PIDS+=($!)
done

# Sample until every client has exited (each bounds itself: ramp timeout + hold + close).
DEADLINE=$(( $(date +%s) + RAMP_TIMEOUT + ${HOLD%.*} + 120 ))
: >"$WORK/samples"
while :; do
  s=$(sample); echo "$s" >>"$WORK/samples"
  read -r _ rss _ sess _ ech _ <<<"$s"
  echo "   sessions ${sess:-?}  rss ${rss:-?} KiB  echoes ${ech:-?}"
  alive=0
  for p in "${CLIENT_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  (( alive )) || break
  (( $(date +%s) < DEADLINE )) || { echo "!! clients still running at the deadline" >&2; break; }
  sleep 2
done
rc=0
for p in "${CLIENT_PIDS[@]}"; do wait "$p" || rc=1; done
CLIENT_PIDS=()
kill -0 "$TORIID_PID" 2>/dev/null || echo "!! toriid exited during the run" >&2
grep -c "Too many open files" "$WORK/toriid.log" >"$WORK/emfile" || true

python3 - "$WORK" "$TARGET" "$REQUESTED" "$KEEPALIVE" "$PROV" "$LIMIT_NOTE" "$OUT" "$(getconf CLK_TCK)" <<'EOF'
import glob, json, os, sys
work, target, requested, keepalive = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
prov, note, out, tck = json.loads(sys.argv[5]), sys.argv[6], sys.argv[7], int(sys.argv[8])
def rows(path):
    r = []
    for line in open(path):
        f = line.split()
        if len(f) == 9 and all(x != "" for x in f):
            try: r.append([float(x) for x in f])
            except ValueError: pass
    return r
base = rows(f"{work}/baseline")[0]
s = rows(f"{work}/samples")
peak = max(x[3] for x in s) if s else 0
full = [x for x in s if peak and x[3] >= 0.99 * peak]
clients = []
for p in sorted(glob.glob(f"{work}/client*.json")):
    try: clients.append(json.loads(open(p).read().strip().splitlines()[-1]))
    except Exception: pass
res = {"requested": requested, "target": target, "peak_sessions": peak, "provision": prov,
       "baseline_rss_kib": base[1], "limit_note": note,
       "emfile_log_lines": int(open(f"{work}/emfile").read().strip() or 0),
       "clients": {k: sum(c.get(k, 0) for c in clients) for k in
                   ["established_at_ramp_end", "established_at_hold_end", "failed",
                    "ended_before_close", "closed_clean", "closed_unclean", "hold_echoes_sent",
                    "hold_echo_replies"]},
       "client_failures": {}, "samples": s}
for c in clients:
    for k, v in c.get("failures", {}).items(): res["client_failures"][k] = res["client_failures"].get(k, 0) + v
if full:
    a, b = full[0], full[-1]
    res.update({
        "ramp_end": {"sessions": a[3], "rss_kib": a[1]},
        "hold_end": {"sessions": b[3], "rss_kib": b[1]},
        "bytes_per_session_ramp_end": (a[1] - base[1]) * 1024 / a[3],
        "bytes_per_session_hold_end": (b[1] - base[1]) * 1024 / b[3],
        "anon_bytes_per_session_hold_end": (b[2] - base[2]) * 1024 / b[3],
        "kernel_tcp_bytes_per_session": (b[6] - base[6]) * 4096 / b[3],
        "kernel_slab_bytes_per_connection_end": (b[7] - base[7]) * 1024 / (2 * b[3]),
        "hold_seconds_observed": b[0] - a[0],
        "server_echoes_per_s": (b[5] - a[5]) / (b[0] - a[0]) if b[0] > a[0] else 0,
        "server_cpu_percent_hold": 100 * (b[8] - a[8]) / tck / (b[0] - a[0]) if b[0] > a[0] else 0,
        "server_cpu_us_per_echo": 1e6 * (b[8] - a[8]) / tck / max(1, b[5] - a[5]),
        "expected_echoes_per_s": b[3] / keepalive})
print()
print(f"sessions reached: {peak:.0f} of {target} (requested {requested})")
if note: print(f"limit: {note}")
if full:
    print(f"toriid RSS: baseline {base[1]/1024:.1f} MiB, at ramp end {res['ramp_end']['rss_kib']/1024:.1f} MiB, "
          f"after {res['hold_seconds_observed']:.0f} s of hold {res['hold_end']['rss_kib']/1024:.1f} MiB")
    print(f"bytes per idle session (VmRSS delta / sessions): {res['bytes_per_session_ramp_end']:.0f} at ramp end, "
          f"{res['bytes_per_session_hold_end']:.0f} after the hold (target <= 8192); "
          f"RssAnon delta {res['anon_bytes_per_session_hold_end']:.0f}")
    print(f"kernel TCP buffer memory (not in RSS; /proc/net/sockstat of the whole machine, both ends): "
          f"{res['kernel_tcp_bytes_per_session']:.0f} bytes per session; kernel slab (sockets, files, "
          f"epoll items; whole machine, so approximate) {res['kernel_slab_bytes_per_connection_end']:.0f} "
          f"bytes per connection end")
    print(f"ECHOs at the server during the hold: {res['server_echoes_per_s']:.0f}/s "
          f"(expected sessions/keepalive = {res['expected_echoes_per_s']:.0f}/s); toriid CPU during the "
          f"hold {res['server_cpu_percent_hold']:.1f} % of one core = {res['server_cpu_us_per_echo']:.0f} us per ECHO")
print(f"clients: {json.dumps(res['clients'])}")
if res["client_failures"]: print(f"client failures: {json.dumps(res['client_failures'])}")
if res["emfile_log_lines"]: print(f"toriid logged 'Too many open files' {res['emfile_log_lines']} times")
print(f"provisioning {requested} devices: {prov['total_s']:.1f} s (certificates {prov['issue_s']:.1f} s, "
      f"database {prov['db_s']:.2f} s)")
if out:
    json.dump(res, open(out, "w"), indent=1)
EOF
exit $rc
