// The slice of the LibTorch stable ABI that lorm_ext's kernels use, in one place.
//
// Every file of the extension includes this header instead of ATen: tensors are
// torch::stable::Tensor, errors are LORM_CHECK, and an ATen op without a stable
// wrapper is called by name through the dispatcher shim (aten_call). Built with
// TORCH_TARGET_VERSION (setup.py, CMakeLists.txt), the extension imports under that
// torch and every later one. Ops whose schema has a Scalar argument are avoided: the
// shim of the target version cannot pass one.
#pragma once

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include <array>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace lorm {

using Tensor = torch::stable::Tensor;
using ScalarType = torch::headeronly::ScalarType;
using IntArrayRef = torch::headeronly::IntHeaderOnlyArrayRef;
using Half = c10::Half;
using BFloat16 = c10::BFloat16;

// Errors. A message that starts with kValueErrorTag is re-raised as ValueError by
// lorm_ext/ops.py (a stable kernel can only throw std exceptions, which torch turns
// into RuntimeError).
constexpr const char* kValueErrorTag = "[lorm_ext ValueError] ";

template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream out;
  ((out << args), ...);
  return out.str();
}

#define LORM_CHECK(cond, ...) \
  if (!(cond)) throw std::runtime_error(::lorm::concat(__VA_ARGS__))
#define LORM_CHECK_VALUE(cond, ...) \
  if (!(cond)) throw std::runtime_error(::lorm::concat(::lorm::kValueErrorTag, __VA_ARGS__))

// "(4, 9, 33)": a shape for messages.
inline std::string shape(IntArrayRef sizes) {
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < sizes.size(); ++i) out << (i ? ", " : "") << sizes[i];
  out << (sizes.size() == 1 ? ",)" : ")");
  return out.str();
}
inline std::string shape(const Tensor& t) { return shape(t.sizes()); }

inline std::string device_name(const Tensor& t) {
  if (t.is_cpu()) return "cpu";
  if (t.is_cuda()) return concat("cuda:", static_cast<int>(t.get_device_index()));
  return "another device";
}

inline bool same_device(const Tensor& a, const Tensor& b) {
  return a.is_cpu() == b.is_cpu() && a.is_cuda() == b.is_cuda() &&
         a.get_device_index() == b.get_device_index();
}

inline const char* dtype_name(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return "float32";
    case ScalarType::Double: return "float64";
    case ScalarType::Half: return "float16";
    case ScalarType::BFloat16: return "bfloat16";
    case ScalarType::Int: return "int32";
    case ScalarType::Long: return "int64";
    case ScalarType::Bool: return "bool";
    default: return "a non-floating dtype";
  }
}

inline bool is_input_float(ScalarType t) {
  return t == ScalarType::Float || t == ScalarType::Half || t == ScalarType::BFloat16 ||
         t == ScalarType::Double;
}
inline bool is_acc_float(ScalarType t) { return t == ScalarType::Float || t == ScalarType::Double; }

// torch.promote_types for the floating dtypes lorm_ext accepts.
inline ScalarType promote_floating(ScalarType a, ScalarType b) {
  if (a == b) return a;
  if (a == ScalarType::Double || b == ScalarType::Double) return ScalarType::Double;
  return ScalarType::Float;
}

// Calls fn(Tag<scalar_t>{}) for a float32/float64/float16/bfloat16 dtype (the stable
// twin of AT_DISPATCH_FLOATING_TYPES_AND2(Half, BFloat16)).
template <typename T>
struct Tag {
  using type = T;
};
template <typename Fn>
void dispatch_input_float(ScalarType t, const char* op, const Fn& fn) {
  switch (t) {
    case ScalarType::Float: fn(Tag<float>{}); return;
    case ScalarType::Double: fn(Tag<double>{}); return;
    case ScalarType::Half: fn(Tag<Half>{}); return;
    case ScalarType::BFloat16: fn(Tag<BFloat16>{}); return;
    default: LORM_CHECK(false, op, ": unsupported dtype ", dtype_name(t));
  }
}
template <typename Fn>
void dispatch_acc_float(ScalarType t, const char* op, const Fn& fn) {
  switch (t) {
    case ScalarType::Float: fn(Tag<float>{}); return;
    case ScalarType::Double: fn(Tag<double>{}); return;
    default: LORM_CHECK(false, op, ": accumulator must be float32 or float64, got ", dtype_name(t));
  }
}

