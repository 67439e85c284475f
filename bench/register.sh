#!/usr/bin/env bash
# Registrations per second (docs/benchmarks.md, benchmark 1). Builds nothing: uses the binaries in
# $BUILD (default build/release). Makes a temporary data dir, provisions bench devices, starts
# toriid on 127.0.0.1 with free ports, measures the anchors (openssl speed, in-process TLS), runs
# bench_register at each concurrency and prints figure, ceilings and ratios. Loopback only.
#
#   bench/register.sh [-d SECONDS] [-c "8 32 64"] [-n DEVICES] [-t SERVER_THREADS] [-l LOG_LEVEL]
#                     [-j CLIENT_THREADS] [-o RESULTS.json] [-k] [-P]
#   -k: keep the temp dir; -P: during the first concurrency level, profile toriid and the client
#   with `perf record --call-graph dwarf` and print where the CPU time goes
#   (bench/perf_breakdown.py). -x FLAGS: extra bench_register flags (e.g. --vary-attributes).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build/release}
TORIID=$BUILD/apps/toriid
BR=$BUILD/bench/bench_register
DURATION=15
CONC="8 32 64"
DEVICES=2000
THREADS=2
CLIENT_THREADS=1
LOG_LEVEL=info
OUT=""
KEEP=0
EXTRA=""
PROFILE=0
while getopts "d:c:n:t:l:j:o:kx:P" opt; do
  case $opt in
    d) DURATION=$OPTARG ;;
    c) CONC=$OPTARG ;;
    n) DEVICES=$OPTARG ;;
    t) THREADS=$OPTARG ;;
    l) LOG_LEVEL=$OPTARG ;;
    j) CLIENT_THREADS=$OPTARG ;;
    o) OUT=$OPTARG ;;
    k) KEEP=1 ;;
    x) EXTRA=$OPTARG ;;  # extra bench_register flags, e.g. --vary-attributes
    P) PROFILE=1 ;;
    *) sed -n 2,11p "$0"; exit 2 ;;
  esac
done
for b in "$TORIID" "$BR"; do
  [[ -x $b ]] || { echo "missing $b: build first (cmake --build build/release -j2)" >&2; exit 1; }
done
command -v python3 >/dev/null || { echo "python3 is needed for the arithmetic" >&2; exit 1; }

