// Explicit vectors for the CPU kernels' inner loops, and the attribute that compiles
// a function twice (AVX2 and baseline x86-64) with the loader picking the clone the
// CPU supports, so one wheel runs at full width everywhere. Include from .cpp files only.
#pragma once

#include <cstdint>
#include <cstring>

// One clone per instruction set on x86-64 with GCC or Clang; elsewhere the plain build.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LORM_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define LORM_CLONES
#endif

// The helpers below pass 32-byte vectors by value; they are inlined into each clone,
// so no call ever crosses the differing ABIs this warning is about.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace lorm {
namespace vec {

typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef double f64x4 __attribute__((vector_size(32)));
typedef int64_t i64x4 __attribute__((vector_size(32)));
typedef float f32x4 __attribute__((vector_size(16)));

// Element k of the result is element mask[k] of the 16 values a0..a7, b0..b7.
#if defined(__clang__)
#define LORM_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define LORM_SHUFFLE(a, b, ...) __builtin_shuffle(a, b, ::lorm::vec::i32x8{__VA_ARGS__})
#endif

inline f32x8 load8(const float* p) {
  f32x8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline f32x4 load4(const float* p) {
  f32x4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline f64x4 load4(const double* p) {
  f64x4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store4(double* p, f64x4 v) { std::memcpy(p, &v, sizeof v); }

inline double sum_lanes(f64x4 v) { return (v[0] + v[1]) + (v[2] + v[3]); }

}  // namespace vec
}  // namespace lorm
