// Datatype and reduction-op facts shared by the API checks, the engine and the tools.
#pragma once

#include <cstddef>

#include "braid/braid.h"

namespace braid {

inline bool validDtype(int dt) { return dt >= 0 && dt < braidNumTypes; }
inline bool validOp(int op) { return op >= 0 && op < braidNumOps; }

inline size_t dtypeSize(braidDataType_t dt) {
  switch (dt) {
    case braidInt8:
    case braidUint8:
      return 1;
    case braidFloat16:
    case braidBfloat16:
      return 2;
    case braidInt32:
    case braidUint32:
    case braidFloat32:
      return 4;
    case braidInt64:
    case braidUint64:
    case braidFloat64:
      return 8;
    default:
      return 0;
  }
}

inline const char* dtypeName(braidDataType_t dt) {
  static const char* const kNames[] = {"int8",   "uint8",   "int32",   "uint32",  "int64",
                                       "uint64", "float16", "float32", "float64", "bfloat16"};
  return validDtype(dt) ? kNames[dt] : "invalid-dtype";
}

inline const char* opName(braidRedOp_t op) {
  static const char* const kNames[] = {"sum", "prod", "max", "min", "avg"};
  return validOp(op) ? kNames[op] : "invalid-op";
}

}  // namespace braid
