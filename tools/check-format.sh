#!/bin/sh
# Fails when a C/C++ file is not clang-format clean (the .clang-format in the repo).
set -eu
cd "$(dirname "$0")/.."
CF=$(command -v clang-format-14 || command -v clang-format)
files=$(git ls-files '*.h' '*.hpp' '*.cc' '*.c' 2>/dev/null || find include src transports collectives benchmarks tests tools -name '*.h' -o -name '*.hpp' -o -name '*.cc')
bad=0
for f in $files; do
  if ! "$CF" --dry-run --Werror "$f" >/dev/null 2>&1; then echo "not clang-format clean: $f"; bad=1; fi
done
exit $bad
