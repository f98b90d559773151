// Vectorised loads of `kVec` consecutive elements (16 bytes) and the test of
// whether a row slice allows them.
#pragma once

#include <cstdint>

#include "../stable.h"

namespace lorm {

template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Packed {
  T v[kVec];
};

template <typename T, int kVec>
__device__ __forceinline__ Packed<T, kVec> load_packed(const T* p) {
  return *reinterpret_cast<const Packed<T, kVec>*>(p);
}

// Elements per 16-byte load.
template <typename T>
constexpr int vec_width() {
  return 16 / sizeof(T) > 0 ? 16 / sizeof(T) : 1;
}

// True when every row of s (n, d) starts 16-byte aligned and holds whole packets.
inline bool rows_vectorizable(const Tensor& s, int vec) {
  if (vec <= 1 || s.stride(1) != 1) return false;
  const auto addr = reinterpret_cast<uintptr_t>(s.const_data_ptr());
  const int64_t bytes = vec * static_cast<int64_t>(s.element_size());
  return addr % bytes == 0 && s.size(1) % vec == 0 && (s.size(0) <= 1 || s.stride(0) % vec == 0);
}

}  // namespace lorm
