// Element-wise reductions. Plain loops over element pairs that the compiler vectorizes (this
// file is built with -O3; see CMakeLists.txt); 16-bit floats go through float32 with
// branch-free conversions. Integer sum/prod wrap around (computed unsigned: no UB).
// Max/min of floats propagate NaN (a NaN in either input gives NaN).
#include "src/engine/reduce.h"

#include <cstdint>
#include <type_traits>

#include "src/engine/half.h"

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
      return apply16<halfToFloat, floatToHalf, Op>(dst, a, b, n);
    case braidBfloat16:
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
