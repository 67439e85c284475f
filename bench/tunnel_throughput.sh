#!/usr/bin/env bash
# Tunnel throughput and latency: one iperf3 TCP test between two network namespaces joined by a
# veth pair, over the raw veth, over Nebula, over wireguard-go (userspace WireGuard) and over the
# torii peer-to-peer tunnel (direct path; toriid in <P>-a brokers it). Prints Gbit/s, the ratio to
# raw and to Nebula, and the CPU seconds the tunnel processes (both ends) spent per GB carried.
# Before the throughput test, on the otherwise idle path: ICMP echo round trips (`ping -c PINGS
# -i INTERVAL`, 56-byte payload), median and p99 (nearest rank) per path, and the latency each
# tunnel adds to the raw veth (tunnel minus raw, for the median and for the p99; issue 4 target 2).
# --loaded-latency also pings (every 10 ms) during the timed iperf3 run.
#
#    <P>-a                                      <P>-b
#    veth0 10.201.0.1/24 <----- veth pair -----> veth0 10.201.0.2/24    (MTU 1500)   raw
#    nebula1 10.202.0.1 (lighthouse, :4242) <==> nebula1 10.202.0.2                  Nebula
#    wg<T>a 10.203.0.1 (wireguard-go, :51820) <> wg<T>b 10.203.0.2 (wireguard-go)    WireGuard
#    torii0 100.64.0.1 (torii-agent)        <==> torii0 100.64.0.2 (torii-agent)      torii
#    toriid 10.201.0.1:7443 (+ STUN :3478, relay :3480; brokers the torii tunnel only)
#    iperf3 client, ping                         iperf3 server
#
#   bench/tunnel_throughput.sh [--seconds N] [--streams N] [--json] [--only raw,nebula,wg,torii]
#                              [--pings N] [--interval S] [--no-latency | --latency-only]
#                              [--loaded-latency] [--keep]
#
# Needs root, iproute2, iperf3, ping, python3; nebula + nebula-cert, wireguard-go + wg, and
# TORII_BIN (folder with toriid, torii, torii-agent) for those paths (each is skipped without);
# TORII_AGENT_ARGS adds `torii-agent run` options (e.g. --no-offload).
# Each tool keeps its default tunnel MTU (Nebula 1300, wireguard-go 1420, torii 1400), as users
# get them; the table shows it. Nothing outside the two namespaces is touched, except
# wireguard-go's UAPI sockets in /var/run/wireguard (named uniquely per run, removed when it
# exits). <P> and <T> are unique per run, so parallel runs do not collide. Everything is stopped
# and deleted on exit. On a small shared machine the figures move with the other load: iperf3,
# ping and the tunnel processes compete for the same cores.
set -euo pipefail

SECONDS_=10
STREAMS=1
JSON=0
ONLY="raw,nebula,wg,torii"
KEEP=0
LATENCY=1     # idle ping round trips per path
THROUGHPUT=1  # the iperf3 test
LOADED=0      # also ping during the timed iperf3 run
PINGS=500
INTERVAL=0.005
usage() { sed -n 2,31p "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --seconds) SECONDS_=$2; shift 2 ;;
    --streams) STREAMS=$2; shift 2 ;;
    --json) JSON=1; shift ;;
    --only) ONLY=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --pings) PINGS=$2; shift 2 ;;
    --interval) INTERVAL=$2; shift 2 ;;
    --no-latency) LATENCY=0; shift ;;
    --latency-only) THROUGHPUT=0; LATENCY=1; shift ;;
    --loaded-latency) LOADED=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "tunnel_throughput: unknown option $1" >&2; usage ;;
  esac
done
[[ $SECONDS_ =~ ^[0-9]+$ && $SECONDS_ -ge 1 ]] || { echo "--seconds: a positive integer" >&2; exit 2; }
[[ $STREAMS =~ ^[0-9]+$ && $STREAMS -ge 1 ]] || { echo "--streams: a positive integer" >&2; exit 2; }
[[ $PINGS =~ ^[0-9]+$ && $PINGS -ge 10 ]] || { echo "--pings: an integer >= 10" >&2; exit 2; }
[[ $INTERVAL =~ ^[0-9]*\.?[0-9]+$ ]] || { echo "--interval: seconds, e.g. 0.005" >&2; exit 2; }
[[ $LATENCY -eq 1 || $THROUGHPUT -eq 1 ]] || { echo "nothing to measure" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "tunnel_throughput: needs root (namespaces, tun)" >&2; exit 2; }
for t in ip iperf3 ping python3; do
  command -v "$t" >/dev/null || { echo "tunnel_throughput: $t not installed" >&2; exit 2; }
