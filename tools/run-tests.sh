#!/bin/sh
# The whole test suite: installs dependencies, builds (release and ASan+UBSan), runs every test.
# Usage: tools/run-tests.sh [extra ctest args]
set -eu
cd "$(dirname "$0")/.."
tools/install-deps.sh
JOBS=${JOBS:-2}
cmake --preset default >/dev/null
cmake --build build -j"$JOBS"
ctest --test-dir build --output-on-failure -j"$JOBS" "$@"
cmake --preset sanitize >/dev/null
cmake --build build-asan -j"$JOBS"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j"$JOBS" -L 'unit|multiproc' "$@"
# The same code must build warning-free with clang 14 too (compile check, tests run above).
cmake --preset clang >/dev/null
cmake --build build-clang -j"$JOBS"
tools/check-format.sh
echo "braid: all tests passed"
