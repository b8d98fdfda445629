// Element-wise host reductions for every braid datatype and op.
//
// Semantics:
// - Integer sum and prod wrap around modulo 2^bits (computed in unsigned arithmetic: no UB).
// - float16 and bfloat16 are widened to float32, reduced there and rounded back to nearest
//   even once (src/engine/half.h); NaN comes out quiet.
// - Max and min of floating-point values propagate NaN: if a is NaN the result is a, else if
//   b is NaN it is b (so every rank of a collective gets the same bits whatever the payloads);
//   otherwise a > b ? a : b (resp. a < b), so max(-0, +0) is +0 and max(+0, -0) is -0.
//
// Speed: the portable kernels are plain loops over restrict-qualified pointers, split into
// blocks of a fixed element count. Fixed-count inner loops without possible aliasing
// vectorize even under GCC's -O2 "very cheap" cost model (no versioning, no epilogue), and
// fully at -O3 (CMakeLists.txt builds this file with -O3 -fno-trapping-math) and with clang.
// Aliasing (dst == a or dst == b) gets its own two-pointer kernels, so restrict stays true.
// On x86-64, float16 uses the F16C conversion instructions and bfloat16 AVX2 integer
// shuffles, chosen at run time by cpuid; both give the same bits as the portable code.
#include "src/engine/reduce.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "src/engine/half.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace braid {

namespace {

// ---------------------------------------------------------------------------------------------
// Element operations.

template <typename T, bool = std::is_integral_v<T>>
struct UnsignedOf {
  using type = T;
};
template <typename T>
struct UnsignedOf<T, true> {
  // Promoted to at least unsigned int, so that uint8 * uint8 does not become int * int.
  using type = std::common_type_t<std::make_unsigned_t<T>, unsigned>;
};
template <typename T>
using Unsigned = typename UnsignedOf<T>::type;

struct Sum {
  template <typename T>
  static T apply(T a, T b) {
    return static_cast<T>(static_cast<Unsigned<T>>(a) + static_cast<Unsigned<T>>(b));
  }
};
struct Prod {
  template <typename T>
  static T apply(T a, T b) {
    return static_cast<T>(static_cast<Unsigned<T>>(a) * static_cast<Unsigned<T>>(b));
  }
};
// "a > b ? a : b" already yields b when b is NaN; only a NaN in a needs the extra test. Both
// tests are evaluated (| rather than ||) so that the loops stay branch-free.
struct Max {
  template <typename T>
  static T apply(T a, T b) {
    if constexpr (std::is_floating_point_v<T>) {
      return ((a != a) | (a > b)) ? a : b;
    } else {
      return a > b ? a : b;
    }
  }
};
struct Min {
  template <typename T>
  static T apply(T a, T b) {
    if constexpr (std::is_floating_point_v<T>) {
      return ((a != a) | (a < b)) ? a : b;
    } else {
      return a < b ? a : b;
    }
  }
};

// Storage type S, compute type C.
template <typename T>
struct Plain {
  using S = T;
  static T load(T v) { return v; }
  static T store(T v) { return v; }
};
struct Half {
  using S = uint16_t;
  static float load(uint16_t h) { return halfToFloat(h); }
  static uint16_t store(float f) { return floatToHalf(f); }
};
struct Bf16 {
  using S = uint16_t;
  static float load(uint16_t h) { return bf16ToFloat(h); }
  static uint16_t store(float f) { return floatToBf16(f); }
};

template <typename P, typename Op>
inline typename P::S elem(typename P::S a, typename P::S b) {
  return P::store(Op::apply(P::load(a), P::load(b)));
}

// ---------------------------------------------------------------------------------------------
// Portable kernels.

// Elements per block: a multiple of every vector width, and large enough (> 16) that GCC's
// early complete unrolling at -O3 leaves the inner loop for the vectorizer.
constexpr size_t kBlock = 64;

// dst, a and b distinct (a == b is fine: both are only read).
template <typename P, typename Op>
void reduce3(typename P::S* __restrict__ d, const typename P::S* __restrict__ x,
             const typename P::S* __restrict__ y, size_t n) {
  size_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    for (size_t j = 0; j < kBlock; ++j) d[i + j] = elem<P, Op>(x[i + j], y[i + j]);
  }
  for (; i < n; ++i) d[i] = elem<P, Op>(x[i], y[i]);
}

