// The host reduction kernels against a plain scalar reference: every dtype x every op, counts
// 0/1/7/1000/4099 (vector bodies and tails), dst aliasing a, b or both, with the SIMD kernels
// (where the CPU has them) and with the portable ones; fp16/bf16 conversions against an
// independent reference (arithmetic, not bit tricks) and known edge values; finishAvg.
#include "src/engine/reduce.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "braid/braid.h"
#include "src/core/dtype.h"
#include "src/engine/half.h"

namespace braid {
namespace {

constexpr braidRedOp_t kOps[] = {braidSum, braidProd, braidMax, braidMin, braidAvg};
constexpr braidDataType_t kTypes[] = {braidInt8,    braidUint8,   braidInt32,   braidUint32,
                                      braidInt64,   braidUint64,  braidFloat16, braidFloat32,
                                      braidFloat64, braidBfloat16};
constexpr size_t kCounts[] = {0, 1, 7, 1000, 4099};

// Runs the SIMD kernels (true) or the portable ones (false) until destroyed.
class SimdMode {
 public:
  explicit SimdMode(bool simd) { reduceUseSimdForTesting(simd); }
  ~SimdMode() { reduceUseSimdForTesting(true); }
  SimdMode(const SimdMode&) = delete;
  SimdMode& operator=(const SimdMode&) = delete;
};

// ---------------------------------------------------------------------------------------------
// Reference conversions, written from the definitions (ldexp / nearbyint in double).

float refHalfToFloat(uint16_t h) {
  const bool neg = (h & 0x8000u) != 0;
  const int e = (h >> 10) & 0x1f;
  const uint32_t m = h & 0x3ffu;
  if (e == 31) {  // infinity, or NaN made quiet with its payload kept
    const uint32_t bits =
        (neg ? 0x80000000u : 0u) | 0x7f800000u | (m << 13) | (m != 0 ? 0x00400000u : 0u);
    return std::bit_cast<float>(bits);
  }
  const double mag = e == 0 ? std::ldexp(m, -24) : std::ldexp(m | 0x400u, e - 25);
  return static_cast<float>(neg ? -mag : mag);
}

uint16_t refFloatToHalf(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  if (std::isnan(f)) return static_cast<uint16_t>(sign | 0x7e00u | ((bits >> 13) & 0x3ffu));
  const double a = std::fabs(static_cast<double>(f));
  if (a >= 65520.0) return static_cast<uint16_t>(sign | 0x7c00u);  // halfway above 65504: up
  if (a == 0) return sign;
  int e = 0;
  std::frexp(a, &e);                        // a = [0.5, 1) * 2^e
  const int q = std::max(e - 1, -14) - 10;  // exponent of one unit in the last place
  const auto r = static_cast<uint32_t>(std::nearbyint(std::ldexp(a, -q)));  // ties to even
  // Subnormal: r units of 2^-24 (r == 1024 is the smallest normal, encoded alike). Normal:
  // r in [1024, 2048] (2048 carries into the exponent, encoded alike).
  const uint32_t enc = q == -24 ? r : (static_cast<uint32_t>(e - 1 + 15) << 10) + (r - 1024);
  return static_cast<uint16_t>(sign | enc);
}

float refBf16ToFloat(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  if ((bits & 0x7fffffffu) > 0x7f800000u) bits |= 0x00400000u;  // NaN: quiet
  return std::bit_cast<float>(bits);
}

uint16_t refFloatToBf16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  if (std::isnan(f)) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  const double a = std::fabs(static_cast<double>(f));
  if (a == 0) return sign;
  int e = 0;
  std::frexp(a, &e);
  const int q = std::max(e - 1, -126) - 7;
  const double v = std::ldexp(std::nearbyint(std::ldexp(a, -q)), q);
  if (v >= 0x1p128) return static_cast<uint16_t>(sign | 0x7f80u);
  return static_cast<uint16_t>(sign | (std::bit_cast<uint32_t>(static_cast<float>(v)) >> 16));
}

// ---------------------------------------------------------------------------------------------
// Reference element ops.

template <typename T>
T refInt(T a, T b, braidRedOp_t op) {
  // Wraparound: compute modulo 2^64 on the sign-extended values, keep the low bits.
  const auto ua = static_cast<uint64_t>(a), ub = static_cast<uint64_t>(b);
  switch (op) {
    case braidSum:
    case braidAvg:
      return static_cast<T>(ua + ub);
    case braidProd:
      return static_cast<T>(ua * ub);
    case braidMax:
      return std::max(a, b);
    default:
      return std::min(a, b);
  }
}

// NaN: max/min give a if a is NaN, else b if b is NaN.
template <typename F>
F refFloat(F a, F b, braidRedOp_t op) {
  switch (op) {
    case braidSum:
    case braidAvg:
      return a + b;
    case braidProd:
      return a * b;
    case braidMax:
      return std::isnan(a) ? a : std::isnan(b) ? b : (a > b ? a : b);
    default:
      return std::isnan(a) ? a : std::isnan(b) ? b : (a < b ? a : b);
  }
}

bool isMinMax(braidRedOp_t op) { return op == braidMax || op == braidMin; }

// The dtype's elements as raw bits, with a reference and a comparison. A NaN result of
// max/min must match bit for bit; of sum/prod it must be a quiet NaN (which NaN, when both
// inputs are, is up to the hardware and the compiler's operand order).
struct Model {
  size_t size;
  uint64_t (*ref)(uint64_t a, uint64_t b, braidRedOp_t op);
  bool (*isNan)(uint64_t v);
  bool (*isQuietNan)(uint64_t v);
};

template <typename T>
T fromBits(uint64_t v) {
  if constexpr (sizeof(T) == 1) {
    return std::bit_cast<T>(static_cast<uint8_t>(v));
  } else if constexpr (sizeof(T) == 2) {
    return std::bit_cast<T>(static_cast<uint16_t>(v));
  } else if constexpr (sizeof(T) == 4) {
    return std::bit_cast<T>(static_cast<uint32_t>(v));
  } else {
    return std::bit_cast<T>(v);
  }
}
template <typename T>
uint64_t toBits(T v) {
  if constexpr (sizeof(T) == 1) {
    return std::bit_cast<uint8_t>(v);
  } else if constexpr (sizeof(T) == 2) {
    return std::bit_cast<uint16_t>(v);
  } else if constexpr (sizeof(T) == 4) {
    return std::bit_cast<uint32_t>(v);
  } else {
    return std::bit_cast<uint64_t>(v);
  }
}

bool never(uint64_t) { return false; }
bool nan32(uint64_t v) { return std::isnan(fromBits<float>(v)); }
bool quiet32(uint64_t v) { return nan32(v) && (v & 0x00400000u) != 0; }
bool nan64(uint64_t v) { return std::isnan(fromBits<double>(v)); }
bool quiet64(uint64_t v) { return nan64(v) && (v & (uint64_t{1} << 51)) != 0; }
bool nanHalf(uint64_t v) { return (v & 0x7fffu) > 0x7c00u; }
bool quietHalf(uint64_t v) { return nanHalf(v) && (v & 0x0200u) != 0; }
bool nanBf16(uint64_t v) { return (v & 0x7fffu) > 0x7f80u; }
bool quietBf16(uint64_t v) { return nanBf16(v) && (v & 0x0040u) != 0; }

template <typename T>
uint64_t refIntBits(uint64_t a, uint64_t b, braidRedOp_t op) {
  return toBits(refInt(fromBits<T>(a), fromBits<T>(b), op));
}
template <typename F>
uint64_t refFloatBits(uint64_t a, uint64_t b, braidRedOp_t op) {
  return toBits(refFloat(fromBits<F>(a), fromBits<F>(b), op));
}
uint64_t refHalfBits(uint64_t a, uint64_t b, braidRedOp_t op) {
  const float r = refFloat(refHalfToFloat(static_cast<uint16_t>(a)),
                           refHalfToFloat(static_cast<uint16_t>(b)), op);
  return refFloatToHalf(r);
}
uint64_t refBf16Bits(uint64_t a, uint64_t b, braidRedOp_t op) {
  const float r = refFloat(refBf16ToFloat(static_cast<uint16_t>(a)),
                           refBf16ToFloat(static_cast<uint16_t>(b)), op);
  return refFloatToBf16(r);
}

Model model(braidDataType_t dt) {
  switch (dt) {
    case braidInt8:
      return {1, refIntBits<int8_t>, never, never};
    case braidUint8:
      return {1, refIntBits<uint8_t>, never, never};
    case braidInt32:
      return {4, refIntBits<int32_t>, never, never};
    case braidUint32:
      return {4, refIntBits<uint32_t>, never, never};
    case braidInt64:
      return {8, refIntBits<int64_t>, never, never};
    case braidUint64:
      return {8, refIntBits<uint64_t>, never, never};
    case braidFloat16:
      return {2, refHalfBits, nanHalf, quietHalf};
    case braidFloat32:
      return {4, refFloatBits<float>, nan32, quiet32};
    case braidFloat64:
      return {8, refFloatBits<double>, nan64, quiet64};
    default:
      return {2, refBf16Bits, nanBf16, quietBf16};
  }
}

bool matches(const Model& m, braidRedOp_t op, uint64_t got, uint64_t want) {
  if (m.isNan(want) && !isMinMax(op)) return m.isQuietNan(got);
  return got == want;
}

// Random elements: for floats a mix of everyday values, special values and raw bit patterns
// (all of which occur: NaNs with payloads, infinities, subnormals, signed zeros).
uint64_t randomElement(braidDataType_t dt, std::mt19937_64& rng) {
  const uint64_t raw = rng();
  const unsigned pick = static_cast<unsigned>(rng() % 10);
  const double nice = static_cast<double>(static_cast<int>(rng() % 2001) - 1000) / 8.0;
  switch (dt) {
    case braidFloat16: {
      const uint16_t special[] = {0x0000, 0x8000, 0x7c00, 0xfc00, 0x7e00, 0x7c01,
                                  0x7bff, 0x0001, 0x03ff, 0x0400, 0xfbff, 0x8001};
      if (pick < 1) return special[raw % std::size(special)];
      if (pick < 6) return floatToHalf(static_cast<float>(nice));
      return raw & 0xffffu;
    }
    case braidBfloat16: {
      const uint16_t special[] = {0x0000, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0x7f81,
                                  0x7f7f, 0x0001, 0x007f, 0x0080, 0xff7f, 0x8001};
      if (pick < 1) return special[raw % std::size(special)];
      if (pick < 6) return floatToBf16(static_cast<float>(nice));
      return raw & 0xffffu;
    }
    case braidFloat32: {
      using L = std::numeric_limits<float>;
      const float snan = std::bit_cast<float>(0x7f800001u);
      const float special[] = {0.0f,     -0.0f,    INFINITY,        -INFINITY, NAN,
                               L::max(), L::min(), L::denorm_min(), 1e-40f,    snan};
      if (pick < 1) return toBits(special[raw % std::size(special)]);
      if (pick < 8) return toBits(static_cast<float>(nice));
      return raw & 0xffffffffu;
    }
    case braidFloat64: {
      using L = std::numeric_limits<double>;
      const double snan = std::bit_cast<double>(uint64_t{0x7ff0000000000001});
      const double special[] = {0.0,      -0.0,     INFINITY,        -INFINITY, NAN,
                                L::max(), L::min(), L::denorm_min(), snan};
      if (pick < 1) return toBits(special[raw % std::size(special)]);
      if (pick < 8) return toBits(nice);
      return raw;
    }
    default:  // integers: full range (sums and products wrap), sometimes small
      return pick < 3 ? static_cast<uint64_t>(static_cast<int64_t>(raw % 21) - 10) : raw;
  }
}

std::vector<unsigned char> pack(const std::vector<uint64_t>& v, size_t size) {
  std::vector<unsigned char> out(v.size() * size + 1);  // +1: data() is never null
  for (size_t i = 0; i < v.size(); ++i) std::memcpy(out.data() + i * size, &v[i], size);
  return out;  // (little-endian: the low bytes of each value)
}
uint64_t element(const std::vector<unsigned char>& buf, size_t i, size_t size) {
  uint64_t v = 0;
  std::memcpy(&v, buf.data() + i * size, size);
  return v;
}

enum class Alias { kNone, kDstIsA, kDstIsB, kAll };

void checkAll(bool simd) {
  SimdMode mode(simd);
  std::mt19937_64 rng(2024);
  for (braidDataType_t dt : kTypes) {
    const Model m = model(dt);
    for (braidRedOp_t op : kOps) {
      for (size_t n : kCounts) {
        std::vector<uint64_t> av(n), bv(n);
        for (size_t i = 0; i < n; ++i) {
          av[i] = randomElement(dt, rng);
          bv[i] = randomElement(dt, rng);
        }
        for (Alias alias : {Alias::kNone, Alias::kDstIsA, Alias::kDstIsB, Alias::kAll}) {
          std::vector<unsigned char> a = pack(av, m.size), b = pack(bv, m.size);
          std::vector<unsigned char> d(a.size(), 0xee);
          void* dst = d.data();
          const void* pb = b.data();
          if (alias == Alias::kDstIsA) dst = a.data();
          if (alias == Alias::kDstIsB) dst = b.data();
          if (alias == Alias::kAll) dst = a.data(), pb = a.data();
          reduceBuffers(dst, a.data(), pb, n, dt, op);
          const auto& out = alias == Alias::kNone ? d : alias == Alias::kDstIsB ? b : a;
          for (size_t i = 0; i < n; ++i) {
            const uint64_t y = alias == Alias::kAll ? av[i] : bv[i];
            const uint64_t want = m.ref(av[i], y, op);
            const uint64_t got = element(out, i, m.size);
            ASSERT_TRUE(matches(m, op, got, want))
                << dtypeName(dt) << " " << opName(op) << " n=" << n
                << " alias=" << static_cast<int>(alias) << " simd=" << simd << " i=" << i
                << std::hex << " a=" << av[i] << " b=" << y << " got=" << got << " want=" << want;
          }
          if (alias == Alias::kNone) {  // nothing past the end written
            ASSERT_EQ(d.back(), 0xee) << dtypeName(dt) << " " << opName(op) << " n=" << n;
          }
        }
      }
    }
  }
}

TEST(Reduce, EveryTypeOpCountAndAliasingMatchesReference) { checkAll(true); }
TEST(Reduce, PortableKernelsMatchReference) { checkAll(false); }

// reduceStreaming, where it has a kernel: the output and the kept operand match the reference,
// whichever operand is kept, with the output at every element offset from 32-byte alignment
// (streaming stores at 0 and 16, plain ones elsewhere: the same bits at every offset), vector
// bodies and tails; nothing written past either end.
// Where it has none, it writes nothing.
TEST(Reduce, StreamingMatchesReference) {
  std::mt19937_64 rng(7);
  int kernels = 0;
  for (braidDataType_t dt : kTypes) {
    const Model m = model(dt);
    for (braidRedOp_t op : kOps) {
      const bool has = canReduceStreaming(dt, op);
      kernels += has;
      for (size_t n : {size_t{1}, size_t{7}, size_t{1000}, size_t{4099}}) {
        std::vector<uint64_t> av(n), bv(n);
        for (size_t i = 0; i < n; ++i) {
          av[i] = randomElement(dt, rng);
          bv[i] = randomElement(dt, rng);
        }
        const std::vector<unsigned char> a0 = pack(av, m.size), b0 = pack(bv, m.size);
        std::vector<unsigned char> first;  // the output at offset 0
        for (bool keepA : {true, false}) {
          for (size_t shift = 0; shift < 32; shift += m.size) {
            std::vector<unsigned char> a = a0, b = b0;
            std::vector<unsigned char>& keep = keepA ? a : b;
            const std::vector<unsigned char>& other = keepA ? b : a;
            std::vector<unsigned char> d(n * m.size + 128, 0xee);
            const size_t lead = (32 - reinterpret_cast<uintptr_t>(d.data()) % 32) % 32 + 32;
            unsigned char* out = d.data() + lead + shift;
            reduceStreaming(out, keep.data(), a.data(), b.data(), n, dt, op);
            const std::string what = std::string(dtypeName(dt)) + " " + opName(op) +
                                     " n=" + std::to_string(n) + " shift=" + std::to_string(shift) +
                                     (keepA ? " keep a" : " keep b");
            for (size_t i = 0; i < lead + shift; ++i) ASSERT_EQ(d[i], 0xee) << what;
            for (size_t i = lead + shift + n * m.size; i < d.size(); ++i) {
              ASSERT_EQ(d[i], 0xee) << what;
            }
            ASSERT_EQ(other, keepA ? b0 : a0) << what << ": the other operand changed";
            if (!has) {
              ASSERT_EQ(keep, keepA ? a0 : b0) << what << ": written without a kernel";
              ASSERT_EQ(out[0], 0xee) << what << ": written without a kernel";
              continue;
            }
            ASSERT_EQ(std::memcmp(out, keep.data(), n * m.size), 0) << what;
            if (first.empty()) first.assign(out, out + n * m.size);
            ASSERT_EQ(std::memcmp(out, first.data(), n * m.size), 0) << what;
            for (size_t i = 0; i < n; ++i) {
              const uint64_t want = m.ref(av[i], bv[i], op);
              uint64_t got = 0;
              std::memcpy(&got, out + i * m.size, m.size);
              ASSERT_TRUE(matches(m, op, got, want))
                  << what << " i=" << i << std::hex << " got=" << got << " want=" << want;
            }
          }
        }
      }
    }
  }
#if defined(__x86_64__)
  // Every x86-64 CPU this runs on in CI has AVX2 and F16C.
  EXPECT_EQ(kernels, 12);
#endif
}

TEST(Reduce, CountZeroTouchesNothing) {
  for (braidDataType_t dt : kTypes) {
    for (braidRedOp_t op : kOps) reduceBuffers(nullptr, nullptr, nullptr, 0, dt, op);
    finishAvg(nullptr, 0, dt, 4);
  }
}

TEST(Reduce, IntegerSumAndProdWrap) {
  int8_t a = 127, b = 1, d = 0;
  reduceBuffers(&d, &a, &b, 1, braidInt8, braidSum);
  EXPECT_EQ(d, -128);
  int8_t p = -128, q = -1;
  reduceBuffers(&d, &p, &q, 1, braidInt8, braidProd);
  EXPECT_EQ(d, -128);
  int32_t x = 1 << 30, y = 4, z = 1;
  reduceBuffers(&z, &x, &y, 1, braidInt32, braidProd);
  EXPECT_EQ(z, 0);
  int64_t big = std::numeric_limits<int64_t>::max(), one = 1, r = 0;
  reduceBuffers(&r, &big, &one, 1, braidInt64, braidSum);
  EXPECT_EQ(r, std::numeric_limits<int64_t>::min());
  uint32_t u = 0xffffffffu, v = 0xffffffffu, w = 0;
  reduceBuffers(&w, &u, &v, 1, braidUint32, braidProd);
  EXPECT_EQ(w, 1u);
}

// ---------------------------------------------------------------------------------------------
// fp16 / bf16 conversions.

TEST(Half, HalfToFloatEveryValue) {
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const auto x = static_cast<uint16_t>(h);
    ASSERT_EQ(std::bit_cast<uint32_t>(halfToFloat(x)), std::bit_cast<uint32_t>(refHalfToFloat(x)))
        << std::hex << h;
    ASSERT_EQ(std::bit_cast<uint32_t>(bf16ToFloat(x)), static_cast<uint32_t>(h) << 16);
  }
}

