// IEEE binary16 ("half", fp16) and bfloat16 <-> float32 conversions for the host reductions.
// Branch-free bit manipulation (the ternaries compile to selects), so loops over them
// vectorize. Semantics, identical to the x86 F16C instructions (vcvtph2ps / vcvtps2ph with
// round-to-nearest-even), so that the SIMD and portable kernels give the same bits:
// - float -> 16 bits rounds to nearest, ties to even; overflow gives infinity; fp16
//   subnormals are exact in both directions.
// - NaN stays NaN and becomes quiet: sign and the top payload bits are kept, the quiet bit set.
// - Neither direction relies on the FPU handling subnormal floats, so the results stay
//   right when the caller runs with flush-to-zero / denormals-are-zero (for fp16; bfloat16
//   subnormals are float subnormals and follow the FPU mode in arithmetic).
#pragma once

#include <bit>
#include <cstdint>

namespace braid {

// c ? a : b on bit patterns, as masks: both sides are always computed, so compilers keep the
// floating-point work unconditional and if-convert (vectorize) even with -ftrapping-math.
inline uint32_t selectBits(bool c, uint32_t a, uint32_t b) {
  const uint32_t m = 0u - static_cast<uint32_t>(c);
  return (a & m) | (b & ~m);
}

inline float halfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;  // exponent and mantissa
  // Normal, infinity, NaN: move the bits into place with the exponent rebiased by +224, then
  // scale by 2^-112: net +112 = 127 - 15, and exponent 31 lands on 255 (inf/NaN stay so).
  const float normal = std::bit_cast<float>((em << 13) + (224u << 23)) * 0x1p-112f;
  // Subnormal or zero: the mantissa under the exponent of 0.5, minus 0.5 (exact, no float
  // subnormal involved).
  const float sub = std::bit_cast<float>(em | (126u << 23)) - 0.5f;
  const uint32_t bits =
      selectBits(em < 0x0400u, std::bit_cast<uint32_t>(sub), std::bit_cast<uint32_t>(normal));
  return std::bit_cast<float>(bits | sign);
}

inline uint16_t floatToHalf(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  // Each case yields the result shifted left by 13 (the selects stay 32-bit, which GCC's
  // vectorizer handles better than a mix of widths).
  // NaN: quiet, top payload bits kept. Infinity, or finite that rounds past 65504: infinity.
  const uint32_t nan = (x & 0x007fe000u) | 0x0fc00000u;
  const uint32_t big = x > 0x7f800000u ? nan : 0x0f800000u;
  // Below 2^-14 (fp16 subnormal or zero): adding 0.5 leaves the value's 2^-24 multiples in the
  // low mantissa bits, rounded to nearest even by the FPU; a float subnormal input rounds to 0
  // whether or not the FPU treats it as zero.
  const uint32_t small = (std::bit_cast<uint32_t>(std::bit_cast<float>(x) + 0.5f) - 0x3f000000u)
                         << 13;
  // Normal: rebias the exponent (-112 << 23 = 0xc8000000 mod 2^32), round to nearest even
  // (a carry out of the mantissa bumps the exponent, up to infinity at 65520).
  const uint32_t odd = (x >> 13) & 1u;
  const uint32_t normal = x + 0xc8000fffu + odd;
  const uint32_t o = selectBits(x >= 0x47800000u, big, selectBits(x < 0x38800000u, small, normal));
  return static_cast<uint16_t>((o >> 13) | sign);
}

inline float bf16ToFloat(uint16_t h) {
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}

inline uint16_t floatToBf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  // Round to nearest even (a carry bumps the exponent, up to infinity); NaN: quiet, truncated.
  const uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
  const uint32_t nan = (x >> 16) | 0x40u;
  return static_cast<uint16_t>((x & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}

}  // namespace braid
