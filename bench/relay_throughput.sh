#!/usr/bin/env bash
# Relay throughput (issue 4, A6 relay): one iperf3 TCP stream between two torii devices whose
# only path is toriid's UDP relay, the server CPU it costs (Gbit/s per server core), the agents'
# CPU, and the server's responsiveness meanwhile: ECHO keepalive RTT of a third device session
# and the time of an admin request (`torii device list`), relay idle vs relay loaded.
#
#        <P>-a                          <P>-s                           <P>-b
#   veth0 10.211.1.2/24 <--veth--> va 10.211.1.1   vb 10.211.2.1 <--veth--> veth0 10.211.2.2/24
#   default via 10.211.1.1         toriid: control 0.0.0.0:7443     default via 10.211.2.1
#   torii-agent relay-a            STUN :3478, UDP relay :3480       torii-agent relay-b
#   torii0 100.64.0.x  ===== relay_data frames via 10.211.x.1:3480 ====> torii0 100.64.0.y
#   iperf3 client, bench_echo      ip_forward=0: A and B reach      iperf3 server
#   (device relay-probe)           each other only through the relay
#
#   bench/relay_throughput.sh [--seconds N] [--echo-interval MS] [--threads N] [--json] [--keep]
#
# Phases: tunnel relay-a -> relay-b opened with `torii-agent connect --wait` (must report path
# "relay"); idle: bench_echo (device relay-probe, from <P>-a) for --seconds; loaded: iperf3 -t
# --seconds from A to B's overlay address with bench_echo and an admin request every second
# running alongside. CPU = utime+stime from /proc/PID/stat over the iperf3 run; "per server
# core" = Gbit/s / (toriid CPU s / wall s). All processes share this machine's cores: the agents
# (TUN + AEAD at both ends) and iperf3 compete with toriid.
#
# Needs root, iproute2, iperf3, python3, and TORII_BIN (folder with toriid, torii, torii-agent,
# e.g. build/release/apps); bench_echo from BENCH_BIN (default $TORII_BIN/../bench). <P> is
# unique per run; nothing outside the three namespaces and a temp folder is touched, and
# everything is stopped and deleted on exit (--keep keeps the temp folder with the logs).
set -euo pipefail

SECONDS_=10
ECHO_MS=20
THREADS=""
JSON=0
KEEP=0
usage() { sed -n 2,27p "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --seconds) SECONDS_=$2; shift 2 ;;
    --echo-interval) ECHO_MS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --json) JSON=1; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "relay_throughput: unknown option $1" >&2; usage ;;
  esac
done
[[ $SECONDS_ =~ ^[0-9]+$ && $SECONDS_ -ge 4 ]] || { echo "--seconds: an integer >= 4" >&2; exit 2; }
[[ $ECHO_MS =~ ^[0-9]+$ && $ECHO_MS -ge 1 ]] || { echo "--echo-interval: ms, >= 1" >&2; exit 2; }
[[ -z $THREADS || $THREADS =~ ^[0-9]+$ ]] || { echo "--threads: an integer" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "relay_throughput: needs root (namespaces, tun)" >&2; exit 2; }
for t in ip iperf3 python3; do
  command -v "$t" >/dev/null || { echo "relay_throughput: $t not installed" >&2; exit 2; }
done
[[ -n ${TORII_BIN:-} && -x $TORII_BIN/toriid && -x $TORII_BIN/torii-agent && -x $TORII_BIN/torii ]] \
  || { echo "relay_throughput: set TORII_BIN to the folder with toriid, torii, torii-agent" >&2; exit 2; }
TORII_BIN=$(cd "$TORII_BIN" && pwd)
BENCH_BIN=${BENCH_BIN:-$TORII_BIN/../bench}
[[ -x $BENCH_BIN/bench_echo ]] || { echo "relay_throughput: no $BENCH_BIN/bench_echo (set BENCH_BIN)" >&2; exit 2; }
BENCH_BIN=$(cd "$BENCH_BIN" && pwd)