// In place: d = d OP y (kDstIsA) or d = y OP d; the operand order matters for NaN payloads.
template <typename P, typename Op, bool kDstIsA>
void reduce2(typename P::S* __restrict__ d, const typename P::S* __restrict__ y, size_t n) {
  auto f = [](typename P::S dv, typename P::S yv) {
    return kDstIsA ? elem<P, Op>(dv, yv) : elem<P, Op>(yv, dv);
  };
  size_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    for (size_t j = 0; j < kBlock; ++j) d[i + j] = f(d[i + j], y[i + j]);
  }
  for (; i < n; ++i) d[i] = f(d[i], y[i]);
}

template <typename P, typename Op>
void reducePortable(void* dst, const void* a, const void* b, size_t n) {
  using S = typename P::S;
  auto* d = static_cast<S*>(dst);
  auto* x = static_cast<const S*>(a);
  auto* y = static_cast<const S*>(b);
  if (d != x && d != y) return reduce3<P, Op>(d, x, y, n);
  if (d != y) return reduce2<P, Op, true>(d, y, n);
  if (d != x) return reduce2<P, Op, false>(d, x, n);
  // dst == a == b: reduce against a copy, one block at a time.
  S copy[kBlock];
  for (size_t i = 0; i < n; i += kBlock) {
    const size_t len = std::min(kBlock, n - i);
    std::memcpy(copy, d + i, len * sizeof(S));
    reduce2<P, Op, true>(d + i, copy, len);
  }
}

// ---------------------------------------------------------------------------------------------
// x86-64 kernels, chosen at run time. Unaligned loads and stores; every iteration loads its
// inputs before storing, so exact aliasing of dst with a or b is fine.

#if defined(__x86_64__)
#define BRAID_F16C __attribute__((target("avx,f16c")))
#define BRAID_AVX2 __attribute__((target("avx2,f16c")))

// Eight float32 lanes. Max/min as the scalar Max/Min above: maxps(a, b) gives b when either
// is NaN, then a NaN a is put back.
// Sum and product in asm: with both operands NaN the result is the first one's (quieted), and
// a compiler that treats the intrinsics as commutative could swap them differently in two
// copies of a loop (streaming and plain stores), giving two ranks different bits.
struct SumV {
  BRAID_F16C static __m256 apply(__m256 a, __m256 b) {
    __m256 r;
    __asm__("vaddps %2, %1, %0" : "=x"(r) : "x"(a), "x"(b));
    return r;
  }
};
struct ProdV {
  BRAID_F16C static __m256 apply(__m256 a, __m256 b) {
    __m256 r;
    __asm__("vmulps %2, %1, %0" : "=x"(r) : "x"(a), "x"(b));
    return r;
  }
};
struct MaxV {
  BRAID_F16C static __m256 apply(__m256 a, __m256 b) {
    return _mm256_blendv_ps(_mm256_max_ps(a, b), a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
  }
};
struct MinV {
  BRAID_F16C static __m256 apply(__m256 a, __m256 b) {
    return _mm256_blendv_ps(_mm256_min_ps(a, b), a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
  }
};
template <typename Op>
struct VecOf;
template <>
struct VecOf<Sum> {
  using type = SumV;
  static constexpr bool kQuietsNan = true;  // arithmetic returns quiet NaNs
};
template <>
struct VecOf<Prod> {
  using type = ProdV;
  static constexpr bool kQuietsNan = true;
};
template <>
struct VecOf<Max> {
  using type = MaxV;
  static constexpr bool kQuietsNan = false;  // may pass a signaling NaN through
};
template <>
struct VecOf<Min> {
  using type = MinV;
  static constexpr bool kQuietsNan = false;
};

// Where the x86 kernels put their results: dst (Out), or keep and also dst through
// non-temporal stores (Streaming: see reduceStreaming). The streaming stores need dst 16-byte
// aligned; where it is not they are plain stores. Which elements are computed together does
// not depend on dst's alignment, so both ranks of a collective get the same bits.
template <typename S>
struct Out {
  S* d;
  BRAID_F16C void put128(size_t i, __m128i v) const {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), v);
  }
  BRAID_F16C void put256(size_t i, __m256i v) const {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i), v);
  }
  void put(size_t i, S v) const { d[i] = v; }
};
template <typename S>
struct Streaming {
  S* d;
  S* keep;
  bool aligned;  // d is 16-byte aligned (malloc's: large blocks are often not 32-byte aligned)
  // d + i is 16-byte aligned when d is (i counts whole vectors of 16 or 32 bytes).
  BRAID_F16C void put128(size_t i, __m128i v) const {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(keep + i), v);
    if (aligned) {
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), v);
    } else {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), v);
    }
  }
  BRAID_F16C void put256(size_t i, __m256i v) const {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(keep + i), v);
    if (aligned) {
      auto* p = reinterpret_cast<__m128i*>(d + i);
      _mm_stream_si128(p, _mm256_castsi256_si128(v));
      _mm_stream_si128(p + 1, _mm256_extractf128_si256(v, 1));
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i), v);
    }
  }
  void put(size_t i, S v) const { keep[i] = d[i] = v; }
};