done
want() { [[ ",$ONLY," == *",$1,"* ]]; }

TAG=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
P="tp$$x$TAG"
A="$P-a"
B="$P-b"
WGA="wg${TAG}a"
WGB="wg${TAG}b"
TMP=$(mktemp -d "/tmp/tunnel-throughput-$P.XXXX")
PIDS=()
CLK_TCK=$(getconf CLK_TCK)

NAMESPACES=("$A" "$B")
bench_extra_cleanup() { rm -f "/var/run/wireguard/$WGA.sock" "/var/run/wireguard/$WGB.sock"; }
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

inA() { ip netns exec "$A" "$@"; }
inB() { ip netns exec "$B" "$@"; }

# ---- topology -------------------------------------------------------------------------------
ip netns add "$A"
ip netns add "$B"
for ns in "$A" "$B"; do
  ip -n "$ns" link set lo up
  ip netns exec "$ns" sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6'
done
ip -n "$A" link add veth0 mtu 1500 type veth peer name veth0 mtu 1500 netns "$B"
ip -n "$A" addr add 10.201.0.1/24 dev veth0
ip -n "$B" addr add 10.201.0.2/24 dev veth0
ip -n "$A" link set veth0 up
ip -n "$B" link set veth0 up

bg "$B" iperf3-server iperf3 -s
wait_for 50 inB sh -c 'ss -ltn | grep -q ":5201 "' || { echo "iperf3 server did not start" >&2; exit 1; }

# Measures TCP from A to $1 (an address of B); prints "bits_per_second bytes". Warm-up first
# (retried: the first packets also trigger the tunnel handshake).
measure() {
  local dst=$1 name=$2 ok=0
  for _ in $(seq 1 20); do
    if inA iperf3 -c "$dst" -n 1M -J >"$TMP/$name-warm.json" 2>&1; then ok=1; break; fi
    sleep 0.5
  done
  [[ $ok -eq 1 ]] || { echo "$name: no iperf3 path to $dst" >&2; cat "$TMP/$name-warm.json" >&2; return 1; }
  local ping_pid=""
  if [[ $LOADED -eq 1 ]]; then  # round trips under load: every 10 ms during the timed run
    inA ping -n -i 0.01 -w "$SECONDS_" -W 1 "$dst" >"$TMP/$name-loaded-ping.txt" 2>&1 &
    ping_pid=$!
  fi
  inA iperf3 -c "$dst" -t "$SECONDS_" -P "$STREAMS" -J >"$TMP/$name.json"
  if [[ -n $ping_pid ]]; then wait "$ping_pid" || true; fi
  python3 - "$TMP/$name.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))["end"]["sum_received"]
print(s["bits_per_second"], s["bytes"])
EOF
}

RESULTS=()  # "path|bps|bytes|cpu_ticks|mtu|note"
record() { RESULTS+=("$1|$2|$3|$4|$5|$6"); }

# Latency (issue 4 target 2): ICMP echo round trips from A to $1 on the otherwise idle path, after
# a warm-up (the first packets may open the tunnel: Nebula and torii handshake on demand). $2 is
# the path's name in the report. The per-packet RTTs stay in $TMP/<name>-ping.txt.
LATS=()  # "path|idle or loaded|ping output file"
latency() {
  local dst=$1 name=$2 ok=0
  for _ in $(seq 1 40); do
    if inA ping -n -c 1 -W 1 "$dst" >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.25
  done
  [[ $ok -eq 1 ]] || { echo "$name: no ping reply from $dst" >&2; return 1; }
  inA ping -n -q -c 20 -i 0.01 -W 1 "$dst" >/dev/null 2>&1 || true
  # Exit status 1 only means some replies were lost: the report counts them.
  inA ping -n -c "$PINGS" -i "$INTERVAL" -W 1 "$dst" >"$TMP/$name-ping.txt" 2>&1 || true
  LATS+=("$name|idle|$TMP/$name-ping.txt")
  log "$name: $PINGS pings to $dst every ${INTERVAL}s done"
}
note_loaded() {  # note_loaded PATH MEASURE_NAME: keeps the pings measure() ran under load
  if [[ $LOADED -eq 1 && -s $TMP/$2-loaded-ping.txt ]]; then
    LATS+=("$1|loaded|$TMP/$2-loaded-ping.txt")
  fi
  return 0
}

