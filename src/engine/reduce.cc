// Element-wise reductions. Plain loops over element pairs that the compiler vectorizes (this
// file is built with -O3; see CMakeLists.txt); 16-bit floats go through float32 with
// branch-free conversions. Integer sum/prod wrap around (computed unsigned: no UB).
// Max/min of floats propagate NaN (a NaN in either input gives NaN).
#include "src/engine/reduce.h"

#include <cstdint>
#include <type_traits>

#include "src/engine/half.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace braid {
namespace {

template <typename T, bool = std::is_integral_v<T>>
struct WideOf {
  using type = T;
};
template <typename T>
struct WideOf<T, true> {
  using type = std::make_unsigned_t<T>;
};
template <typename T>
using Wide = typename WideOf<T>::type;

struct Sum {
  template <typename T>
  T operator()(T a, T b) const {
    return static_cast<T>(static_cast<Wide<T>>(a) + static_cast<Wide<T>>(b));
  }
};
struct Prod {
  template <typename T>
  T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T> && sizeof(T) < sizeof(unsigned)) {
      return static_cast<T>(static_cast<unsigned>(static_cast<Wide<T>>(a)) *
                            static_cast<unsigned>(static_cast<Wide<T>>(b)));
    } else {
      return static_cast<T>(static_cast<Wide<T>>(a) * static_cast<Wide<T>>(b));
    }
  }
};
struct Max {
  template <typename T>
  T operator()(T a, T b) const {
    if constexpr (std::is_floating_point_v<T>) {
      T m = a > b ? a : b;
      return a != a ? a : (b != b ? b : m);
    } else {
      return a > b ? a : b;
    }
  }
};
struct Min {
  template <typename T>
  T operator()(T a, T b) const {
    if constexpr (std::is_floating_point_v<T>) {
      T m = a < b ? a : b;
      return a != a ? a : (b != b ? b : m);
    } else {
      return a < b ? a : b;
    }
  }
};

template <typename T, typename Op>
void apply(void* dst, const void* a, const void* b, size_t n) {
  auto* d = static_cast<T*>(dst);
  auto* x = static_cast<const T*>(a);
  auto* y = static_cast<const T*>(b);
  Op op;
  for (size_t i = 0; i < n; ++i) d[i] = op(x[i], y[i]);
}

template <float (*Load)(uint16_t), uint16_t (*Store)(float), typename Op>
void apply16(void* dst, const void* a, const void* b, size_t n) {
  auto* d = static_cast<uint16_t*>(dst);
  auto* x = static_cast<const uint16_t*>(a);
  auto* y = static_cast<const uint16_t*>(b);
  Op op;
  for (size_t i = 0; i < n; ++i) d[i] = Store(op(Load(x[i]), Load(y[i])));
}

#if defined(__x86_64__)
// fp16 with the F16C conversion instructions (8 lanes per step), chosen at run time.
struct SumV {
  __attribute__((target("avx,f16c"))) __m256 operator()(__m256 a, __m256 b) const {
    return _mm256_add_ps(a, b);
  }
};
struct ProdV {
  __attribute__((target("avx,f16c"))) __m256 operator()(__m256 a, __m256 b) const {
    return _mm256_mul_ps(a, b);
  }
};
struct MaxV {  // NaN in either input gives that NaN, as the scalar Max does
  __attribute__((target("avx,f16c"))) __m256 operator()(__m256 a, __m256 b) const {
    __m256 m = _mm256_max_ps(a, b);
    m = _mm256_blendv_ps(m, b, _mm256_cmp_ps(b, b, _CMP_UNORD_Q));
    return _mm256_blendv_ps(m, a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
  }
};
struct MinV {
  __attribute__((target("avx,f16c"))) __m256 operator()(__m256 a, __m256 b) const {
    __m256 m = _mm256_min_ps(a, b);
    m = _mm256_blendv_ps(m, b, _mm256_cmp_ps(b, b, _CMP_UNORD_Q));
    return _mm256_blendv_ps(m, a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
  }
};
template <typename Op>
struct Vec;
template <>
struct Vec<Sum> {
  using type = SumV;
};
template <>
struct Vec<Prod> {
  using type = ProdV;
};
template <>
struct Vec<Max> {
  using type = MaxV;
};
template <>
struct Vec<Min> {
  using type = MinV;
};

template <typename Op>
__attribute__((target("avx,f16c"))) void halfF16c(void* dst, const void* a, const void* b,
                                                  size_t n) {
  auto* d = static_cast<uint16_t*>(dst);
  auto* x = static_cast<const uint16_t*>(a);
  auto* y = static_cast<const uint16_t*>(b);
  typename Vec<Op>::type vop;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 fx = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
    __m256 fy = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(y + i)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i),
                     _mm256_cvtps_ph(vop(fx, fy), _MM_FROUND_TO_NEAREST_INT));
  }
  Op op;
  for (; i < n; ++i) d[i] = floatToHalf(op(halfToFloat(x[i]), halfToFloat(y[i])));
}

