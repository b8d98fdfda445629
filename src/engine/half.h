// IEEE binary16 and bfloat16 <-> float32 conversions: branch-free bit manipulation (selects,
// not jumps) so loops over them vectorize. float -> 16-bit rounds to nearest even; NaN stays a
// quiet NaN; fp16 subnormals and overflow to infinity are exact.
#pragma once

#include <bit>
#include <cstdint>

namespace braid {

inline float halfToFloat(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t em = h & 0x7fffu;
  // Exponent/mantissa placed in a float and rescaled by 2^112 covers normals and subnormals.
  float scaled = std::bit_cast<float>(em << 13) * 0x1p112f;
  uint32_t finite = std::bit_cast<uint32_t>(scaled);
  uint32_t special = (em << 13) | 0x7f800000u;  // infinity / NaN (payload kept)
  uint32_t bits = em >= 0x7c00u ? special : finite;
  return std::bit_cast<float>(bits | sign);
}

inline uint16_t floatToHalf(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  // Overflow to infinity, or infinity / NaN (quiet).
  uint32_t big = x > 0x7f800000u ? 0x7e00u : 0x7c00u;
  // Subnormal or zero: let the FPU round by adding 0.5 (exponent 126) and read the mantissa.
  uint32_t small = std::bit_cast<uint32_t>(std::bit_cast<float>(x) + 0.5f) - 0x3f000000u;
  // Normal: rebias the exponent, round to nearest even.
  uint32_t odd = (x >> 13) & 1u;
  uint32_t normal = (x + 0xc8000fffu + odd) >> 13;  // 0xc8000000 = (15 - 127) << 23
  uint32_t o = x >= 0x47800000u ? big : (x < 0x38800000u ? small : normal);
  return static_cast<uint16_t>(o | sign);
}

inline float bf16ToFloat(uint16_t h) {
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}

inline uint16_t floatToBf16(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
  uint32_t nan = (x >> 16) | 0x40u;
  return static_cast<uint16_t>((x & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

}  // namespace braid