WORK=$(mktemp -d /tmp/torii-bench-register.XXXXXX)
TORIID_PID=""
cleanup() {
  local rc=$?
  if [[ -n $TORIID_PID ]] && kill -0 "$TORIID_PID" 2>/dev/null; then
    kill -TERM "$TORIID_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$TORIID_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$TORIID_PID" 2>/dev/null || true
  fi
  if [[ $KEEP == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

DATA=$WORK/data
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), $(openssl version)"
echo "== provisioning $DEVICES devices"
$BR provision --data-dir "$DATA" --devices "$DEVICES" --group bench

"$TORIID" --data-dir "$DATA" --listen 127.0.0.1:0 --stun 127.0.0.1:0 --relay 127.0.0.1:0 --api 127.0.0.1:0 \
  --threads "$THREADS" --log-level "$LOG_LEVEL" >"$WORK/toriid.log" 2>&1 &
TORIID_PID=$!
PORT=""
for _ in $(seq 100); do
  PORT=$(grep -oP 'control\s+127\.0\.0\.1:\K[0-9]+' "$WORK/toriid.log" || true)
  [[ -n $PORT ]] && break
  kill -0 "$TORIID_PID" 2>/dev/null || { cat "$WORK/toriid.log"; exit 1; }
  sleep 0.1
done
[[ -n $PORT ]] || { echo "toriid did not start"; cat "$WORK/toriid.log"; exit 1; }
echo "== toriid pid $TORIID_PID on 127.0.0.1:$PORT (--threads $THREADS, --log-level $LOG_LEVEL)"

anchors() {  # -> one JSON line
  local ec ex
  ec=$(openssl speed -seconds 3 ecdsap256 2>/dev/null | grep -E '^ *256 bits ecdsa' | tail -1)
  ex=$(openssl speed -seconds 3 ecdhx25519 2>/dev/null | grep -E 'ecdh \(X25519\)' | tail -1)
  local inproc
  inproc=$($BR anchor --data-dir "$DATA" --seconds 3 --json)
  python3 - "$ec" "$ex" "$inproc" <<'EOF'
import json, sys
ec = sys.argv[1].split(); ex = sys.argv[2].split()
j = json.loads(sys.argv[3])
j.update({"sign_per_s": float(ec[-2]), "verify_per_s": float(ec[-1]), "x25519_per_s": float(ex[-1])})
print(json.dumps(j))
EOF
}

echo "== anchors (before)"
A1=$(anchors); echo "$A1"

TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$TORIID_PID/stat"; }
if [[ $PROFILE == 1 ]] && command -v perf >/dev/null; then
  c=${CONC%% *}
  echo "== profiling run (not in the results): concurrency $c, 12 s; toriid sampled for 6 s"
  ( sleep 3; exec perf record -q --call-graph dwarf,32768 -F 499 -p "$TORIID_PID" \
      -o "$WORK/perf.server" -- sleep 6 ) >/dev/null 2>&1 &
  PERF_PID=$!
  # shellcheck disable=SC2086
  perf record -q --call-graph dwarf,32768 -F 499 -o "$WORK/perf.client" -- \
    $BR --server "127.0.0.1:$PORT" --data-dir "$DATA" --concurrency "$c" --duration 12 \
    --threads "$CLIENT_THREADS" $EXTRA >/dev/null 2>&1 || true
  wait "$PERF_PID" || true
  for side in server client; do
    perf script -i "$WORK/perf.$side" -F comm,tid,ip,sym 2>/dev/null >"$WORK/perf.$side.txt" || true
    python3 "$ROOT/bench/perf_breakdown.py" "$WORK/perf.$side.txt" "$side CPU at concurrency $c"
    rm -f "$WORK/perf.$side" "$WORK/perf.$side.txt"
  done
fi

RESULTS=()
for c in $CONC; do
  t0=$(cpu_ticks)
  # shellcheck disable=SC2086
  r=$($BR --server "127.0.0.1:$PORT" --data-dir "$DATA" --concurrency "$c" --duration "$DURATION" \
        --threads "$CLIENT_THREADS" --json $EXTRA)
  t1=$(cpu_ticks)
  r=$(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); j["server_cpu_s"]=(int(sys.argv[3])-int(sys.argv[2]))/int(sys.argv[4]); j["server_cpu_us_per_reg"]=j["server_cpu_s"]/max(1,j["registrations"])*1e6; print(json.dumps(j))' "$r" "$t0" "$t1" "$TCK")
  echo "$r"
  RESULTS+=("$r")
  sleep 1
done

echo "== anchors (after)"
A2=$(anchors); echo "$A2"

python3 - "$A1" "$A2" "$(nproc)" "$OUT" "${RESULTS[@]}" <<'EOF'
import json, sys
a1, a2 = json.loads(sys.argv[1]), json.loads(sys.argv[2])
cores = int(sys.argv[3]); out = sys.argv[4]
runs = [json.loads(x) for x in sys.argv[5:]]
avg = lambda k: (a1[k] + a2[k]) / 2
sign, verify, x = avg("sign_per_s"), avg("verify_per_s"), avg("x25519_per_s")
hs = avg("tls13_mutual_handshakes_per_s_1core")
# Per registration, both sides together on this machine: 2 ECDSA P-256 signs (CertificateVerify
# of each side), 4 verifies (each side verifies the peer's CertificateVerify and the signature of
# the peer's certificate), 2 X25519 key generations + 2 derivations (counted as 4 X25519 ops).
sig_cost = 2 / sign + 4 / verify
full_cost = sig_cost + 4 / x
ceil_sig, ceil_full, ceil_tls = cores / sig_cost, cores / full_cost, cores * hs
print()
print(f"anchors (mean of before/after): ECDSA P-256 sign {sign:.0f}/s verify {verify:.0f}/s, "
      f"X25519 {x:.0f}/s (one core each); in-process mutual TLS 1.3 handshake {hs:.0f}/s, "
      f"certificate parse {avg('cert_parse_per_s_1core'):.0f}/s (one core)")
print(f"ceilings on {cores} cores: signature-only {ceil_sig:.0f} regs/s, signatures+X25519 "
      f"{ceil_full:.0f} regs/s, OpenSSL in-process handshake {ceil_tls:.0f} regs/s")
if "experiment_resumed_handshakes_per_s_1core" in a1:
    print(f"experiment (not the product's configuration): TLS 1.3 ticket resumption in process "
          f"{avg('experiment_resumed_handshakes_per_s_1core'):.0f}/s on one core = "
          f"{avg('experiment_resumed_handshakes_per_s_1core') / hs:.2f} x the full handshake")
print()
print("| concurrency | regs/s | p50 ms | p99 ms | failures | server CPU us/reg | client CPU us/reg "
      "| vs signature-only | vs sig+X25519 | vs in-process TLS |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in runs:
    v = r["regs_per_s"]
    print(f"| {r['concurrency']} | {v:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['failures']} "
          f"| {r['server_cpu_us_per_reg']:.0f} | {r['client_cpu_us_per_reg']:.0f} "
          f"| {100*v/ceil_sig:.1f} % | {100*v/ceil_full:.1f} % | {100*v/ceil_tls:.1f} % |")
best = max(runs, key=lambda r: r["regs_per_s"])
print()
print(f"best: {best['regs_per_s']:.0f} regs/s at concurrency {best['concurrency']} = "
      f"{100*best['regs_per_s']/ceil_full:.1f} % of the full ceiling, "
      f"{100*best['regs_per_s']/ceil_sig:.1f} % of the signature-only ceiling "
      f"(target >= 60 %)")
print(f"crypto per registration (both sides) {full_cost*1e6:.0f} us of CPU; measured "
      f"{best['server_cpu_us_per_reg'] + best['client_cpu_us_per_reg']:.0f} us "
      f"(server {best['server_cpu_us_per_reg']:.0f} + client {best['client_cpu_us_per_reg']:.0f})")
if out:
    with open(out, "w") as f:
        json.dump({"anchors_before": a1, "anchors_after": a2, "cores": cores,
                   "ceiling_signature_only": ceil_sig, "ceiling_full": ceil_full,
                   "ceiling_inprocess_tls": ceil_tls, "runs": runs}, f, indent=1)
EOF