// Floats whose low bits sit at and around the rounding points of both formats, at every
// exponent and sign, plus random ones.
std::vector<uint32_t> floatSamples() {
  std::vector<uint32_t> out;
  const uint32_t highs[] = {0x000000, 0x002000, 0x2aa000, 0x3fc000, 0x7fe000, 0x7f0000};
  const uint32_t lows[] = {0x0000, 0x0001, 0x0fff, 0x1000, 0x1001,  0x1fff,
                           0x7fff, 0x8000, 0x8001, 0xffff, 0x17fff, 0x18000};
  for (uint32_t sign : {0u, 0x80000000u}) {
    for (uint32_t e = 0; e < 256; ++e) {
      for (uint32_t hi : highs) {
        for (uint32_t lo : lows) out.push_back(sign | (e << 23) | ((hi | lo) & 0x7fffffu));
      }
    }
  }
  std::mt19937 rng(5);
  for (int i = 0; i < 200000; ++i) out.push_back(static_cast<uint32_t>(rng()));
  // Dense through the fp16 subnormal / normal boundary region.
  for (uint32_t x = 0x33000000u; x < 0x39000000u; x += 97) out.push_back(x);
  return out;
}

TEST(Half, FloatToHalfAndBf16MatchReference) {
  for (uint32_t bits : floatSamples()) {
    const float f = std::bit_cast<float>(bits);
    ASSERT_EQ(floatToHalf(f), refFloatToHalf(f)) << std::hex << bits;
    ASSERT_EQ(floatToBf16(f), refFloatToBf16(f)) << std::hex << bits;
  }
}

