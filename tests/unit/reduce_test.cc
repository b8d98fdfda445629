// The reduction kernels (SIMD where the CPU has it) against a plain scalar reference, for every
// dtype and op, odd counts (vector tails), aliasing, and fp16/bf16 edge values.
#include "src/engine/reduce.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "src/core/dtype.h"
#include "src/engine/half.h"

namespace braid {
namespace {

template <typename T, bool = std::is_integral_v<T>>
struct Unsigned {
  using type = T;
};
template <typename T>
struct Unsigned<T, true> {
  using type = std::make_unsigned_t<T>;
};

template <typename T>
T refOp(T a, T b, braidRedOp_t op) {
  using W = typename Unsigned<T>::type;
  switch (op) {
    case braidSum:
    case braidAvg:
      return static_cast<T>(static_cast<W>(static_cast<W>(a) + static_cast<W>(b)));
    case braidProd:
      if constexpr (std::is_integral_v<T>) {
        return static_cast<T>(static_cast<uint64_t>(static_cast<W>(a)) *
                              static_cast<uint64_t>(static_cast<W>(b)));
      } else {
        return a * b;
      }
    case braidMax:
      if constexpr (std::is_floating_point_v<T>) {
        if (std::isnan(a)) return a;
        if (std::isnan(b)) return b;
      }
      return a > b ? a : b;
    default:
      if constexpr (std::is_floating_point_v<T>) {
        if (std::isnan(a)) return a;
        if (std::isnan(b)) return b;
      }
      return a < b ? a : b;
  }
}

template <typename T>
void checkType(braidDataType_t dt, std::mt19937_64& rng) {
  for (braidRedOp_t op : {braidSum, braidProd, braidMax, braidMin, braidAvg}) {
    for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{1000}, size_t{4099}}) {
      std::vector<T> a(n), b(n), d(n);
      for (size_t i = 0; i < n; ++i) {
        a[i] = static_cast<T>(static_cast<int64_t>(rng() % 200) - 100);
        b[i] = static_cast<T>(static_cast<int64_t>(rng() % 200) - 100);
      }
      reduceBuffers(d.data(), a.data(), b.data(), n, dt, op);
      for (size_t i = 0; i < n; ++i) {
        ASSERT_EQ(d[i], refOp(a[i], b[i], op)) << dtypeName(dt) << " " << opName(op) << " i=" << i;
      }
      if (n == 0) continue;  // (memcmp of empty vectors would get null pointers)
      // Aliasing: dst == a, then dst == b.
      std::vector<T> a2 = a;
      reduceBuffers(a2.data(), a2.data(), b.data(), n, dt, op);
      EXPECT_EQ(std::memcmp(a2.data(), d.data(), n * sizeof(T)), 0) << dtypeName(dt);
      std::vector<T> b2 = b;
      reduceBuffers(b2.data(), a.data(), b2.data(), n, dt, op);
      EXPECT_EQ(std::memcmp(b2.data(), d.data(), n * sizeof(T)), 0) << dtypeName(dt);
    }
  }
}

TEST(Reduce, IntegerAndFloatTypesMatchScalarReference) {
  std::mt19937_64 rng(7);
  checkType<int8_t>(braidInt8, rng);
  checkType<uint8_t>(braidUint8, rng);
  checkType<int32_t>(braidInt32, rng);
  checkType<uint32_t>(braidUint32, rng);
  checkType<int64_t>(braidInt64, rng);
  checkType<uint64_t>(braidUint64, rng);
  checkType<float>(braidFloat32, rng);
  checkType<double>(braidFloat64, rng);
}

TEST(Reduce, IntegerSumAndProdWrap) {
  int8_t a = 127, b = 1, d = 0;
  reduceBuffers(&d, &a, &b, 1, braidInt8, braidSum);
  EXPECT_EQ(d, -128);
  int32_t x = 1 << 30, y = 4, z = 0;
  reduceBuffers(&z, &x, &y, 1, braidInt32, braidProd);
  EXPECT_EQ(z, 0);
}

