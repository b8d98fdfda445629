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

// Tests and benchmarks only: false forces the portable kernels even where the CPU has
// F16C/AVX2 (so both paths are checked on one machine); true picks by cpuid again.
void reduceUseSimdForTesting(bool enabled);

// buf[i] = buf[i] / nranks (integers: truncating division, as NCCL's ncclAvg does).
void finishAvg(void* buf, size_t count, braidDataType_t dt, int nranks);

}  // namespace braid
