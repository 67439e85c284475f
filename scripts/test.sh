#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs dependencies (apt-get), builds the release
# preset and runs every ctest (unit, fuzz-corpus replay, loopback integration, and the netns tests:
# real NAT routers and tunnels in network namespaces, which need root), then builds the
# ASan+UBSan preset and runs the unit and fuzz-replay tests under the sanitizers.
# Skip the sanitizer pass with TORII_SKIP_ASAN=1 (CI runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
jobs=$(nproc)

cmake --preset release
cmake --build --preset release -j "$jobs"
# Unit tests and corpus replays in parallel; integration tests one at a time (they time things).
ctest --preset release -LE "integration|netns" -j "$jobs"
# As root every netns tool is installed above, so a netns test that would skip fails instead.
if [ "$(id -u)" = 0 ]; then export TORII_REQUIRE_NETNS=1; fi
ctest --preset release -L "integration|netns"

if [ "${TORII_SKIP_ASAN:-0}" != "1" ]; then
  cmake --preset debug
  cmake --build --preset debug -j "$jobs"
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --preset debug -LE "integration|netns" -j "$jobs"
fi
echo "torii: all tests passed"
