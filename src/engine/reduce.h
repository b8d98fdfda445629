// Element-wise reduction kernels for every braid datatype and op (host memory).
#pragma once

#include <cstddef>

#include "braid/braid.h"

namespace braid {

// dst[i] = a[i] OP b[i] for i < count. dst may alias a or b (exactly, not partially).
// braidAvg reduces as braidSum; finishAvg divides once at the end.
// float16 and bfloat16 compute in float32 and round to nearest even once per element.
void reduceBuffers(void* dst, const void* a, const void* b, size_t count, braidDataType_t dt,
                   braidRedOp_t op);

// Whether reduceStreaming has a kernel for dt and op on this CPU (x86-64 with AVX; float32,
// float16 and bfloat16; sum, prod, max, min). The same answer on every rank of a machine.
bool canReduceStreaming(braidDataType_t dt, braidRedOp_t op);
// Where canReduceStreaming: keep[i] = dst[i] = a[i] OP b[i] in one pass, dst written with
// non-temporal stores (when 16-byte aligned): for an output too large to stay in any cache,
// whose lines would otherwise be read from memory only to be overwritten. keep may alias a or
// b exactly. The same bits for the same a, b and count whatever dst's alignment (but not
// necessarily reduceBuffers' bits for NaN payloads). Does nothing where it has no kernel.
void reduceStreaming(void* dst, void* keep, const void* a, const void* b, size_t count,
                     braidDataType_t dt, braidRedOp_t op);

// Tests and benchmarks only: false forces the portable kernels even where the CPU has
// F16C/AVX2 (so both paths are checked on one machine); true picks by cpuid again.
void reduceUseSimdForTesting(bool enabled);

// buf[i] = buf[i] / nranks (integers: truncating division, as NCCL's ncclAvg does).
void finishAvg(void* buf, size_t count, braidDataType_t dt, int nranks);

}  // namespace braid