// float32 through the vector ops, eight at a time (used for streaming only: the plain float32
// reduction is the portable kernel, which compilers vectorize).
template <typename Op, typename Sink>
BRAID_F16C void floatAvx(Sink out, const void* a, const void* b, size_t n) {
  auto* x = static_cast<const float*>(a);
  auto* y = static_cast<const float*>(b);
  using V = typename VecOf<Op>::type;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    out.put256(i, _mm256_castps_si256(V::apply(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i))));
  }
  for (; i < n; ++i) out.put(i, elem<Plain<float>, Op>(x[i], y[i]));
}

// float16: F16C widens and narrows (round to nearest even, NaN quieted) eight at a time.
template <typename Op, typename Sink>
BRAID_F16C void halfF16c(Sink out, const void* a, const void* b, size_t n) {
  auto* x = static_cast<const uint16_t*>(a);
  auto* y = static_cast<const uint16_t*>(b);
  using V = typename VecOf<Op>::type;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 fx = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
    __m256 fy = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(y + i)));
    __m128i h = _mm256_cvtps_ph(V::apply(fx, fy), _MM_FROUND_TO_NEAREST_INT);
    // Keep the conversion in a register: the store form of vcvtps2ph (which clang would
    // fold it into) is several times slower on AMD Zen.
    __asm__("" : "+x"(h));
    out.put128(i, h);
  }
  for (; i < n; ++i) out.put(i, elem<Half, Op>(x[i], y[i]));
}

// float32 lanes of a bfloat16 result, rounded to nearest even, to 16-bit values in the low
// halves. The inputs came from bfloat16, so a NaN result has zero low bits and rounds to its
// own top half; it only needs the quiet bit where the op may pass a signaling NaN through.
template <bool kQuiet>
BRAID_AVX2 __m256i roundToBf16(__m256 r) {
  const __m256i bits = _mm256_castps_si256(r);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  __m256i t = _mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7fff)), odd);
  if constexpr (kQuiet) {
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(r, r, _CMP_UNORD_Q));
    t = _mm256_or_si256(t, _mm256_and_si256(nan, _mm256_set1_epi32(0x00400000)));
  }
  return _mm256_srli_epi32(t, 16);
}

// bfloat16: sixteen at a time. Interleaving zeros below the 16-bit values (in-lane unpack)
// widens them to float32; the in-lane unsigned pack undoes exactly that permutation.
template <typename Op, typename Sink>
BRAID_AVX2 void bf16Avx2(Sink out, const void* a, const void* b, size_t n) {
  auto* x = static_cast<const uint16_t*>(a);
  auto* y = static_cast<const uint16_t*>(b);
  using V = typename VecOf<Op>::type;
  constexpr bool kQuiet = !VecOf<Op>::kQuietsNan;
  const __m256i zero = _mm256_setzero_si256();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i vx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
    const __m256i vy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + i));
    const __m256 lo = V::apply(_mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, vx)),
                               _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, vy)));
    const __m256 hi = V::apply(_mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, vx)),
                               _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, vy)));
    out.put256(i, _mm256_packus_epi32(roundToBf16<kQuiet>(lo), roundToBf16<kQuiet>(hi)));
  }
  for (; i < n; ++i) out.put(i, elem<Bf16, Op>(x[i], y[i]));
}