namespace aten {

// Runs the ATen op `name.overload` through the dispatcher shim; returns the stack,
// whose first entries hold the op's outputs (owned by the caller: take each with
// take<T>). kSlots >= max(arguments, outputs).
template <size_t kSlots, typename... Args>
std::array<StableIValue, kSlots> call(const char* name, const char* overload, const Args&... args) {
  static_assert(kSlots >= sizeof...(Args), "the stack must hold every argument");
  std::array<StableIValue, kSlots> stack{torch::stable::detail::from(args)...};
  STABLE_TORCH_ERROR_CODE_CHECK(
      torch_call_dispatcher(name, overload, stack.data(), TORCH_ABI_VERSION));
  return stack;
}

template <typename T>
T take(StableIValue v) {
  return torch::stable::detail::to<T>(v);
}

// An op with one Tensor output.
template <typename... Args>
Tensor call1(const char* name, const char* overload, const Args&... args) {
  constexpr size_t slots = sizeof...(Args) > 0 ? sizeof...(Args) : 1;
  return take<Tensor>(call<slots>(name, overload, args...)[0]);
}

inline Tensor mm(const Tensor& a, const Tensor& b) { return call1("aten::mm", "", a, b); }
inline Tensor abs(const Tensor& t) { return call1("aten::abs", "", t); }
inline Tensor reciprocal(const Tensor& t) { return call1("aten::reciprocal", "", t); }
inline Tensor mul(const Tensor& a, const Tensor& b) { return call1("aten::mul", "Tensor", a, b); }
inline Tensor lt(const Tensor& a, const Tensor& b) { return call1("aten::lt", "Tensor", a, b); }
inline Tensor gt(const Tensor& a, const Tensor& b) { return call1("aten::gt", "Tensor", a, b); }
inline Tensor eq(const Tensor& a, const Tensor& b) { return call1("aten::eq", "Tensor", a, b); }
inline Tensor logical_and(const Tensor& a, const Tensor& b) {
  return call1("aten::logical_and", "", a, b);
}
inline Tensor logical_not(const Tensor& t) { return call1("aten::logical_not", "", t); }
inline Tensor logical_or(const Tensor& a, const Tensor& b) { return call1("aten::logical_or", "", a, b); }
inline Tensor le(const Tensor& a, const Tensor& b) { return call1("aten::le", "Tensor", a, b); }
inline Tensor bmm(const Tensor& a, const Tensor& b) { return call1("aten::bmm", "", a, b); }
inline Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  return call1("aten::where", "self", cond, a, b);
}
inline Tensor amax(const Tensor& t, int64_t dim, bool keepdim = false) {
  return call1("aten::amax", "", t, std::vector<int64_t>{dim}, keepdim);
}
inline Tensor amin(const Tensor& t, int64_t dim, bool keepdim = false) {
  return call1("aten::amin", "", t, std::vector<int64_t>{dim}, keepdim);
}
inline Tensor sum(const Tensor& t, int64_t dim, std::optional<ScalarType> dtype = std::nullopt) {
  return call1("aten::sum", "dim_IntList", t, std::optional<std::vector<int64_t>>(std::vector<int64_t>{dim}),
               false, dtype);
}
inline Tensor all(const Tensor& t) { return call1("aten::all", "", t); }
inline Tensor all_dim(const Tensor& t, int64_t dim) { return call1("aten::all", "dim", t, dim, false); }
inline Tensor any(const Tensor& t) { return call1("aten::any", "", t); }
inline Tensor nonzero(const Tensor& t) { return call1("aten::nonzero", "", t); }
inline Tensor diagonal(const Tensor& t, int64_t dim1, int64_t dim2) {
  return call1("aten::diagonal", "", t, int64_t{0}, dim1, dim2);
}
inline Tensor index_select(const Tensor& t, int64_t dim, const Tensor& index) {
  return call1("aten::index_select", "", t, dim, index);
}
inline void index_copy_(const Tensor& t, int64_t dim, const Tensor& index, const Tensor& src) {
  (void)call1("aten::index_copy_", "", t, dim, index, src);
}
// X with a @ X = b for triangular a (left = true).
inline Tensor solve_triangular(const Tensor& a, const Tensor& b, bool upper) {
  return call1("aten::linalg_solve_triangular", "", a, b, upper, true, false);
}
// (L, info): L lower with L @ L.mT = q, info 0 where the factorisation succeeded.
inline std::tuple<Tensor, Tensor> linalg_cholesky_ex(const Tensor& q) {
  auto stack = call<3>("aten::linalg_cholesky_ex", "", q, false, false);
  return {take<Tensor>(stack[0]), take<Tensor>(stack[1])};
}

