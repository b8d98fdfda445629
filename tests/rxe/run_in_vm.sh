#!/bin/sh
# CTest entry of label rxe: boots the Soft-RoCE guest (tools/rxe-vm, 2 rails) and runs the ib
# tests and the collective suite over ib inside it. Exit 77 (skip) when the guest cannot run.
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
  BRAID_IB_HCA='=rxe_a0,rxe_b0' $build/tests/collectives_test --gtest_filter='Transports/Collectives.*/ib_*'"
