#!/bin/sh
# CTest compare_quick: `benchmarks/compare/run --quick` must succeed and write compare.json,
# compare.md and plots. Exits 77 (CTest: skipped) when a program it needs was not built.
# Usage: quick_test.sh BUILD_DIR OUT_DIR
set -eu
build=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
for b in tools/braidrun benchmarks/braid-perf benchmarks/compare/mpi_bench \
  benchmarks/compare/gloo_bench; do
  if [ ! -x "$build/$b" ]; then
    echo "compare_quick: skipped: $build/$b was not built" \
      "(mpi_bench needs Open MPI, gloo_bench libgloo-dev)"
    exit 77
  fi
done
if ! command -v mpirun >/dev/null 2>&1; then
  echo "compare_quick: skipped: mpirun not found (openmpi-bin)"
  exit 77
fi
if ! python3 -c 'import matplotlib' 2>/dev/null &&
  ! /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
  echo "compare_quick: skipped: python3-matplotlib is not installed"
  exit 77
fi
rm -rf "$out"
python3 "$here/run" --quick --strict --build "$build" --out "$out"
for f in compare.json compare.md; do
  if [ ! -s "$out/$f" ]; then
    echo "compare_quick: $out/$f was not written"
    exit 1
  fi
done
if ! ls "$out"/*.png >/dev/null 2>&1; then
  echo "compare_quick: no plot (.png) in $out"
  exit 1
fi
# -T is nccl-tests' timeout: with one rank stopped (SIGSTOP) in the middle of a long run, the
# other's call outlasts it and that rank exits naming the limit; mpirun then ends the job.
start=$(date +%s)
if OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 timeout 60 mpirun -np 2 \
  --oversubscribe --bind-to none --mca btl vader,self sh -c \
  'if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then (sleep 2; kill -STOP $$) & fi
   exec "$0" allreduce -b 64K -e 64K -n 100000000 -w 1 -T 2' \
  "$build/benchmarks/compare/mpi_bench" >"$out/timeout.log" 2>&1; then
  echo "compare_quick: mpi_bench -T 2 with a stopped rank did not fail"
  exit 1
fi
took=$(($(date +%s) - start))
if ! grep -q "did not finish within -T 2 s" "$out/timeout.log" || [ "$took" -ge 40 ]; then
  echo "compare_quick: mpi_bench -T 2 with a stopped rank: no timeout message, or ${took} s"
  cat "$out/timeout.log"
  exit 1
fi
echo "compare_quick: ok ($out)"
