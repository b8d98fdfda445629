#!/bin/bash
# Interleaved A/B: braid-perf of 9b1ade8 (A, before) and 11dc53a (B, non-temporal stores), 2 ranks, shm.
export GLIBC_TUNABLES=glibc.malloc.hugetlb=1 BRAID_TRANSPORTS=shm
A=/tmp/s9/base/build/benchmarks/braid-perf
B=/work/main/build/benchmarks/braid-perf
RUN=/work/main/build/tools/braidrun
for d in ${TYPES:-float}; do
for r in $(seq ${ROUNDS:-5}); do
  for v in A B B A; do
    bin=$A; [ $v = B ] && bin=$B
    echo -n "$d round $r $v: "
    $RUN -np 2 $bin allreduce -b ${MIN:-4M} -e 256M -f 4 -n 10 -w 2 -z 1 -d $d 2>&1 | grep -E "^\[0\] +[0-9]" | awk '{printf "%sM=%s ", $2/1048576, $8}'
    echo
  done
done
done