# ---- raw veth -------------------------------------------------------------------------------
run_raw() {
  if [[ $LATENCY -eq 1 ]]; then latency 10.201.0.2 raw || return 1; fi
  [[ $THROUGHPUT -eq 1 ]] || return 0
  log "raw: veth 10.201.0.1 -> 10.201.0.2, ${SECONDS_}s, $STREAMS stream(s)"
  local out bps bytes
  out=$(measure 10.201.0.2 raw) || return 1
  read -r bps bytes <<<"$out"
  record raw "$bps" "$bytes" "" 1500 "kernel veth"
  note_loaded raw raw
}

# ---- Nebula ---------------------------------------------------------------------------------
run_nebula() {
  if ! command -v nebula >/dev/null || ! command -v nebula-cert >/dev/null; then
    log "nebula: not installed, skipped"; return 0
  fi
  local d=$TMP/nebula
  mkdir -p "$d"
  nebula-cert ca -name "tunnel-bench $P" -duration 2h -out-crt "$d/ca.crt" -out-key "$d/ca.key"
  nebula-cert sign -name a -ip 10.202.0.1/24 -ca-crt "$d/ca.crt" -ca-key "$d/ca.key" \
    -out-crt "$d/a.crt" -out-key "$d/a.key"
  nebula-cert sign -name b -ip 10.202.0.2/24 -ca-crt "$d/ca.crt" -ca-key "$d/ca.key" \
    -out-crt "$d/b.crt" -out-key "$d/b.key"
  for side in a b; do
    local lh_conf
    if [[ $side == a ]]; then
      lh_conf="  am_lighthouse: true"
    else
      lh_conf=$'  am_lighthouse: false\n  hosts:\n    - "10.202.0.1"'
    fi
    cat >"$d/$side.yml" <<EOF
pki:
  ca: $d/ca.crt
  cert: $d/$side.crt
  key: $d/$side.key
static_host_map:
  "10.202.0.1": ["10.201.0.1:4242"]
lighthouse:
$lh_conf
  interval: 60
listen:
  host: 0.0.0.0
  port: 4242
punchy:
  punch: false
tun:
  disabled: false
  dev: nebula1
  drop_local_broadcast: false
  drop_multicast: false
  tx_queue: 500
  mtu: 1300
logging:
  level: info
  format: text
firewall:
  outbound:
    - port: any
      proto: any
      host: any
  inbound:
    - port: any
      proto: any
      host: any
EOF
  done
  local pa pb
  bg "$A" nebula-a nebula -config "$d/a.yml"; pa=$BGPID
  bg "$B" nebula-b nebula -config "$d/b.yml"; pb=$BGPID
  wait_for 100 inA ip addr show dev nebula1 || { cat "$TMP/nebula-a.log" >&2; return 1; }
  wait_for 100 inB ip addr show dev nebula1 || { cat "$TMP/nebula-b.log" >&2; return 1; }
  log "nebula $(nebula -version | awk '{print $2}'), overlay 10.202.0.1 -> 10.202.0.2"
  if [[ $LATENCY -eq 1 ]]; then latency 10.202.0.2 nebula || return 1; fi
  if [[ $THROUGHPUT -eq 0 ]]; then kill -TERM "$pa" "$pb" 2>/dev/null || true; return 0; fi
  # Handshake and warm-up happen in measure(); CPU is counted over the timed run only.
  inA iperf3 -c 10.202.0.2 -n 1M >/dev/null 2>&1 || true
  local t0 t1
  t0=$(cpu_ticks "$pa" "$pb")
  local out bps bytes
  out=$(measure 10.202.0.2 nebula) || return 1
  read -r bps bytes <<<"$out"
  t1=$(cpu_ticks "$pa" "$pb")
  record nebula "$bps" "$bytes" "$((t1 - t0))" 1300 "nebula $(nebula -version | awk '{print $2}')"
  note_loaded nebula nebula
  kill -TERM "$pa" "$pb" 2>/dev/null || true
}