TAG=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
P="rt$$x$TAG"
S="$P-s"
A="$P-a"
B="$P-b"
TMP=$(mktemp -d "/tmp/relay-throughput-$P.XXXX")
PIDS=()
CLK_TCK=$(getconf CLK_TCK)

NAMESPACES=("$A" "$B" "$S")
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

inA() { ip netns exec "$A" "$@"; }

# ---- topology -------------------------------------------------------------------------------
for ns in "$S" "$A" "$B"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip netns exec "$ns" sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6'
done
ip netns exec "$S" sh -c 'echo 0 > /proc/sys/net/ipv4/ip_forward'  # A <-> B only via the relay
ip -n "$S" link add va mtu 1500 type veth peer name veth0 mtu 1500 netns "$A"
ip -n "$S" link add vb mtu 1500 type veth peer name veth0 mtu 1500 netns "$B"
ip -n "$S" addr add 10.211.1.1/24 dev va
ip -n "$S" addr add 10.211.2.1/24 dev vb
ip -n "$A" addr add 10.211.1.2/24 dev veth0
ip -n "$B" addr add 10.211.2.2/24 dev veth0
for l in "$S va" "$S vb" "$A veth0" "$B veth0"; do
  read -r ns dev <<<"$l"
  ip -n "$ns" link set "$dev" up
done
ip -n "$A" route add default via 10.211.1.1
ip -n "$B" route add default via 10.211.2.1
if inA ping -c 1 -W 1 10.211.2.2 >/dev/null 2>&1; then
  echo "relay_throughput: A reaches B without the relay (forwarding in $S?)" >&2
  exit 1
fi

# ---- toriid and three devices ---------------------------------------------------------------
SRV=$TMP/srv
AGENT=$TORII_BIN/torii-agent
TORII=("$TORII_BIN/torii" --data-dir "$SRV")
bg "$S" toriid "$TORII_BIN/toriid" --data-dir "$SRV" --listen 0.0.0.0:7443 \
  --stun 0.0.0.0:3478 --relay 0.0.0.0:3480 --api "unix:$SRV/api.sock" \
  --advertise 10.211.1.1:7443 --log-level warn ${THREADS:+--threads "$THREADS"}
PD=$BGPID
wait_for 150 "${TORII[@]}" group list || { echo "toriid did not start" >&2; cat "$TMP/toriid.log" >&2; exit 1; }
FP=$(sed -n 's/.*CA fingerprint (SHA-256): \([0-9a-f]\{64\}\).*/\1/p' "$TMP/toriid.log" | head -1)
[[ -n $FP ]] || { echo "toriid printed no CA fingerprint" >&2; cat "$TMP/toriid.log" >&2; exit 1; }
"${TORII[@]}" group create relay >/dev/null
enroll() {  # enroll DEVICE NAMESPACE SERVER_IP
  local token
  token=$("${TORII[@]}" device add "$1" --group relay --json | torii_json token)
  ip netns exec "$2" "$AGENT" enroll --server "$3:7443" --ca-sha256 "$FP" --id "$1" \
    --token "$token" --state-dir "$TMP/$1" >"$TMP/enroll-$1.log" 2>&1 \
    || { cat "$TMP/enroll-$1.log" >&2; exit 1; }
}
enroll relay-a "$A" 10.211.1.1
enroll relay-b "$B" 10.211.2.1
enroll relay-probe "$A" 10.211.1.1
bg "$A" agent-a "$AGENT" run --state-dir "$TMP/relay-a"; PA=$BGPID
bg "$B" agent-b "$AGENT" run --state-dir "$TMP/relay-b"; PB=$BGPID
for d in relay-a relay-b; do
  wait_for 150 sh -c "'$AGENT' status --state-dir '$TMP/$d' --json | grep -q '\"state\": *\"established\"'" \
    || { echo "torii-agent $d not established" >&2; cat "$TMP/agent-${d#relay-}.log" >&2; exit 1; }
  wait_for 50 sh -c "'$AGENT' status --state-dir '$TMP/$d' --json | grep -q '\"overlay_ipv4\": *\"[0-9]'" \
    || { echo "torii-agent $d has no overlay address" >&2; cat "$TMP/agent-${d#relay-}.log" >&2; exit 1; }
