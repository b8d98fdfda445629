// Reduction kernels against memcpy of the same bytes (Google Benchmark). The kernel reads two
// buffers and writes one, memcpy reads one and writes one, so a vectorized reduction runs at a
// similar bytes/s to memcpy; a scalar one is several times slower (fp16/bf16 convert in and
// out of float32 as well). Run: build/benchmarks/reduce_bench; results: benchmarks/results/.
#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>

#include "src/core/dtype.h"
#include "src/engine/reduce.h"

namespace {

void BM_Memcpy(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0));
  std::vector<char> a(bytes, 1), d(bytes, 0);
  for (auto _ : state) {
    std::memcpy(d.data(), a.data(), bytes);
    benchmark::DoNotOptimize(d.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(bytes));
}

template <braidDataType_t Dt, braidRedOp_t Op>
void BM_Reduce(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0));
  const size_t count = bytes / braid::dtypeSize(Dt);
  std::vector<char> a(bytes, 0), b(bytes, 0), d(bytes, 0);
  // Small positive values in every type (0x3c00 is 1.0 in fp16, 0x3f80 in bf16).
  for (size_t i = 0; i + 1 < bytes; i += 2) {
    a[i + 1] = b[i + 1] = 0x3c;
  }
  for (auto _ : state) {
    braid::reduceBuffers(d.data(), a.data(), b.data(), count, Dt, Op);
    benchmark::DoNotOptimize(d.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(bytes));
}

#define SIZES Arg(4 << 10)->Arg(256 << 10)->Arg(8 << 20)
BENCHMARK(BM_Memcpy)->SIZES;
BENCHMARK(BM_Reduce<braidFloat32, braidSum>)->SIZES;
BENCHMARK(BM_Reduce<braidFloat64, braidSum>)->SIZES;
BENCHMARK(BM_Reduce<braidInt32, braidMax>)->SIZES;
BENCHMARK(BM_Reduce<braidInt8, braidSum>)->SIZES;
BENCHMARK(BM_Reduce<braidFloat16, braidSum>)->SIZES;
BENCHMARK(BM_Reduce<braidBfloat16, braidSum>)->SIZES;
BENCHMARK(BM_Reduce<braidFloat32, braidMax>)->SIZES;

}  // namespace

BENCHMARK_MAIN();
