// Host reduction kernels against memcpy of the same bytes (Google Benchmark).
//
// bytes_per_second counts the destination bytes. A reduction reads two buffers and writes one,
// memcpy reads one and writes one, so a vectorized reduction runs at a similar bytes/s to
// memcpy; a scalar one is several times slower (fp16/bf16 also convert to float32 and back).
// Variants: "inplace" has dst == a (as the collectives mostly call it), "portable" forces the
// portable kernels where the CPU would get F16C / AVX2 ones.
// Run: build/benchmarks/reduce_bench --benchmark_min_time=0.1 (results: benchmarks/results/).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "braid/braid.h"
#include "src/core/dtype.h"
#include "src/engine/half.h"
#include "src/engine/reduce.h"

namespace {

constexpr int64_t kSizes[] = {4 << 10, 256 << 10, 8 << 20};

// Small finite values of the type (no subnormals, which some FPUs process slowly).
void fill(std::vector<char>& buf, braidDataType_t dt, int seed) {
  const size_t n = buf.size() / braid::dtypeSize(dt);
  for (size_t i = 0; i < n; ++i) {
    const int v = static_cast<int>((i * 7 + static_cast<size_t>(seed)) % 13) + 1;
    void* p = buf.data() + i * braid::dtypeSize(dt);
    switch (dt) {
      case braidInt8:
      case braidUint8: {
        const auto x = static_cast<uint8_t>(v);
        std::memcpy(p, &x, sizeof(x));
        break;
      }
      case braidInt32:
      case braidUint32: {
        const auto x = static_cast<uint32_t>(v);
        std::memcpy(p, &x, sizeof(x));
        break;
      }
      case braidInt64:
      case braidUint64: {
        const auto x = static_cast<uint64_t>(v);
        std::memcpy(p, &x, sizeof(x));
        break;
      }
      case braidFloat16: {
        const uint16_t x = braid::floatToHalf(static_cast<float>(v) * 0.25f);
        std::memcpy(p, &x, sizeof(x));
        break;
      }
      case braidBfloat16: {
        const uint16_t x = braid::floatToBf16(static_cast<float>(v) * 0.25f);
        std::memcpy(p, &x, sizeof(x));
        break;
      }
      case braidFloat32: {
        const float x = static_cast<float>(v) * 0.25f;
        std::memcpy(p, &x, sizeof(x));
        break;
      }
      case braidFloat64: {
        const double x = static_cast<double>(v) * 0.25;
        std::memcpy(p, &x, sizeof(x));
        break;
      }
      default:
        break;
    }
  }
}

void BM_Memcpy(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0));
  std::vector<char> a(bytes, 1), d(bytes, 0);
  for (auto _ : state) {
    std::memcpy(d.data(), a.data(), bytes);
    benchmark::DoNotOptimize(d.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}
// 256 MiB: the DRAM-bound copy benchmarks/compare/run sets against the shared-memory busbw.
BENCHMARK(BM_Memcpy)->Arg(kSizes[0])->Arg(kSizes[1])->Arg(kSizes[2])->Arg(256 << 20);

// A plain 16-byte-at-a-time copy loop, for reference where the libc memcpy takes a slow path
// at some sizes (rep movsb on some virtual machines). The empty asm keeps the compiler from
// turning the loop back into a memcpy call.
void BM_CopyLoop(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0));
  std::vector<uint64_t> a(bytes / 8, 1), d(bytes / 8, 0);
  for (auto _ : state) {
    for (size_t i = 0; i + 2 <= a.size(); i += 2) {
      uint64_t x = a[i], y = a[i + 1];
      __asm__("" : "+r"(x), "+r"(y));
      d[i] = x;
      d[i + 1] = y;
    }
    benchmark::DoNotOptimize(d.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}
BENCHMARK(BM_CopyLoop)->Arg(kSizes[0])->Arg(kSizes[1])->Arg(kSizes[2]);

enum class Mode { kOutOfPlace, kInPlace, kPortable };

void reduceBench(benchmark::State& state, braidDataType_t dt, braidRedOp_t op, Mode mode) {
  const size_t bytes = static_cast<size_t>(state.range(0));
  const size_t count = bytes / braid::dtypeSize(dt);
  std::vector<char> a(bytes), b(bytes), d(bytes, 0);
  fill(a, dt, 1);
  fill(b, dt, 5);
  void* dst = mode == Mode::kInPlace ? a.data() : d.data();
  braid::reduceUseSimdForTesting(mode != Mode::kPortable);
  for (auto _ : state) {
    braid::reduceBuffers(dst, a.data(), b.data(), count, dt, op);
    benchmark::DoNotOptimize(dst);
    benchmark::ClobberMemory();
  }
  braid::reduceUseSimdForTesting(true);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}

void add(braidDataType_t dt, braidRedOp_t op, Mode mode = Mode::kOutOfPlace) {
  std::string name = std::string("BM_Reduce/") + braid::dtypeName(dt) + "_" + braid::opName(op);
  if (mode == Mode::kInPlace) name += "_inplace";
  if (mode == Mode::kPortable) name += "_portable";
  auto* bm = benchmark::RegisterBenchmark(name.c_str(), reduceBench, dt, op, mode);
  for (int64_t size : kSizes) bm->Arg(size);
}

const bool kRegistered = [] {
  add(braidFloat32, braidSum);
  add(braidFloat32, braidSum, Mode::kInPlace);
  add(braidFloat64, braidSum);
  add(braidInt32, braidMax);
  add(braidFloat32, braidMax);
  add(braidInt8, braidSum);
  add(braidFloat16, braidSum);
  add(braidFloat16, braidSum, Mode::kInPlace);
  add(braidFloat16, braidSum, Mode::kPortable);
  add(braidBfloat16, braidSum);
  add(braidBfloat16, braidSum, Mode::kPortable);
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