// (w, v): eigenvalues ascending and eigenvectors of symmetric q.
inline std::tuple<Tensor, Tensor> linalg_eigh(const Tensor& q) {
  auto stack = call<2>("aten::linalg_eigh", "", q, std::string("L"));
  return {take<Tensor>(stack[0]), take<Tensor>(stack[1])};
}

}  // namespace aten

// The tensor ops every kernel uses, named like their ATen counterparts.
inline Tensor narrow(const Tensor& t, int64_t dim, int64_t start, int64_t length) {
  return torch::stable::narrow(const_cast<Tensor&>(t), dim, start, length);
}
inline Tensor t2d(const Tensor& t) { return torch::stable::transpose(t, 0, 1); }
inline Tensor mT(const Tensor& t) { return torch::stable::transpose(t, -2, -1); }
inline Tensor to_dtype(const Tensor& t, ScalarType dtype) {
  return t.scalar_type() == dtype ? t : torch::stable::to(t, dtype);
}
inline Tensor to_cpu(const Tensor& t) {
  return t.is_cpu() ? t : torch::stable::to(t, torch::stable::Device(torch::headeronly::DeviceType::CPU));
}
inline Tensor to_device_of(const Tensor& t, const Tensor& like) {
  return same_device(t, like) ? t : torch::stable::to(t, like.device());
}
// A 0-dim tensor holding v, of t's dtype and device (ATen ops here take no Scalars).
inline Tensor scalar_like(const Tensor& t, double v) {
  return torch::stable::full({}, v, t.scalar_type(), std::nullopt, t.device());
}
inline Tensor zeros(IntArrayRef sizes, ScalarType dtype, const Tensor& device_of) {
  return torch::stable::full(sizes, 0.0, dtype, std::nullopt, device_of.device());
}
inline Tensor empty_cpu(IntArrayRef sizes, ScalarType dtype) {
  return torch::stable::empty(sizes, dtype);
}
// dst += src, exactly (dst - (-1) * src), for any devices and strides.
inline void add_into(const Tensor& dst, const Tensor& src) {
  Tensor target = dst;
  torch::stable::copy_(target, torch::stable::subtract(dst, src, -1.0));
}
// The value of a one-element tensor on any device.
inline double item_double(const Tensor& t) {
  return *to_cpu(to_dtype(t, ScalarType::Double)).const_data_ptr<double>();
}
inline bool item_bool(const Tensor& t) {
  return *to_cpu(to_dtype(t, ScalarType::Bool)).const_data_ptr<bool>();
}
inline int64_t item_long(const Tensor& t) {
  return *to_cpu(to_dtype(t, ScalarType::Long)).const_data_ptr<int64_t>();
}

// The calling thread's index inside torch::stable::parallel_for (0 outside).
inline uint32_t thread_index() {
  uint32_t index = 0;
  STABLE_TORCH_ERROR_CODE_CHECK(torch_get_thread_idx(&index));
  return index;
}

}  // namespace lorm
