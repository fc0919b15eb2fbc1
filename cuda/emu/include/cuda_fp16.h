// IEEE half precision on the emulated device, with the GPU's round-to-nearest-
// even conversion (__float2half_rn), subnormals and infinities included.
#pragma once

#include <cstdint>
#include <cstring>

struct __half {
  uint16_t x;
};

inline __half __float2half_rn(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  __half h;
  if (abs >= 0x7f800000u) {  // Inf or NaN
    h.x = static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x0200u : 0u));
    return h;
  }
  if (abs >= 0x477ff000u) {  // rounds to ≥ 65520: overflow to infinity
    h.x = static_cast<uint16_t>(sign | 0x7c00u);
    return h;
  }
  if (abs < 0x38800000u) {  // below the smallest normal half (2^-14): a subnormal or zero
    if (abs < 0x33000000u) {  // below half of the smallest subnormal (2^-25): ±0
      h.x = static_cast<uint16_t>(sign);
      return h;
    }
    const uint32_t mant = (abs & 0x007fffffu) | 0x00800000u;
    // value = mant · 2^(E − 150) = q · 2^−24 with q = mant · 2^(E − 126), E the biased exponent
    const int shift = 126 - static_cast<int>(abs >> 23);
    const uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
    h.x = static_cast<uint16_t>(sign | (q + (rem > half || (rem == half && (q & 1u)))));
    return h;
  }
  uint32_t r = abs - 0x38000000u;  // rebias the exponent: 127 → 15
  r += 0x0fffu + ((r >> 13) & 1u);  // round half to even on the dropped 13 bits
  h.x = static_cast<uint16_t>(sign | (r >> 13));
  return h;
}
inline __half __float2half(float f) { return __float2half_rn(f); }
inline float __half2float(__half h) {
  const uint32_t sign = static_cast<uint32_t>(h.x & 0x8000u) << 16;
  const uint32_t exp = (h.x >> 10) & 0x1fu, mant = h.x & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: normalise
      int e = -1;
      uint32_t m = mant;
      do {
        ++e;
        m <<= 1;
      } while (!(m & 0x400u));
      u = sign | ((127 - 15 - e) << 23) | ((m & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