#undef BRAID_F16C
#undef BRAID_AVX2

bool osSavesYmm() {
  unsigned lo, hi;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo & 6u) == 6u;  // XMM and YMM state
}

bool cpuHasF16c() {
  unsigned a, b, c, d;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0) return false;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28), f16c = c & (1u << 29);
  return osxsave && avx && f16c && osSavesYmm();
}

bool cpuHasAvx2() {
  unsigned a, b, c, d;
  return cpuHasF16c() && __get_cpuid_count(7, 0, &a, &b, &c, &d) != 0 && (b & (1u << 5)) != 0;
}

struct Cpu {
  bool f16c = cpuHasF16c();
  bool avx2 = cpuHasAvx2();
};
const Cpu& cpu() {
  static const Cpu c;
  return c;
}
#endif  // __x86_64__

std::atomic<bool> simdEnabled{true};

template <typename Op>
void dispatch(void* dst, const void* a, const void* b, size_t n, braidDataType_t dt) {
  switch (dt) {
    case braidInt8:
      return reducePortable<Plain<int8_t>, Op>(dst, a, b, n);
    case braidUint8:
      return reducePortable<Plain<uint8_t>, Op>(dst, a, b, n);
    case braidInt32:
      return reducePortable<Plain<int32_t>, Op>(dst, a, b, n);
    case braidUint32:
      return reducePortable<Plain<uint32_t>, Op>(dst, a, b, n);
    case braidInt64:
      return reducePortable<Plain<int64_t>, Op>(dst, a, b, n);
    case braidUint64:
      return reducePortable<Plain<uint64_t>, Op>(dst, a, b, n);
    case braidFloat16:
#if defined(__x86_64__)
      if (cpu().f16c && simdEnabled.load(std::memory_order_relaxed)) {
        return halfF16c<Op>(Out<uint16_t>{static_cast<uint16_t*>(dst)}, a, b, n);
      }
#endif
      return reducePortable<Half, Op>(dst, a, b, n);
    case braidBfloat16:
#if defined(__x86_64__)
      if (cpu().avx2 && simdEnabled.load(std::memory_order_relaxed)) {
        return bf16Avx2<Op>(Out<uint16_t>{static_cast<uint16_t*>(dst)}, a, b, n);
      }
#endif
      return reducePortable<Bf16, Op>(dst, a, b, n);
    case braidFloat32:
      return reducePortable<Plain<float>, Op>(dst, a, b, n);
    case braidFloat64:
      return reducePortable<Plain<double>, Op>(dst, a, b, n);
    default:
      return;
  }
}

// ---------------------------------------------------------------------------------------------
// Average.

// Integers of up to F's mantissa width divide exactly in F and truncate (vectorizes, where
// integer division does not): the quotient x/n is at least 1/n from any integer it is not,
// and |x/n| <= |x|/n, so the relative gap exceeds 1/|x| > 2^-mantissa and rounding the
// quotient cannot cross an integer.
template <typename T, typename F>
void divideVia(T* __restrict__ p, size_t n, int nranks) {
  const F div = static_cast<F>(nranks);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<T>(static_cast<F>(p[i]) / div);
}

template <typename T>
void divide(T* __restrict__ p, size_t n, int nranks) {
  const T div = static_cast<T>(nranks);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<T>(p[i] / div);
}

template <typename P>
void divide16(uint16_t* __restrict__ p, size_t n, int nranks) {
  const float div = static_cast<float>(nranks);
  for (size_t i = 0; i < n; ++i) p[i] = P::store(P::load(p[i]) / div);
}

}  // namespace

void reduceUseSimdForTesting(bool enabled) {
  simdEnabled.store(enabled, std::memory_order_relaxed);
}