// 16-bit floats: every kernel (SIMD or not) must equal convert -> float op -> round-to-nearest.
void check16(braidDataType_t dt, float (*load)(uint16_t), uint16_t (*store)(float)) {
  std::mt19937 rng(11);
  const size_t n = 4099;
  std::vector<uint16_t> a(n), b(n), d(n);
  for (size_t i = 0; i < n; ++i) {
    a[i] = static_cast<uint16_t>(rng());
    b[i] = static_cast<uint16_t>(rng());
  }
  // Edge values at the front: zeros, infinities, NaN, largest, smallest subnormal.
  const uint16_t edgesHalf[] = {0x0000, 0x8000, 0x7c00, 0xfc00, 0x7e00, 0x7bff, 0x0001, 0x3c00};
  const uint16_t edgesBf[] = {0x0000, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0x7f7f, 0x0001, 0x3f80};
  const uint16_t* edges = dt == braidFloat16 ? edgesHalf : edgesBf;
  for (size_t i = 0; i < 8; ++i) {
    for (size_t j = 0; j < 8; ++j) {
      a[i * 8 + j] = edges[i];
      b[i * 8 + j] = edges[j];
    }
  }
  for (braidRedOp_t op : {braidSum, braidProd, braidMax, braidMin}) {
    for (size_t count : {size_t{1}, size_t{7}, size_t{8}, size_t{9}, n}) {
      reduceBuffers(d.data(), a.data(), b.data(), count, dt, op);
      for (size_t i = 0; i < count; ++i) {
        float fa = load(a[i]), fb = load(b[i]);
        uint16_t want = store(refOp(fa, fb, op));
        bool bothNan = std::isnan(load(d[i])) && std::isnan(load(want));
        ASSERT_TRUE(d[i] == want || bothNan)
            << dtypeName(dt) << " " << opName(op) << " i=" << i << std::hex << " a=" << a[i]
            << " b=" << b[i] << " got " << d[i] << " want " << want;
      }
    }
  }
}

TEST(Reduce, Float16MatchesFloat32ThenRound) { check16(braidFloat16, halfToFloat, floatToHalf); }
TEST(Reduce, Bfloat16MatchesFloat32ThenRound) { check16(braidBfloat16, bf16ToFloat, floatToBf16); }

TEST(Reduce, HalfConversionKnownValues) {
  EXPECT_EQ(floatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(floatToHalf(1.0f + 0x1p-11f), 0x3c00);      // tie to even (down)
  EXPECT_EQ(floatToHalf(1.0f + 3 * 0x1p-11f), 0x3c02);  // tie to even (up)
  EXPECT_EQ(floatToHalf(65520.0f), 0x7c00);             // rounds to infinity
  EXPECT_EQ(floatToHalf(0x1p-24f), 0x0001);             // smallest subnormal
  EXPECT_EQ(floatToHalf(-0.0f), 0x8000);
  EXPECT_TRUE(std::isnan(halfToFloat(floatToHalf(NAN))));
  EXPECT_EQ(halfToFloat(0x0001), 0x1p-24f);
  EXPECT_EQ(floatToBf16(1.0f + 0x1p-8f), 0x3f80);  // tie to even
  EXPECT_EQ(floatToBf16(1.0f + 3 * 0x1p-8f), 0x3f82);
  EXPECT_EQ(floatToBf16(NAN) & 0x7fc0, 0x7fc0);
}

TEST(Reduce, FinishAvg) {
  int32_t i[3] = {7, -7, 9};
  finishAvg(i, 3, braidInt32, 2);
  EXPECT_EQ(i[0], 3);
  EXPECT_EQ(i[1], -3);  // truncation toward zero, as NCCL
  float f[2] = {3.0f, 1.0f};
  finishAvg(f, 2, braidFloat32, 4);
  EXPECT_EQ(f[0], 0.75f);
  uint16_t h = floatToHalf(3.0f);
  finishAvg(&h, 1, braidFloat16, 2);
  EXPECT_EQ(halfToFloat(h), 1.5f);
  uint16_t bf = floatToBf16(5.0f);
  finishAvg(&bf, 1, braidBfloat16, 5);
  EXPECT_EQ(bf16ToFloat(bf), 1.0f);
}

}  // namespace
}  // namespace braid