done
OV_B=$("$AGENT" status --state-dir "$TMP/relay-b" --json | torii_json overlay_ipv4)
peer_path() {
  "$AGENT" status --state-dir "$TMP/relay-a" --json | python3 -c '
import json, sys
print(next((p.get("path", "") for p in json.load(sys.stdin).get("peers") or [] if p.get("id") == "relay-b"), ""))'
}
T_OPEN=$(date +%s%N)
"$AGENT" connect relay-b --state-dir "$TMP/relay-a" --wait >"$TMP/connect.log" 2>&1 \
  || { echo "connect --wait failed" >&2; cat "$TMP/connect.log" "$TMP/agent-a.log" >&2; exit 1; }
T_OPEN=$((($(date +%s%N) - T_OPEN) / 1000000))
PATH_=$(peer_path)
[[ $PATH_ == relay ]] || { echo "relay_throughput: the tunnel is '$PATH_', not relay" >&2; exit 1; }
log "toriid $("$TORII_BIN/toriid" --version 2>/dev/null | head -1 | awk '{print $NF}'), tunnel relay-a -> relay-b ($OV_B) path $PATH_ (connect --wait ${T_OPEN} ms)"

bg "$B" iperf3-server iperf3 -s -B "$OV_B"
wait_for 50 ip netns exec "$B" sh -c 'ss -ltn | grep -q ":5201 "' || { echo "iperf3 server did not start" >&2; exit 1; }

echo_probe() {  # echo_probe NAME DELAY SECONDS: bench_echo as relay-probe from A, JSON to $TMP/NAME.json
  inA "$BENCH_BIN/bench_echo" --state-dir "$TMP/relay-probe" --interval-ms "$ECHO_MS" \
    --delay "$2" --seconds "$3" --json >"$TMP/$1.json" 2>"$TMP/$1.err"
}
admin_probe() {  # admin_probe FILE N: N timed `torii device list`, one per second, ms per line
  for ((k = 0; k < $2; k++)); do
    local t0
    t0=$(date +%s%N)
    "${TORII[@]}" device list --json >/dev/null
    echo $((($(date +%s%N) - t0) / 1000)) >>"$1"
    sleep 1
  done
}
udp_drops() {  # UDP receive-buffer drops in namespaces S, A, B (/proc/net/snmp RcvbufErrors)
  local ns
  for ns in "$S" "$A" "$B"; do
    # shellcheck disable=SC2016  # awk fields, not shell
    ip netns exec "$ns" awk '/^Udp:/ {if (!h) {for (i = 1; i <= NF; i++) c[$i] = i; h = 1} else v = $c["RcvbufErrors"]}
      END {printf "%d ", v}' /proc/net/snmp
  done
}
relay_counters() {  # UDP relay counters from /metrics: forwarded datagrams, bytes, recvmmsg
  # and sendmmsg calls, datagrams sent in GSO runs (0 where this toriid has no such metric)
  command -v curl >/dev/null || { echo 0 0 0 0 0; return; }
  curl -s --unix-socket "$SRV/api.sock" -H "Authorization: Bearer $(cat "$SRV/admin.token")" \
    http://toriid/metrics | awk '
      /^torii_relay_udp_packets_total\{outcome="forwarded"\}/ {p = $2}
      /^torii_relay_udp_bytes_total/ {b = $2}
      /^torii_relay_udp_syscalls_total\{op="recvmmsg"\}/ {r = $2}
      /^torii_relay_udp_syscalls_total\{op="sendmmsg"\}/ {s = $2}
      /^torii_relay_udp_io_datagrams_total\{io="sent_gso"\}/ {g = $2}
      END {printf "%.0f %.0f %.0f %.0f %.0f\n", p, b, r, s, g}'
}