TEST(Half, KnownValues) {
  EXPECT_EQ(floatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(floatToHalf(1.0f + 0x1p-11f), 0x3c00);      // tie: to even (down)
  EXPECT_EQ(floatToHalf(1.0f + 3 * 0x1p-11f), 0x3c02);  // tie: to even (up)
  EXPECT_EQ(floatToHalf(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
  EXPECT_EQ(floatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(floatToHalf(65519.0f), 0x7bff);
  EXPECT_EQ(floatToHalf(65520.0f), 0x7c00);  // tie above the largest: infinity
  EXPECT_EQ(floatToHalf(1e10f), 0x7c00);
  EXPECT_EQ(floatToHalf(-INFINITY), 0xfc00);
  EXPECT_EQ(floatToHalf(0x1p-24f), 0x0001);             // smallest subnormal
  EXPECT_EQ(floatToHalf(0x1p-25f), 0x0000);             // tie: to even (zero)
  EXPECT_EQ(floatToHalf(0x1.8p-24f), 0x0002);           // tie: to even (up)
  EXPECT_EQ(floatToHalf(0x1p-14f - 0x1p-25f), 0x0400);  // rounds up into the normals
  EXPECT_EQ(floatToHalf(1e-40f), 0x0000);               // float subnormal
  EXPECT_EQ(floatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(floatToHalf(std::bit_cast<float>(0x7f802000u)), 0x7e01);  // sNaN: quiet, payload
  EXPECT_EQ(floatToHalf(std::bit_cast<float>(0xffc00000u)), 0xfe00);
  EXPECT_EQ(halfToFloat(0x0001), 0x1p-24f);
  EXPECT_EQ(halfToFloat(0x03ff), 0x3ffp-24f);
  EXPECT_EQ(halfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(halfToFloat(0xfc00), -INFINITY);
  EXPECT_TRUE(std::isnan(halfToFloat(0x7c01)));
  EXPECT_EQ(floatToBf16(1.0f + 0x1p-8f), 0x3f80);  // tie: to even
  EXPECT_EQ(floatToBf16(1.0f + 3 * 0x1p-8f), 0x3f82);
  EXPECT_EQ(floatToBf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds to infinity
  EXPECT_EQ(floatToBf16(std::bit_cast<float>(0x7f800001u)), 0x7fc0);  // low-payload NaN
  EXPECT_EQ(floatToBf16(std::bit_cast<float>(0x00010000u)), 0x0001);  // subnormal
}

// Edge cases through the kernels, each repeated along 40 elements so that it lands both in
// the vector body and in the scalar tail, with the SIMD and the portable kernels.
struct Case16 {
  uint16_t a, b;
  braidRedOp_t op;
  uint16_t want;
};

void checkCases16(braidDataType_t dt, const std::vector<Case16>& cases) {
  for (bool simd : {true, false}) {
    SimdMode mode(simd);
    for (const Case16& c : cases) {
      std::vector<uint16_t> a(40, c.a), b(40, c.b), d(40, 0);
      reduceBuffers(d.data(), a.data(), b.data(), d.size(), dt, c.op);
      reduceBuffers(a.data(), a.data(), b.data(), a.size(), dt, c.op);
      for (size_t i = 0; i < d.size(); ++i) {
        ASSERT_EQ(d[i], c.want) << dtypeName(dt) << " " << opName(c.op) << " simd=" << simd
                                << std::hex << " a=" << c.a << " b=" << c.b << " i=" << i;
        ASSERT_EQ(a[i], c.want) << "in place";
      }
    }
  }
}

TEST(Half, KernelEdgeCases) {
  const std::vector<Case16> halfCases = {
      {0x3c00, 0x1000, braidSum, 0x3c00},   // 1 + 2^-11: tie, to even (down)
      {0x3c01, 0x1000, braidSum, 0x3c02},   // tie, to even (up)
      {0x3c00, 0x1001, braidSum, 0x3c01},   // just past the tie
      {0x7bff, 0x7bff, braidSum, 0x7c00},   // overflow: infinity
      {0x7bff, 0x4c00, braidSum, 0x7c00},   // 65504 + 16 = 65520: infinity
      {0x7bff, 0x4800, braidSum, 0x7bff},   // 65504 + 8
      {0xfbff, 0xfbff, braidSum, 0xfc00},   // -infinity
      {0x5c00, 0x5c00, braidProd, 0x7c00},  // 256 * 256
      {0x0001, 0x0001, braidSum, 0x0002},   // subnormals
      {0x03ff, 0x0001, braidSum, 0x0400},   // into the normals
      {0x0400, 0x8001, braidSum, 0x03ff},   // out of them
      {0x0400, 0x3800, braidProd, 0x0200},  // 2^-14 * 0.5
      {0x0001, 0x3800, braidProd, 0x0000},  // 2^-25: tie, to zero
      {0x0003, 0x3800, braidProd, 0x0002},  // 1.5 units: tie, to even
      {0x0001, 0x8000, braidSum, 0x0001},   // 2^-24 + -0
      {0x8000, 0x8000, braidSum, 0x8000},   // -0 + -0
      {0x7c00, 0x3c00, braidSum, 0x7c00},   // inf + 1
      {0x7e00, 0x3c00, braidSum, 0x7e00},   // NaN + 1
      {0x3c00, 0x7c01, braidSum, 0x7e01},   // signaling NaN: made quiet, payload kept
      {0x7c01, 0x3c00, braidMax, 0x7e01},   // max/min: a NaN wins
      {0x3c00, 0xfd00, braidMax, 0xff00},   // max/min: b NaN wins
      {0x7d00, 0x3c00, braidMin, 0x7f00},   // min: a NaN wins
      {0x3c00, 0x7e00, braidMin, 0x7e00},   // min: b NaN wins
      {0x7e01, 0x7e02, braidMax, 0x7e01},   // both NaN: a
      {0x7e01, 0x7e02, braidMin, 0x7e01},   // min, both NaN: a
      {0x8000, 0x0000, braidMax, 0x0000},   // max(-0, +0) = b
      {0x0000, 0x8000, braidMax, 0x8000},   // max(+0, -0) = b
      {0xfc00, 0x0001, braidMax, 0x0001},   // -inf
      {0x7c00, 0x7bff, braidMin, 0x7bff},   // +inf
  };
  checkCases16(braidFloat16, halfCases);
  const std::vector<Case16> bf16Cases = {
      {0x3f80, 0x3b80, braidSum, 0x3f80},   // 1 + 2^-8: tie, to even (down)
      {0x3f81, 0x3b80, braidSum, 0x3f82},   // tie, to even (up)
      {0x7f7f, 0x7f7f, braidSum, 0x7f80},   // overflow: infinity
      {0x0001, 0x0001, braidSum, 0x0002},   // subnormals
      {0x007f, 0x0001, braidSum, 0x0080},   // into the normals
      {0x7fc0, 0x3f80, braidSum, 0x7fc0},   // NaN + 1
      {0x3f80, 0x7f81, braidSum, 0x7fc1},   // signaling NaN: made quiet, payload kept
      {0x7f81, 0x3f80, braidMax, 0x7fc1},   // max/min: a NaN wins
      {0x3f80, 0xff81, braidMin, 0xffc1},   // max/min: b NaN wins
      {0x7fc1, 0x7fc2, braidMax, 0x7fc1},   // both NaN: a
      {0x8000, 0x0000, braidMin, 0x0000},   // min(-0, +0) = b
      {0x4000, 0x4040, braidProd, 0x40c0},  // 2 * 3
  };
  checkCases16(braidBfloat16, bf16Cases);
}

TEST(Reduce, FloatNanAndSignedZeroRules) {
  const float nan = std::bit_cast<float>(0x7fc00123u), nan2 = std::bit_cast<float>(0xffc00456u);
  std::vector<float> a = {nan, 1.0f, nan, -0.0f, 0.0f, 2.0f},
                     b = {1.0f, nan, nan2, 0.0f, -0.0f, -INFINITY};
  std::vector<float> d(a.size());
  reduceBuffers(d.data(), a.data(), b.data(), a.size(), braidFloat32, braidMax);
  EXPECT_EQ(std::bit_cast<uint32_t>(d[0]), 0x7fc00123u);
  EXPECT_EQ(std::bit_cast<uint32_t>(d[1]), 0x7fc00123u);
  EXPECT_EQ(std::bit_cast<uint32_t>(d[2]), 0x7fc00123u);
  EXPECT_EQ(std::bit_cast<uint32_t>(d[3]), 0x00000000u);
  EXPECT_EQ(std::bit_cast<uint32_t>(d[4]), 0x80000000u);
  EXPECT_EQ(d[5], 2.0f);
  reduceBuffers(d.data(), b.data(), a.data(), a.size(), braidFloat32, braidMin);
  EXPECT_EQ(std::bit_cast<uint32_t>(d[0]), 0x7fc00123u);
  EXPECT_EQ(std::bit_cast<uint32_t>(d[2]), 0xffc00456u);
  EXPECT_EQ(d[5], -INFINITY);
}

// ---------------------------------------------------------------------------------------------
// finishAvg.

template <typename T>
void checkIntAvg(braidDataType_t dt, std::mt19937_64& rng) {
  std::vector<T> v = {std::numeric_limits<T>::min(),
                      std::numeric_limits<T>::max(),
                      0,
                      1,
                      static_cast<T>(-1),
                      7,
                      static_cast<T>(-7),
                      9};
  for (int i = 0; i < 4099; ++i) v.push_back(static_cast<T>(rng()));
  for (int nranks : {1, 2, 3, 7, 8, 100, 1000, std::numeric_limits<int>::max()}) {
    std::vector<T> got = v;
    finishAvg(got.data(), got.size(), dt, nranks);
    for (size_t i = 0; i < v.size(); ++i) {
      // Truncating division, as NCCL's ncclAvg.
      const T want = static_cast<T>(static_cast<__int128>(v[i]) / nranks);
      ASSERT_EQ(got[i], want) << dtypeName(dt) << " nranks=" << nranks << " v=" << +v[i];
    }
  }
}

TEST(FinishAvg, IntegersTruncate) {
  std::mt19937_64 rng(3);
  checkIntAvg<int8_t>(braidInt8, rng);
  checkIntAvg<uint8_t>(braidUint8, rng);
  checkIntAvg<int32_t>(braidInt32, rng);
  checkIntAvg<uint32_t>(braidUint32, rng);
  checkIntAvg<int64_t>(braidInt64, rng);
  checkIntAvg<uint64_t>(braidUint64, rng);
  int32_t x[3] = {7, -7, 9};
  finishAvg(x, 3, braidInt32, 2);
  EXPECT_EQ(x[0], 3);
  EXPECT_EQ(x[1], -3);  // toward zero
  EXPECT_EQ(x[2], 4);
}

TEST(FinishAvg, EverySmallIntegerExactly) {
  for (int nranks = 2; nranks <= 300; ++nranks) {
    std::vector<int8_t> s(256);
    std::vector<uint8_t> u(256);
    for (int i = 0; i < 256; ++i) {
      s[static_cast<size_t>(i)] = static_cast<int8_t>(i - 128);
      u[static_cast<size_t>(i)] = static_cast<uint8_t>(i);
    }
    finishAvg(s.data(), s.size(), braidInt8, nranks);
    finishAvg(u.data(), u.size(), braidUint8, nranks);
    for (int i = 0; i < 256; ++i) {
      ASSERT_EQ(s[static_cast<size_t>(i)], (i - 128) / nranks) << nranks;
      ASSERT_EQ(u[static_cast<size_t>(i)], i / nranks) << nranks;
    }
  }
}

TEST(FinishAvg, FloatsDivideInTheirOwnPrecision) {
  std::mt19937_64 rng(9);
  for (int nranks : {2, 3, 7, 24}) {
    std::vector<float> f;
    std::vector<double> g;
    std::vector<uint16_t> h, bf;
    for (int i = 0; i < 4099; ++i) {
      f.push_back(std::bit_cast<float>(static_cast<uint32_t>(randomElement(braidFloat32, rng))));
      g.push_back(std::bit_cast<double>(randomElement(braidFloat64, rng)));
      h.push_back(static_cast<uint16_t>(randomElement(braidFloat16, rng)));
      bf.push_back(static_cast<uint16_t>(randomElement(braidBfloat16, rng)));
    }
    auto f2 = f;
    auto g2 = g;
    auto h2 = h;
    auto bf2 = bf;
    finishAvg(f2.data(), f2.size(), braidFloat32, nranks);
    finishAvg(g2.data(), g2.size(), braidFloat64, nranks);
    finishAvg(h2.data(), h2.size(), braidFloat16, nranks);
    finishAvg(bf2.data(), bf2.size(), braidBfloat16, nranks);
    const Model mh = model(braidFloat16), mb = model(braidBfloat16);
    for (size_t i = 0; i < f.size(); ++i) {
      const float wf = f[i] / static_cast<float>(nranks);
      const double wg = g[i] / nranks;
      ASSERT_TRUE(std::bit_cast<uint32_t>(f2[i]) == std::bit_cast<uint32_t>(wf) ||
                  (std::isnan(wf) && std::isnan(f2[i])))
          << f[i] << " / " << nranks;
      ASSERT_TRUE(std::bit_cast<uint64_t>(g2[i]) == std::bit_cast<uint64_t>(wg) ||
                  (std::isnan(wg) && std::isnan(g2[i])))
          << g[i] << " / " << nranks;
      const uint16_t wh = refFloatToHalf(refHalfToFloat(h[i]) / static_cast<float>(nranks));
      ASSERT_TRUE(matches(mh, braidSum, h2[i], wh)) << std::hex << h[i] << " " << h2[i];
      const uint16_t wb = refFloatToBf16(refBf16ToFloat(bf[i]) / static_cast<float>(nranks));
      ASSERT_TRUE(matches(mb, braidSum, bf2[i], wb)) << std::hex << bf[i] << " " << bf2[i];
    }
  }
  // One rounding: 3 * 2^-24 / 2 is a tie between 2^-24 and 2^-23, so it goes to even.
  uint16_t sub = 0x0003;
  finishAvg(&sub, 1, braidFloat16, 2);
  EXPECT_EQ(sub, 0x0002);
  uint16_t h = floatToHalf(3.0f);
  finishAvg(&h, 1, braidFloat16, 2);
  EXPECT_EQ(halfToFloat(h), 1.5f);
  uint16_t bf = floatToBf16(5.0f);
  finishAvg(&bf, 1, braidBfloat16, 5);
  EXPECT_EQ(bf16ToFloat(bf), 1.0f);
  float one = 1.0f;
  finishAvg(&one, 1, braidFloat32, 1);  // one rank: unchanged
  EXPECT_EQ(one, 1.0f);
}

}  // namespace
}  // namespace braid
