#!/bin/sh
# CTest entry of label rxe: boots the Soft-RoCE guest (tools/rxe-vm, 2 rails) and runs the ib
# tests, the collective suite over ib and braid-perf allreduce/alltoall over ib on 2 and 4 ranks
# (every element checked; copied and registered buffers) inside it. Exit 77 (skip) when the
# guest cannot run.
# Usage: run_in_vm.sh SOURCE_DIR BUILD_DIR
set -eu
src=$1
build=$2
cd "$src"
# The guest's /tmp, /run and /var/tmp are empty: a checkout there is mounted in explicitly.
mounts=""
for d in "$src" "$build"; do
  case "$d" in /tmp/* | /run/* | /var/tmp/*) mounts="$mounts --out $d" ;; esac
done
# shellcheck disable=SC2086
exec tools/rxe-vm --rails 2 --timeout 840 --cache "$build/rxe-vm" $mounts -- sh -c "
  $build/tests/ib_test &&
  BRAID_IB_HCA='=rxe_a0,rxe_b0' $build/tests/collectives_test --gtest_filter='Transports/Collectives.*/ib_*' &&
  for n in 2 4; do for coll in allreduce alltoall; do
    BRAID_TRANSPORTS=ib BRAID_IB_HCA='=rxe_a0,rxe_b0' $build/tools/braidrun -np \$n \
      $build/benchmarks/braid-perf \$coll -b 8 -e 1M -f 16 -n 2 -w 1 -R \$((n / 4)) || exit 1
  done; done"