bool haveF16c() {
  static const bool have = [] {
    unsigned a, b, c, d;
    if (__get_cpuid(1, &a, &b, &c, &d) == 0) return false;
    const bool osxsave = c & (1u << 27), avx = c & (1u << 28), f16c = c & (1u << 29);
    if (!osxsave || !avx || !f16c) return false;
    unsigned lo, hi;
    __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 6u) == 6u;  // the OS saves XMM and YMM state
  }();
  return have;
}

// bfloat16 with AVX2 integer shifts (8 lanes per step): widen, reduce in float32, round to
// nearest even, keep NaN quiet, narrow.
template <typename Op>
__attribute__((target("avx2,f16c"))) void bf16Avx2(void* dst, const void* a, const void* b,
                                                   size_t n) {
  auto* d = static_cast<uint16_t*>(dst);
  auto* x = static_cast<const uint16_t*>(a);
  auto* y = static_cast<const uint16_t*>(b);
  typename Vec<Op>::type vop;
  const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff),
                quiet = _mm256_set1_epi32(0x40);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i ix = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
    __m256i iy = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(y + i)));
    __m256 r = vop(_mm256_castsi256_ps(_mm256_slli_epi32(ix, 16)),
                   _mm256_castsi256_ps(_mm256_slli_epi32(iy, 16)));
    __m256i bits = _mm256_castps_si256(r);
    __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), one);
    __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(bits, bias), odd), 16);
    __m256i nan = _mm256_or_si256(_mm256_srli_epi32(bits, 16), quiet);
    __m256i isnan = _mm256_castps_si256(_mm256_cmp_ps(r, r, _CMP_UNORD_Q));
    __m256i out = _mm256_blendv_epi8(rounded, nan, isnan);
    __m128i packed =
        _mm_packus_epi32(_mm256_castsi256_si128(out), _mm256_extracti128_si256(out, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), packed);
  }
  Op op;
  for (; i < n; ++i) d[i] = floatToBf16(op(bf16ToFloat(x[i]), bf16ToFloat(y[i])));
}

bool haveAvx2() {
  static const bool have = [] {
    unsigned a, b, c, d;
    return haveF16c() && __get_cpuid_count(7, 0, &a, &b, &c, &d) != 0 && (b & (1u << 5)) != 0;
  }();
  return have;
}

#endif

template <typename Op>
void dispatch(void* dst, const void* a, const void* b, size_t n, braidDataType_t dt) {
  switch (dt) {
    case braidInt8:
      return apply<int8_t, Op>(dst, a, b, n);
    case braidUint8:
      return apply<uint8_t, Op>(dst, a, b, n);
    case braidInt32:
      return apply<int32_t, Op>(dst, a, b, n);
    case braidUint32:
      return apply<uint32_t, Op>(dst, a, b, n);
    case braidInt64:
      return apply<int64_t, Op>(dst, a, b, n);
    case braidUint64:
      return apply<uint64_t, Op>(dst, a, b, n);
    case braidFloat16:
#if defined(__x86_64__)
      if (haveF16c()) return halfF16c<Op>(dst, a, b, n);
#endif
      return apply16<halfToFloat, floatToHalf, Op>(dst, a, b, n);
    case braidBfloat16:
#if defined(__x86_64__)
      if (haveAvx2()) return bf16Avx2<Op>(dst, a, b, n);
#endif
      return apply16<bf16ToFloat, floatToBf16, Op>(dst, a, b, n);
    case braidFloat32:
      return apply<float, Op>(dst, a, b, n);
    case braidFloat64:
      return apply<double, Op>(dst, a, b, n);
    default:
      return;
  }
}

template <typename T>
void divide(void* buf, size_t n, int nranks) {
  auto* p = static_cast<T*>(buf);
  const T div = static_cast<T>(nranks);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<T>(p[i] / div);
}

template <float (*Load)(uint16_t), uint16_t (*Store)(float)>
void divide16(void* buf, size_t n, int nranks) {
  auto* p = static_cast<uint16_t*>(buf);
  const float div = static_cast<float>(nranks);
  for (size_t i = 0; i < n; ++i) p[i] = Store(Load(p[i]) / div);
}

}  // namespace

void reduceBuffers(void* dst, const void* a, const void* b, size_t count, braidDataType_t dt,
                   braidRedOp_t op) {
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

void finishAvg(void* buf, size_t count, braidDataType_t dt, int nranks) {
  if (nranks == 1) return;
  switch (dt) {
    case braidInt8:
      return divide<int8_t>(buf, count, nranks);
    case braidUint8:
      return divide<uint8_t>(buf, count, nranks);
    case braidInt32:
      return divide<int32_t>(buf, count, nranks);
    case braidUint32:
      return divide<uint32_t>(buf, count, nranks);
    case braidInt64:
      return divide<int64_t>(buf, count, nranks);
    case braidUint64:
      return divide<uint64_t>(buf, count, nranks);
    case braidFloat16:
      return divide16<halfToFloat, floatToHalf>(buf, count, nranks);
    case braidBfloat16:
      return divide16<bf16ToFloat, floatToBf16>(buf, count, nranks);
    case braidFloat32:
      return divide<float>(buf, count, nranks);
    case braidFloat64:
      return divide<double>(buf, count, nranks);
    default:
      return;
  }
}

}  // namespace braid