# ---- wireguard-go ---------------------------------------------------------------------------
run_wg() {
  if ! command -v wireguard-go >/dev/null || ! command -v wg >/dev/null; then
    log "wireguard-go: not installed, skipped"; return 0
  fi
  local d=$TMP/wg
  mkdir -p "$d"
  umask 077
  wg genkey >"$d/a.key"; wg pubkey <"$d/a.key" >"$d/a.pub"
  wg genkey >"$d/b.key"; wg pubkey <"$d/b.key" >"$d/b.pub"
  umask 022
  local pa pb
  # Foreground mode keeps the PID ours (no daemon fork), so it can be measured and killed.
  bg "$A" wg-a env WG_PROCESS_FOREGROUND=1 wireguard-go "$WGA"; pa=$BGPID
  bg "$B" wg-b env WG_PROCESS_FOREGROUND=1 wireguard-go "$WGB"; pb=$BGPID
  wait_for 100 inA ip link show "$WGA" || { cat "$TMP/wg-a.log" >&2; return 1; }
  wait_for 100 inB ip link show "$WGB" || { cat "$TMP/wg-b.log" >&2; return 1; }
  wait_for 50 test -S "/var/run/wireguard/$WGA.sock"
  wait_for 50 test -S "/var/run/wireguard/$WGB.sock"
  # Userspace, not the kernel module: the interface must be a tun device.
  for side in "$A:$WGA" "$B:$WGB"; do
    local kind
    kind=$(ip -d -n "${side%%:*}" link show "${side##*:}" | awk 'NR==3{print $1}')
    if [[ $kind != tun ]]; then
      echo "wireguard-go: ${side##*:} is a '$kind' device, not tun (kernel WireGuard?)" >&2
      return 1
    fi
  done
  inA wg set "$WGA" listen-port 51820 private-key "$d/a.key" \
    peer "$(cat "$d/b.pub")" endpoint 10.201.0.2:51820 allowed-ips 10.203.0.2/32
  inB wg set "$WGB" listen-port 51820 private-key "$d/b.key" \
    peer "$(cat "$d/a.pub")" endpoint 10.201.0.1:51820 allowed-ips 10.203.0.1/32
  ip -n "$A" addr add 10.203.0.1/24 dev "$WGA"
  ip -n "$B" addr add 10.203.0.2/24 dev "$WGB"
  ip -n "$A" link set "$WGA" up
  ip -n "$B" link set "$WGB" up
  local mtu
  mtu=$(ip -n "$A" -o link show "$WGA" | sed -n 's/.* mtu \([0-9]*\).*/\1/p')
  log "wireguard-go: $(wireguard-go --version | head -1) (tun devices), overlay 10.203.0.1 -> 10.203.0.2"
  if [[ $LATENCY -eq 1 ]]; then latency 10.203.0.2 wireguard-go || return 1; fi
  if [[ $THROUGHPUT -eq 0 ]]; then kill -TERM "$pa" "$pb" 2>/dev/null || true; return 0; fi
  inA iperf3 -c 10.203.0.2 -n 1M >/dev/null 2>&1 || true
  local t0 t1
  t0=$(cpu_ticks "$pa" "$pb")
  local out bps bytes
  out=$(measure 10.203.0.2 wg) || return 1
  read -r bps bytes <<<"$out"
  t1=$(cpu_ticks "$pa" "$pb")
  record wireguard-go "$bps" "$bytes" "$((t1 - t0))" "$mtu" \
    "$(wireguard-go --version | head -1 | awk '{print $2}')"
  note_loaded wireguard-go wg
  kill -TERM "$pa" "$pb" 2>/dev/null || true
}

