// Explicit vectors for the CPU kernels' inner loops, and LORM_TWO_ISAS, which compiles
// a loop twice (AVX2 and baseline x86-64) and picks one at run time, so one wheel runs
// at full width on AVX2 CPUs and still runs everywhere else. Include from .cpp files only.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LORM_X86_ISAS 1
#endif

namespace lorm {
// Whether the CPU loops take their AVX2 build: the CPU has AVX2 and the environment
// variable LORM_CPU_BASELINE is unset, empty or "0" (set it to run the baseline build,
// as the tests do). Decided once per process.
bool cpu_uses_avx2();
}  // namespace lorm

// Defines `ret name params`: on x86-64, an AVX2 copy of `wide` and a baseline copy of
// `narrow` (functions forced inline, usually one loop at two vector widths), and each
// call takes the one cpu_uses_avx2() chose; elsewhere `narrow` (128-bit vectors) alone.
#ifdef LORM_X86_ISAS
#define LORM_TWO_ISAS(ret, name, params, args, wide, narrow)                          \
  __attribute__((target("avx2"))) static ret name##_avx2 params { return wide args; } \
  static ret name##_baseline params { return narrow args; }                           \
  ret name params { return ::lorm::cpu_uses_avx2() ? name##_avx2 args : name##_baseline args; }
#else
#define LORM_TWO_ISAS(ret, name, params, args, wide, narrow) \
  ret name params { return narrow args; }
#endif

// Helpers called from a loop body must inline into both of its copies.
#define LORM_INLINE __attribute__((always_inline)) inline

// Helpers pass 32-byte vectors by value; they are inlined into each copy of a loop, so no call ever crosses the differing ABIs this warning is about.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace lorm {
namespace vec {

// N lanes of T: loops are written for N and built at the width their ISA has natively
// (GCC lowers compares and shuffles of vectors wider than that lane by lane).
template <typename T, int N>
struct VecOf {
  typedef T type __attribute__((vector_size(sizeof(T) * N)));
};
template <typename T, int N>
using Vec = typename VecOf<T, N>::type;

template <typename V, typename T>
LORM_INLINE V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename V, typename T>
LORM_INLINE void store(T* p, V v) {
  std::memcpy(p, &v, sizeof v);
}

// Element k of the result is the value at the k-th index among the 2N values
// a0..a(N-1), b0..b(N-1); M is the N-lane int32 mask type.
#if defined(__clang__)
#define LORM_SHUFFLE(M, a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define LORM_SHUFFLE(M, a, b, ...) __builtin_shuffle(a, b, M{__VA_ARGS__})
#endif

}  // namespace vec
}  // namespace lorm
