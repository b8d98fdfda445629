// Typed test data: small integers stored in any braid datatype, so that every partial result
// of every op is exactly representable and expected results can be computed exactly.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "braid/braid.h"
#include "src/core/dtype.h"
#include "src/engine/half.h"

namespace braid::test {

inline void put(void* buf, braidDataType_t dt, size_t i, int64_t v) {
  char* p = static_cast<char*>(buf) + i * dtypeSize(dt);
  switch (dt) {
    case braidInt8: {
      int8_t x = static_cast<int8_t>(v);
      std::memcpy(p, &x, 1);
      break;
    }
    case braidUint8: {
      uint8_t x = static_cast<uint8_t>(v);
      std::memcpy(p, &x, 1);
      break;
    }
    case braidInt32: {
      int32_t x = static_cast<int32_t>(v);
      std::memcpy(p, &x, 4);
      break;
    }
    case braidUint32: {
      uint32_t x = static_cast<uint32_t>(v);
      std::memcpy(p, &x, 4);
      break;
    }
    case braidInt64:
      std::memcpy(p, &v, 8);
      break;
    case braidUint64: {
      uint64_t x = static_cast<uint64_t>(v);
      std::memcpy(p, &x, 8);
      break;
    }
    case braidFloat16: {
      uint16_t x = floatToHalf(static_cast<float>(v));
      std::memcpy(p, &x, 2);
      break;
    }
    case braidBfloat16: {
      uint16_t x = floatToBf16(static_cast<float>(v));
      std::memcpy(p, &x, 2);
      break;
    }
    case braidFloat32: {
      float x = static_cast<float>(v);
      std::memcpy(p, &x, 4);
      break;
    }
    case braidFloat64: {
      double x = static_cast<double>(v);
      std::memcpy(p, &x, 8);
      break;
    }
    default:
      break;
  }
}

inline bool sameElem(const void* a, const void* b, braidDataType_t dt, size_t i) {
  size_t s = dtypeSize(dt);
  return std::memcmp(static_cast<const char*>(a) + i * s, static_cast<const char*>(b) + i * s, s) ==
         0;
}

// A byte buffer of n elements of dt.
struct Buf {
  std::vector<char> bytes;
  braidDataType_t dt;
  Buf(size_t n, braidDataType_t t) : bytes(n * dtypeSize(t) + 1), dt(t) {}
  void* data() { return bytes.data(); }
  size_t size() const { return (bytes.size() - 1) / dtypeSize(dt); }
};

constexpr braidDataType_t kAllTypes[] = {braidInt8,    braidUint8,  braidInt32,   braidUint32,
                                         braidInt64,   braidUint64, braidFloat16, braidBfloat16,
                                         braidFloat32, braidFloat64};
constexpr braidRedOp_t kAllOps[] = {braidSum, braidProd, braidMax, braidMin, braidAvg};

// Input of rank r at element i for op (see the file comment): values in 1..6 (sum, max, min),
// 1..2 (prod), base(i) + a per-rank offset summing to 0 over ranks (avg).
inline int64_t inputValue(braidRedOp_t op, int r, int n, size_t i) {
  if (op == braidProd) return ((r + i) % 3 == 0) ? 2 : 1;
  if (op == braidAvg) {
    int64_t base = static_cast<int64_t>(i % 5) + 2;
    int64_t c = (r % 2 == 1) ? -1 : (r == n - 1 ? 0 : 1);
    return base + c;
  }
  // Sum, max, min and the data of all-gather and broadcast: 1..6, from a base and a range
  // that change with the element, so that no rank count makes every element's sum, maximum
  // or minimum alike (with values (3r + i) % 5 + 1, 5 ranks summed to 15 everywhere and 5 or
  // more had maximum 5 everywhere: an element put in the wrong place went unseen), and ranks
  // 5 apart send different data.
  const auto base = static_cast<int64_t>(i % 3), range = static_cast<int64_t>(2 + i % 4);
  return 1 + base +
         static_cast<int64_t>((static_cast<size_t>(r) * 3 + i) % static_cast<size_t>(range));
}

inline int64_t expectedValue(braidRedOp_t op, int n, size_t i) {
  if (op == braidAvg) return static_cast<int64_t>(i % 5) + 2;
  int64_t acc = inputValue(op, 0, n, i);
  for (int r = 1; r < n; ++r) {
    int64_t v = inputValue(op, r, n, i);
    if (op == braidSum) acc += v;
    if (op == braidProd) acc *= v;
    if (op == braidMax) acc = std::max(acc, v);
    if (op == braidMin) acc = std::min(acc, v);
  }
  return acc;
}

// All-to-all and send/recv data: what rank `from` sends to rank `to` at element i.
inline int64_t a2aValue(int from, int to, size_t i) { return (from * 7 + to * 3 + i) % 100; }

}  // namespace braid::test