# ---- idle: ECHO RTT and admin request time with nothing relayed -----------------------------
log "idle: ECHO every ${ECHO_MS} ms for ${SECONDS_} s, admin request every second"
admin_probe "$TMP/admin-idle.txt" "$((SECONDS_ - 2))" &
ADMIN_PID=$!
PIDS+=("$ADMIN_PID")
echo_probe echo-idle 0 "$SECONDS_" || { cat "$TMP/echo-idle.err" >&2; exit 1; }
wait "$ADMIN_PID"

# ---- loaded: iperf3 through the relay, the same probes alongside ----------------------------
inA iperf3 -c "$OV_B" -n 2M >/dev/null 2>&1 || true  # warm-up (TCP, ARP, tunnel keys)
log "loaded: iperf3 -t ${SECONDS_} A -> $OV_B through the relay"
echo_probe echo-load 1 "$((SECONDS_ - 2))" &
ECHO_PID=$!
PIDS+=("$ECHO_PID")
admin_probe "$TMP/admin-load.txt" "$((SECONDS_ - 2))" &
ADMIN_PID=$!
PIDS+=("$ADMIN_PID")
read -r F0 FB0 R0 S0 G0 <<<"$(relay_counters)"
read -r DS0 DA0 DB0 <<<"$(udp_drops)"
C0="$(cpu_ticks "$PD") $(cpu_ticks "$PA") $(cpu_ticks "$PB")"
W0=$(date +%s%N)
inA iperf3 -c "$OV_B" -t "$SECONDS_" -J >"$TMP/iperf3.json"
W1=$(date +%s%N)
C1="$(cpu_ticks "$PD") $(cpu_ticks "$PA") $(cpu_ticks "$PB")"
read -r F1 FB1 R1 S1 G1 <<<"$(relay_counters)"
read -r DS1 DA1 DB1 <<<"$(udp_drops)"
wait "$ECHO_PID" || { cat "$TMP/echo-load.err" >&2; exit 1; }
wait "$ADMIN_PID"
PATH_=$(peer_path)
[[ $PATH_ == relay ]] || { echo "relay_throughput: the tunnel moved to '$PATH_' during the run" >&2; exit 1; }

# ---- report ---------------------------------------------------------------------------------
python3 - "$JSON" "$CLK_TCK" "$TMP" "$(((W1 - W0) / 1000))" "$C0" "$C1" \
  "$((F1 - F0))" "$((FB1 - FB0))" "${THREADS:-default}" "$ECHO_MS" \
  "$((R1 - R0)) $((S1 - S0)) $((G1 - G0))" "$((DS1 - DS0)) $((DA1 - DA0)) $((DB1 - DB0))" <<'EOF'
import json, statistics, sys
as_json, tck, tmp, wall_us = sys.argv[1] == "1", int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
c0, c1 = [list(map(int, a.split())) for a in sys.argv[5:7]]
fwd, fwd_bytes, threads, echo_ms = int(sys.argv[7]), int(sys.argv[8]), sys.argv[9], int(sys.argv[10])
recv_calls, send_calls, gso_dgrams = map(int, sys.argv[11].split())
drops_s, drops_a, drops_b = map(int, sys.argv[12].split())
wall = wall_us / 1e6
ip = json.load(open(f"{tmp}/iperf3.json"))
recv = ip["end"]["sum_received"]
gbit = recv["bits_per_second"] / 1e9
cpu = [(b - a) / tck for a, b in zip(c0, c1)]
def admin(name):
    v = sorted(int(x) / 1000 for x in open(f"{tmp}/{name}.txt").read().split())
    return {"n": len(v), "median_ms": statistics.median(v) if v else None, "max_ms": max(v) if v else None}