# ---- torii ----------------------------------------------------------------------------------
# The torii peer-to-peer tunnel (A6-A9): toriid in $A (control 10.201.0.1:7443, STUN :3478, UDP
# relay :3480, admin API on a unix socket in its data dir), one device per namespace in group
# "bench", each running `torii-agent run` (TUN torii0 with its overlay address, UDP tunnel
# socket); `torii-agent connect --wait` opens the tunnel, which must be direct (no NAT between
# the two: the relay would measure toriid instead). CPU is both torii-agent processes (toriid
# only brokers the tunnel and carries nothing on a direct path). TORII_BIN: folder with toriid,
# torii and torii-agent (e.g. build/release/apps).

run_torii() {
  if [[ -z ${TORII_BIN:-} ]]; then
    log "torii: skipped (set TORII_BIN to the folder with toriid and torii-agent)"
    return 0
  fi
  if [[ ! -x $TORII_BIN/torii-agent ]] || ! "$TORII_BIN/torii-agent" --help 2>/dev/null | grep -qi tunnel; then
    log "torii: skipped (no tunnel in $TORII_BIN/torii-agent yet)"
    return 0
  fi
  local d=$TMP/torii srv agent torii
  srv=$TMP/torii/srv
  agent=$TORII_BIN/torii-agent
  torii=("$TORII_BIN/torii" --data-dir "$srv")
  mkdir -p "$d"
  local pd pa pb
  bg "$A" toriid "$TORII_BIN/toriid" --data-dir "$srv" --listen 10.201.0.1:7443 \
    --stun 10.201.0.1:3478 --relay 10.201.0.1:3480 --api "unix:$srv/api.sock" \
    --advertise 10.201.0.1:7443 --log-level warn
  pd=$BGPID
  wait_for 150 "${torii[@]}" group list || { echo "toriid did not start" >&2; cat "$TMP/toriid.log" >&2; return 1; }
  local fp
  fp=$(sed -n 's/.*CA fingerprint (SHA-256): \([0-9a-f]\{64\}\).*/\1/p' "$TMP/toriid.log" | head -1)
  [[ -n $fp ]] || { echo "toriid printed no CA fingerprint" >&2; cat "$TMP/toriid.log" >&2; return 1; }
  "${torii[@]}" group create bench >/dev/null
  local side ns token
  for side in a b; do
    if [[ $side == a ]]; then ns=$A; else ns=$B; fi
    token=$("${torii[@]}" device add "bench-$side" --group bench --json | torii_json token)
    ip netns exec "$ns" "$agent" enroll --server 10.201.0.1:7443 --ca-sha256 "$fp" \
      --id "bench-$side" --token "$token" --state-dir "$d/$side" >"$TMP/torii-enroll-$side.log" 2>&1 \
      || { cat "$TMP/torii-enroll-$side.log" >&2; return 1; }
  done
  # TORII_AGENT_ARGS: extra `torii-agent run` options, split on spaces (e.g. --no-offload).
  # shellcheck disable=SC2086
  bg "$A" torii-agent-a "$agent" run --state-dir "$d/a" ${TORII_AGENT_ARGS:-}; pa=$BGPID
  # shellcheck disable=SC2086
  bg "$B" torii-agent-b "$agent" run --state-dir "$d/b" ${TORII_AGENT_ARGS:-}; pb=$BGPID
  for side in a b; do
    wait_for 150 sh -c "'$agent' status --state-dir '$d/$side' --json | grep -q '\"state\": *\"established\"'" \
      || { echo "torii-agent $side not established" >&2; cat "$TMP/torii-agent-$side.log" >&2; return 1; }
    wait_for 50 sh -c "'$agent' status --state-dir '$d/$side' --json | grep -q '\"overlay_ipv4\": *\"[0-9]'" \
      || { echo "torii-agent $side has no overlay address" >&2; cat "$TMP/torii-agent-$side.log" >&2; return 1; }
  done
  local ov_b ifname mtu ver t_open
  ov_b=$("$agent" status --state-dir "$d/b" --json | torii_json overlay_ipv4)
  ifname=$("$agent" status --state-dir "$d/a" --json | torii_json interface)
  t_open=$(date +%s%N)
  "$agent" connect bench-b --state-dir "$d/a" --wait >"$TMP/torii-connect.log" 2>&1 \
    || { echo "torii: connect --wait failed" >&2; cat "$TMP/torii-connect.log" "$TMP/torii-agent-a.log" >&2; return 1; }
  t_open=$((($(date +%s%N) - t_open) / 1000000))
  local path
  path=$("$agent" status --state-dir "$d/a" --json | python3 -c '
import json, sys
print(next((p.get("path", "") for p in json.load(sys.stdin).get("peers") or [] if p.get("id") == "bench-b"), ""))')
  if [[ $path != direct ]]; then
    echo "torii: the tunnel is '$path', not direct" >&2
    cat "$TMP/torii-connect.log" >&2
    return 1
  fi
  mtu=$(ip -n "$A" -o link show "$ifname" | sed -n 's/.* mtu \([0-9]*\).*/\1/p')
  ver=$("$agent" --version 2>/dev/null | head -1 | awk '{print $NF}')
  log "torii-agent $ver, overlay $ifname -> $ov_b, tunnel $path (connect --wait ${t_open} ms)"
  if [[ $LATENCY -eq 1 ]]; then latency "$ov_b" torii || return 1; fi
  if [[ $THROUGHPUT -eq 0 ]]; then kill -TERM "$pa" "$pb" "$pd" 2>/dev/null || true; return 0; fi
  local t0 t1 out bps bytes
  t0=$(cpu_ticks "$pa" "$pb")
  out=$(measure "$ov_b" torii) || return 1
  read -r bps bytes <<<"$out"
  t1=$(cpu_ticks "$pa" "$pb")
  path=$("$agent" status --state-dir "$d/a" --json | python3 -c '
import json, sys
print(next((p.get("path", "") for p in json.load(sys.stdin).get("peers") or [] if p.get("id") == "bench-b"), ""))')
  [[ $path == direct ]] || { echo "torii: the tunnel moved to '$path' during the run" >&2; return 1; }
  record torii "$bps" "$bytes" "$((t1 - t0))" "$mtu" "torii-agent $ver, $path"
  note_loaded torii torii
  kill -TERM "$pa" "$pb" "$pd" 2>/dev/null || true
}
# <<< run_torii

# Plain statements (not `want x && run_x`): errexit must stay active inside the functions.
if want raw; then run_raw; fi
if want nebula; then run_nebula; fi
if want wg; then run_wg; fi
if want torii; then run_torii; fi

# ---- report ---------------------------------------------------------------------------------
python3 - "$JSON" "$SECONDS_" "$STREAMS" "$CLK_TCK" "$PINGS" "$INTERVAL" "$THROUGHPUT" \
  "${RESULTS[@]}" @@ "${LATS[@]}" <<'EOF'
import json, math, re, statistics, sys
as_json, secs, streams, tck = sys.argv[1] == "1", int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
pings, interval, throughput = int(sys.argv[5]), sys.argv[6], sys.argv[7] == "1"
rest = sys.argv[8:]
sep = rest.index("@@")
res_args, lat_args = rest[:sep], rest[sep + 1:]
rows = []
for r in res_args:
    path, bps, nbytes, ticks, mtu, note = r.split("|")
    row = {"path": path, "gbit_s": float(bps) / 1e9, "bytes": int(nbytes), "mtu": int(mtu),
           "note": note, "cpu_s": None, "cpu_s_per_gb": None}
    if ticks:
        row["cpu_s"] = int(ticks) / tck
        row["cpu_s_per_gb"] = row["cpu_s"] / (int(nbytes) / 1e9)
    rows.append(row)
by = {r["path"]: r for r in rows}
for r in rows:
    r["ratio_to_raw"] = r["gbit_s"] / by["raw"]["gbit_s"] if "raw" in by else None
    r["ratio_to_nebula"] = r["gbit_s"] / by["nebula"]["gbit_s"] if "nebula" in by else None

# Latency: per-packet RTTs from ping's "time=X ms" lines; p99 by nearest rank.
RTT = re.compile(r"icmp_seq=(\d+) .*time=([\d.]+) ms")
def pct(v, p):
    return v[max(0, math.ceil(p / 100 * len(v)) - 1)]
lat = {"idle": [], "loaded": []}
for a in lat_args:
    path, kind, fname = a.split("|", 2)
    text = open(fname).read()
    rtts = sorted(float(m.group(2)) for m in RTT.finditer(text))
    m = re.search(r"(\d+) packets transmitted", text)
    sent = int(m.group(1)) if m else len(rtts)
    e = {"path": path, "sent": sent, "received": len(rtts),
         "loss_pct": 100.0 * (sent - len(rtts)) / sent if sent else None,
         "min_ms": None, "median_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    if rtts:
        e.update(min_ms=rtts[0], median_ms=statistics.median(rtts), p99_ms=pct(rtts, 99),
                 mean_ms=statistics.fmean(rtts), max_ms=rtts[-1])
    lat[kind].append(e)
for kind in lat:
    base = next((e for e in lat[kind] if e["path"] == "raw"), None)
    for e in lat[kind]:
        for k in ("median", "p99"):
            ok = base and e[f"{k}_ms"] is not None and base[f"{k}_ms"] is not None
            e[f"added_{k}_ms"] = e[f"{k}_ms"] - base[f"{k}_ms"] if ok else None
    neb = next((e for e in lat[kind] if e["path"] == "nebula"), None)
    for e in lat[kind]:
        for k in ("median", "p99"):
            ok = neb and e[f"added_{k}_ms"] is not None and neb[f"added_{k}_ms"] is not None
            e[f"added_{k}_minus_nebula_ms"] = (e[f"added_{k}_ms"] - neb[f"added_{k}_ms"]
                                               if ok else None)

if as_json:
    out = {"seconds": secs, "streams": streams, "results": rows,
           "latency": {"pings": pings, "interval_s": float(interval), "payload_bytes": 56,
                       "percentile": "nearest rank", "idle": lat["idle"]}}
    if lat["loaded"]:
        out["latency"]["loaded"] = lat["loaded"]
        out["latency"]["loaded_interval_s"] = 0.01
    json.dump(out, sys.stdout, indent=2)
    print()
    sys.exit(0)
f = lambda v, fmt: "-" if v is None else format(v, fmt)
if throughput and rows:
    print(f"\niperf3 TCP, {secs} s, {streams} stream(s); CPU = utime+stime of the tunnel processes "
          f"at both ends")
    print(f"{'path':14} {'Gbit/s':>8} {'x raw':>7} {'x nebula':>9} {'CPU s':>7} {'CPU s/GB':>9} "
          f"{'MTU':>5}  note")
    for r in rows:
        print(f"{r['path']:14} {r['gbit_s']:8.2f} {f(r['ratio_to_raw'], '7.2f'):>7} "
              f"{f(r['ratio_to_nebula'], '9.2f'):>9} {f(r['cpu_s'], '7.2f'):>7} "
              f"{f(r['cpu_s_per_gb'], '9.2f'):>9} {r['mtu']:5d}  {r['note']}")
for kind in ("idle", "loaded"):
    if not lat[kind]:
        continue
    if kind == "idle":
        print(f"\nping RTT on the idle path, {pings} x every {interval} s, 56-byte payload; "
              f"added = tunnel - raw; p99 by nearest rank")
    else:
        print(f"\nping RTT during the iperf3 run (every 0.01 s, {secs} s); added = tunnel - raw")
    print(f"{'path':14} {'recv/sent':>10} {'min ms':>8} {'median':>8} {'p99':>8} {'max':>8} "
          f"{'added med':>10} {'added p99':>10}")
    for e in lat[kind]:
        print(f"{e['path']:14} {str(e['received']) + '/' + str(e['sent']):>10} "
              f"{f(e['min_ms'], '8.3f'):>8} {f(e['median_ms'], '8.3f'):>8} "
              f"{f(e['p99_ms'], '8.3f'):>8} {f(e['max_ms'], '8.3f'):>8} "
              f"{f(e['added_median_ms'], '10.3f'):>10} {f(e['added_p99_ms'], '10.3f'):>10}")
EOF
