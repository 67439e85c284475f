#!/usr/bin/env bash
# Installs every build, test and demo dependency of torii from Debian 12's package registry.
# Idempotent; needs root (CI runs as root). Nothing is downloaded from anywhere else.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
PKGS=(
  build-essential cmake ninja-build pkg-config git
  libssl-dev openssl                       # TLS 1.3, X.509, EVP
  libboost1.81-dev                         # Asio (C++20 coroutines), Beast
  libsqlite3-dev sqlite3                   # embedded Store
  libprotobuf-dev protobuf-compiler        # control protocol (lite runtime)
  libspdlog-dev libfmt-dev                 # logging
  libcli11-dev nlohmann-json3-dev libtomlplusplus-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang-14 libclang-rt-14-dev              # libFuzzer preset
  stun-client                              # STUN interop test
  python3 iproute2 procps curl             # integration tests
  nftables nmap iperf3 iputils-ping        # netns tests: NAT routers, scans, transfers (A6-A11)
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all packages present"
fi
