#!/bin/sh
# The measurements of README.md here: 3 interleaved repeats on one host, 2 ranks, 256 MiB.
# Usage: run.sh BUILD_DIR PROTO_DIR (PROTO_DIR holds staging_proto built as sp0 sp1 sp2).
set -u
B=$1 P=$2
export GLIBC_TUNABLES=glibc.malloc.hugetlb=1 BRAID_TRANSPORTS=shm
perf() { "$B/tools/braidrun" -np 2 --timeout 300 "$B/benchmarks/braid-perf" "$@" -n 10 -w 2 -c 0 \
  -z 1 -a 3 2>&1 | grep -E '^\[0\] +[0-9]' | awk '{print "  out-of-place", $7, "us", $9, "GB/s busbw; in-place", $11, "us", $13, "GB/s"}'; }
for rep in 1 2 3; do
  echo "== repeat $rep"
  echo "memcpy 256 MiB: $("$B/benchmarks/reduce_bench" --benchmark_filter='BM_Memcpy/268435456$' \
    --benchmark_min_time=1 2>/dev/null | grep -o 'bytes_per_second=[0-9.]*G' )"
  echo "allreduce 256 MiB (CMA):"; perf allreduce -b 256M -e 256M
  echo "allreduce 256 MiB (BRAID_SHM_CMA=0, through the rings):"; BRAID_SHM_CMA=0 perf allreduce -b 256M -e 256M
  echo "reducescatter 256 MiB:"; perf reducescatter -b 256M -e 256M
  echo "allgather 256 MiB:"; perf allgather -b 256M -e 256M
  echo "sendrecv 128 MiB (each rank sends and receives, CMA):"; perf sendrecv -b 128M -e 128M
  for m in 0 1 2; do echo "staging prototype: $("$P/sp$m" 1048576)"; done
done
