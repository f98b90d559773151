// Argument validation shared by every kernel of lorm_ext.
//
// The Python wrappers (lorm_ext/ops.py) validate first and give the friendliest
// messages; these checks guard direct torch.ops.lorm_ext calls so a kernel never
// reads out of bounds. All of them run before any accumulator is touched.
#pragma once

#include <ATen/ATen.h>

namespace lorm {

inline bool is_input_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kDouble;
}

inline bool is_acc_float(at::ScalarType t) { return t == at::kFloat || t == at::kDouble; }

// x is (..., d): at least one dim, floating input dtype, same device as acc.
inline void check_rows(const at::Tensor& x, const at::Tensor& acc, const char* op) {
  TORCH_CHECK(x.dim() >= 1, op, ": x must have at least one dimension (..., d), got a scalar");
  TORCH_CHECK(is_input_float(x.scalar_type()), op,
              ": x must be float32, float16, bfloat16 or float64, got ", x.scalar_type());
  TORCH_CHECK(x.device() == acc.device(), op, ": x is on ", x.device(), " but acc is on ",
              acc.device());
}

inline void check_acc(const at::Tensor& acc, const char* name, const char* op) {
  TORCH_CHECK(is_acc_float(acc.scalar_type()), op, ": ", name,
              " must be float32 or float64, got ", acc.scalar_type());
  TORCH_CHECK(acc.is_contiguous(), op, ": ", name, " must be contiguous");
}

inline void check_gram_update(const at::Tensor& acc, const at::Tensor& x) {
  const char* op = "gram_update";
  check_acc(acc, "acc", op);
  check_rows(x, acc, op);
  const int64_t d = x.size(-1);
  const bool full = acc.dim() == 2 && acc.size(0) == d && acc.size(1) == d;
  const bool diag = acc.dim() == 1 && acc.size(0) == d;
  TORCH_CHECK(full || diag, op, ": acc must be (d, d) or (d,) with d = x.size(-1) = ", d,
              ", got acc of shape ", acc.sizes());
}

inline void check_lowrank_gram_update(const at::Tensor& acc, const at::Tensor& x,
                                      const at::Tensor& a,
                                      const std::optional<at::Tensor>& diag_acc) {
  const char* op = "lowrank_gram_update";
  check_acc(acc, "acc", op);
  check_rows(x, acc, op);
  const int64_t d = x.size(-1);
  TORCH_CHECK(a.dim() == 2 && a.size(1) == d, op, ": a must be (r, d) with d = x.size(-1) = ",
              d, ", got a of shape ", a.sizes());
  TORCH_CHECK(is_input_float(a.scalar_type()), op, ": a must be a floating tensor, got ",
              a.scalar_type());
  TORCH_CHECK(a.device() == acc.device(), op, ": a is on ", a.device(), " but acc is on ",
              acc.device());
  const int64_t r = a.size(0);
  TORCH_CHECK(r <= d, op, ": rank r = ", r, " exceeds d = ", d);
  TORCH_CHECK(acc.dim() == 2 && acc.size(0) == r && acc.size(1) == r, op,
              ": acc must be (r, r) with r = a.size(0) = ", r, ", got ", acc.sizes());
  if (diag_acc.has_value()) {
    const at::Tensor& g = *diag_acc;
    check_acc(g, "diag_acc", op);
    TORCH_CHECK(g.dim() == 1 && g.size(0) == d, op, ": diag_acc must be (d,) with d = ", d,
                ", got ", g.sizes());
    TORCH_CHECK(g.device() == acc.device(), op, ": diag_acc is on ", g.device(),
                " but acc is on ", acc.device());
  }
}

inline void check_spd_solve(const at::Tensor& q, const at::Tensor& p) {
  const char* op = "spd_solve";
  TORCH_CHECK(is_input_float(q.scalar_type()) && is_input_float(p.scalar_type()), op,
              ": q and p must be floating tensors, got ", q.scalar_type(), " and ",
              p.scalar_type());
  TORCH_CHECK(q.device() == p.device(), op, ": q is on ", q.device(), " but p is on ",
              p.device());
  TORCH_CHECK(p.dim() >= 2, op, ": p must be (..., m, d), got ", p.sizes());
  const int64_t d = p.size(-1);
  const bool diag = q.dim() == p.dim() - 1;
  const bool full = q.dim() == p.dim();
  TORCH_CHECK(diag || full, op, ": q must be (..., d, d) or (..., d) to match p ", p.sizes(),
              ", got ", q.sizes());
  const int64_t batch_dims = p.dim() - 2;
  for (int64_t i = 0; i < batch_dims; ++i) {
    TORCH_CHECK(q.size(i) == p.size(i), op, ": batch dims of q ", q.sizes(),
                " and p ", p.sizes(), " differ");
  }
  if (full) {
    TORCH_CHECK(q.size(-1) == d && q.size(-2) == d, op, ": q must be (..., ", d, ", ", d,
                ") to match p ", p.sizes(), ", got ", q.sizes());
  } else {
    TORCH_CHECK(q.size(-1) == d, op, ": diagonal q must be (..., ", d, ") to match p ",
                p.sizes(), ", got ", q.sizes());
  }
}

// ts: floating tensors on one device; symmetric[k] (0/1) for each, a square (d, d)
// matrix where it is 1.
inline void check_inspect_terms(at::TensorList ts, at::IntArrayRef symmetric) {
  TORCH_CHECK(ts.size() == symmetric.size(), "inspect_terms: ", ts.size(), " tensors but ",
              symmetric.size(), " symmetric flags");
  for (size_t k = 0; k < ts.size(); ++k) {
    const at::Tensor& t = ts[k];
    TORCH_CHECK(is_input_float(t.scalar_type()), "inspect_terms: ts[", k,
                "] must be float32, float16, bfloat16 or float64, got ", t.scalar_type());
    TORCH_CHECK(t.device() == ts[0].device(), "inspect_terms: ts[", k, "] is on ", t.device(),
                " but ts[0] is on ", ts[0].device());
    TORCH_CHECK(symmetric[k] == 0 || (t.dim() == 2 && t.size(0) == t.size(1)),
                "inspect_terms: symmetric[", k, "] needs a square (d, d) matrix, got ", t.sizes());
  }
}

}  // namespace lorm