void reduceBuffers(void* dst, const void* a, const void* b, size_t count, braidDataType_t dt,
                   braidRedOp_t op) {
  if (count == 0) return;
  switch (op) {
    case braidSum:
    case braidAvg:
      return dispatch<Sum>(dst, a, b, count, dt);
    case braidProd:
      return dispatch<Prod>(dst, a, b, count, dt);
    case braidMax:
      return dispatch<Max>(dst, a, b, count, dt);
    case braidMin:
      return dispatch<Min>(dst, a, b, count, dt);
    default:
      return;
  }
}

namespace {

#if defined(__x86_64__)
template <typename Op>
void streamDispatch(void* dst, void* keep, const void* a, const void* b, size_t n,
                    braidDataType_t dt) {
  const bool aligned = reinterpret_cast<uintptr_t>(dst) % 16 == 0;
  switch (dt) {
    case braidFloat32:
      floatAvx<Op>(Streaming<float>{static_cast<float*>(dst), static_cast<float*>(keep), aligned},
                   a, b, n);
      break;
    case braidFloat16:
      halfF16c<Op>(
          Streaming<uint16_t>{static_cast<uint16_t*>(dst), static_cast<uint16_t*>(keep), aligned},
          a, b, n);
      break;
    case braidBfloat16:
      bf16Avx2<Op>(
          Streaming<uint16_t>{static_cast<uint16_t*>(dst), static_cast<uint16_t*>(keep), aligned},
          a, b, n);
      break;
    default:
      return;
  }
  _mm_sfence();  // the streaming stores are ordered before what follows
}
#endif

}  // namespace

bool canReduceStreaming(braidDataType_t dt, braidRedOp_t op) {
#if defined(__x86_64__)
  if (op != braidSum && op != braidProd && op != braidMax && op != braidMin) return false;
  if (!simdEnabled.load(std::memory_order_relaxed)) return false;
  switch (dt) {
    case braidFloat32:
    case braidFloat16:
      return cpu().f16c;
    case braidBfloat16:
      return cpu().avx2;
    default:
      return false;
  }
#else
  (void)dt;
  (void)op;
  return false;
#endif
}

void reduceStreaming(void* dst, void* keep, const void* a, const void* b, size_t count,
                     braidDataType_t dt, braidRedOp_t op) {
#if defined(__x86_64__)
  if (count == 0 || !canReduceStreaming(dt, op)) return;
  switch (op) {
    case braidSum:
      return streamDispatch<Sum>(dst, keep, a, b, count, dt);
    case braidProd:
      return streamDispatch<Prod>(dst, keep, a, b, count, dt);
    case braidMax:
      return streamDispatch<Max>(dst, keep, a, b, count, dt);
    case braidMin:
      return streamDispatch<Min>(dst, keep, a, b, count, dt);
    default:
      return;
  }
#else
  (void)dst, (void)keep, (void)a, (void)b, (void)count, (void)dt, (void)op;
#endif
}

void finishAvg(void* buf, size_t count, braidDataType_t dt, int nranks) {
  if (nranks <= 1 || count == 0) return;
  switch (dt) {
    case braidInt8:
      return divideVia<int8_t, float>(static_cast<int8_t*>(buf), count, nranks);
    case braidUint8:
      return divideVia<uint8_t, float>(static_cast<uint8_t*>(buf), count, nranks);
    case braidInt32:
      return divideVia<int32_t, double>(static_cast<int32_t*>(buf), count, nranks);
    case braidUint32:
      return divideVia<uint32_t, double>(static_cast<uint32_t*>(buf), count, nranks);
    case braidInt64:
      return divide<int64_t>(static_cast<int64_t*>(buf), count, nranks);
    case braidUint64:
      return divide<uint64_t>(static_cast<uint64_t*>(buf), count, nranks);
    case braidFloat16:
      return divide16<Half>(static_cast<uint16_t*>(buf), count, nranks);
    case braidBfloat16:
      return divide16<Bf16>(static_cast<uint16_t*>(buf), count, nranks);
    case braidFloat32:
      return divide<float>(static_cast<float*>(buf), count, nranks);
    case braidFloat64:
      return divide<double>(static_cast<double*>(buf), count, nranks);
    default:
      return;
  }
}

}  // namespace braid