r = {
    "seconds": round(wall, 3), "toriid_threads": threads, "gbit_s": gbit, "bytes": recv["bytes"],
    "retransmits": ip["end"].get("sum_sent", {}).get("retransmits"),
    "toriid_cpu_s": cpu[0], "toriid_cores": cpu[0] / wall,
    "gbit_s_per_server_core": gbit / (cpu[0] / wall) if cpu[0] > 0 else None,
    "agent_a_cores": cpu[1] / wall, "agent_b_cores": cpu[2] / wall,
    "iperf3_cpu_pct": {"client": ip["end"]["cpu_utilization_percent"]["host_total"],
                       "server": ip["end"]["cpu_utilization_percent"]["remote_total"]},
    "relay_datagrams_per_s": fwd / wall, "relay_avg_datagram_bytes": fwd_bytes / fwd if fwd else None,
    # Batching (toriid with the batched relay only): datagrams per recvmmsg / sendmmsg call and
    # the share of forwarded datagrams that left in GSO runs.
    "datagrams_per_recvmmsg": fwd / recv_calls if recv_calls else None,
    "datagrams_per_sendmmsg": fwd / send_calls if send_calls else None,
    "gso_share": gso_dgrams / fwd if fwd and recv_calls else None,
    "udp_rcvbuf_drops": {"server": drops_s, "agent_a": drops_a, "agent_b": drops_b},
    "echo_interval_ms": echo_ms,
    "echo_idle": json.load(open(f"{tmp}/echo-idle.json")),
    "echo_load": json.load(open(f"{tmp}/echo-load.json")),
    "admin_idle": admin("admin-idle"), "admin_load": admin("admin-load"),
}
if as_json:
    json.dump(r, sys.stdout, indent=2); print(); sys.exit(0)
f = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"
print(f"\nrelayed iperf3 TCP, 1 stream, {r['seconds']:.1f} s, toriid --threads {threads}")
print(f"  throughput          {gbit:.3f} Gbit/s ({r['retransmits']} retransmits)")
print(f"  toriid CPU          {cpu[0]:.2f} s = {r['toriid_cores']:.2f} cores -> "
      f"{f(r['gbit_s_per_server_core'])} Gbit/s per server core")
print(f"  agents CPU          relay-a {r['agent_a_cores']:.2f} cores, relay-b {r['agent_b_cores']:.2f} cores")
print(f"  iperf3 CPU          client {r['iperf3_cpu_pct']['client']:.0f} %, server {r['iperf3_cpu_pct']['server']:.0f} %")
print(f"  relay datagrams     {r['relay_datagrams_per_s']:.0f}/s, {f(r['relay_avg_datagram_bytes'], 0)} B average")
print(f"  UDP rcvbuf drops    toriid {drops_s}, relay-a {drops_a}, relay-b {drops_b}")
if recv_calls:
    print(f"  relay batching      {r['datagrams_per_recvmmsg']:.1f} datagrams per recvmmsg, "
          f"{r['datagrams_per_sendmmsg']:.1f} per sendmmsg, {100 * r['gso_share']:.0f} % sent in GSO runs")
for k in ("idle", "load"):
    e, a = r[f"echo_{k}"], r[f"admin_{k}"]
    print(f"  {k:5} ECHO RTT ms   median {e['rtt_ms_median']:.3f}  p90 {e['rtt_ms_p90']:.3f}  "
          f"p99 {e['rtt_ms_p99']:.3f}  max {e['rtt_ms_max']:.3f}  ({e['answered']}/{e['sent']} answered, "
          f"every {echo_ms} ms)")
    print(f"  {k:5} device list   median {f(a['median_ms'], 1)} ms  max {f(a['max_ms'], 1)} ms  ({a['n']} requests)")
EOF
