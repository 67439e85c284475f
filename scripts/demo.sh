#!/usr/bin/env bash
# The demo: installs dependencies, builds, starts toriid on SQLite with a local CA in a temporary
# directory (loopback only), enrolls two agents, runs them and shows them online with their
# attributes (NAT type via STUN, public endpoint, addresses, versions, RTT). Cleans up on exit.
# Keep it running afterwards with: scripts/demo.sh --keep
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0
[ "${1:-}" = "--keep" ] && keep=1
scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)"
bin=$PWD/build/release/apps

work=$(mktemp -d /tmp/torii-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@"; }

step "Start toriid (data in $work/server)"
"$bin/toriid" --data-dir "$work/server" --listen 127.0.0.1:17443 --stun 127.0.0.1:13478 --relay 127.0.0.1:13480 \
  --stun-alt 127.0.0.2:13479 --api "unix:$work/admin.sock" --advertise 127.0.0.1:17443 \
  >"$work/toriid.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q 'CA fingerprint' "$work/toriid.log" 2>/dev/null && break; sleep 0.1; done
cat "$work/toriid.log"
if ! kill -0 "${pids[0]}" 2>/dev/null || ! grep -q 'CA fingerprint' "$work/toriid.log"; then
  echo "demo: toriid did not start (see above); are ports 17443/13478/13479/13480 free?" >&2
  exit 1
fi
fp=$(awk '/CA fingerprint/ {print $NF}' "$work/toriid.log")
torii() { "$bin/torii" --data-dir "$work/server" "$@"; }

step "Create a group and two devices"
show torii group create factory
for dev in camera-1 plc-7; do
  out=$(torii device add "$dev" --group factory --json)
  token=$(printf '%s' "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  step "Enroll $dev (key generated on the device; CSR over TLS pinned to the CA)"
  show "$bin/torii-agent" enroll --server 127.0.0.1:17443 --ca-sha256 "$fp" --id "$dev" \
    --token "$token" --state-dir "$work/$dev"
  "$bin/torii-agent" run --state-dir "$work/$dev" --keepalive 5s --no-tunnel \
    --firmware-version "fw-2.1.$RANDOM" >"$work/$dev.log" 2>&1 &
  pids+=($!)
done

step "Wait until both are online with their NAT attributes"
for _ in $(seq 100); do
  n=$(torii device list --json | python3 -c \
    'import json,sys; print(sum(1 for d in json.load(sys.stdin)["devices"] if d["online"] and d["nat_type"]))')
  [ "$n" = 2 ] && break
  sleep 0.1
done
show torii device list
show torii device show camera-1 --json
show "$bin/torii-agent" status --state-dir "$work/camera-1"

step "Revoke plc-7: its session drops at once and it does not come back"
show torii device revoke plc-7
sleep 1
show torii device list
show torii log --limit 12

step "Part two: peer-to-peer tunnels between devices behind NATs (network namespaces)"
if [ "$(id -u)" = 0 ]; then
  TORII_BIN="$bin" python3 scripts/demo_p2p.py
else
  echo "(skipped: creating network namespaces and TUN interfaces needs root; run as root)"
fi

if [ "$keep" = 1 ]; then
  step "Running; press Ctrl-C to stop (state in $work)"
  wait
fi
