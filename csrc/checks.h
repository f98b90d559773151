// Argument validation shared by every kernel of lorm_ext.
//
// The Python wrappers (lorm_ext/ops.py) validate first and give the friendliest
// messages; these checks guard direct torch.ops.lorm_ext calls so a kernel never
// reads out of bounds. All of them run before any accumulator is touched.
#pragma once

#include <vector>

#include "stable.h"

namespace lorm {

// x is (..., d): at least one dim, floating input dtype, same device as acc.
inline void check_rows(const Tensor& x, const Tensor& acc, const char* op) {
  LORM_CHECK(x.dim() >= 1, op, ": x must have at least one dimension (..., d), got a scalar");
  LORM_CHECK(is_input_float(x.scalar_type()), op,
             ": x must be float32, float16, bfloat16 or float64, got ", dtype_name(x.scalar_type()));
  LORM_CHECK(same_device(x, acc), op, ": x is on ", device_name(x), " but acc is on ",
             device_name(acc));
}

inline void check_acc(const Tensor& acc, const char* name, const char* op) {
  LORM_CHECK(is_acc_float(acc.scalar_type()), op, ": ", name,
             " must be float32 or float64, got ", dtype_name(acc.scalar_type()));
  LORM_CHECK(acc.is_contiguous(), op, ": ", name, " must be contiguous");
}

inline void check_gram_update(const Tensor& acc, const Tensor& x) {
  const char* op = "gram_update";
  check_acc(acc, "acc", op);
  check_rows(x, acc, op);
  const int64_t d = x.size(-1);
  const bool full = acc.dim() == 2 && acc.size(0) == d && acc.size(1) == d;
  const bool diag = acc.dim() == 1 && acc.size(0) == d;
  LORM_CHECK(full || diag, op, ": acc must be (d, d) or (d,) with d = x.size(-1) = ", d,
             ", got acc of shape ", shape(acc));
}

inline void check_lowrank_gram_update(const Tensor& acc, const Tensor& x, const Tensor& a,
                                      const std::optional<Tensor>& diag_acc) {
  const char* op = "lowrank_gram_update";
  check_acc(acc, "acc", op);
  check_rows(x, acc, op);
  const int64_t d = x.size(-1);
  LORM_CHECK(a.dim() == 2 && a.size(1) == d, op, ": a must be (r, d) with d = x.size(-1) = ",
             d, ", got a of shape ", shape(a));
  LORM_CHECK(is_input_float(a.scalar_type()), op, ": a must be a floating tensor, got ",
             dtype_name(a.scalar_type()));
  LORM_CHECK(same_device(a, acc), op, ": a is on ", device_name(a), " but acc is on ",
             device_name(acc));
  const int64_t r = a.size(0);
  LORM_CHECK(r <= d, op, ": rank r = ", r, " exceeds d = ", d);
  LORM_CHECK(acc.dim() == 2 && acc.size(0) == r && acc.size(1) == r, op,
             ": acc must be (r, r) with r = a.size(0) = ", r, ", got ", shape(acc));
  if (diag_acc.has_value()) {
    const Tensor& g = *diag_acc;
    check_acc(g, "diag_acc", op);
    LORM_CHECK(g.dim() == 1 && g.size(0) == d, op, ": diag_acc must be (d,) with d = ", d,
               ", got ", shape(g));
    LORM_CHECK(same_device(g, acc), op, ": diag_acc is on ", device_name(g), " but acc is on ",
               device_name(acc));
  }
}

inline void check_spd_solve(const Tensor& q, const Tensor& p) {
  const char* op = "spd_solve";
  LORM_CHECK(is_input_float(q.scalar_type()) && is_input_float(p.scalar_type()), op,
             ": q and p must be floating tensors, got ", dtype_name(q.scalar_type()), " and ",
             dtype_name(p.scalar_type()));
  LORM_CHECK(same_device(q, p), op, ": q is on ", device_name(q), " but p is on ", device_name(p));
  LORM_CHECK(p.dim() >= 2, op, ": p must be (..., m, d), got ", shape(p));
  const int64_t d = p.size(-1);
  const bool diag = q.dim() == p.dim() - 1;
  const bool full = q.dim() == p.dim();
  LORM_CHECK(diag || full, op, ": q must be (..., d, d) or (..., d) to match p ", shape(p),
             ", got ", shape(q));
  const int64_t batch_dims = p.dim() - 2;
  for (int64_t i = 0; i < batch_dims; ++i) {
    LORM_CHECK(q.size(i) == p.size(i), op, ": batch dims of q ", shape(q), " and p ", shape(p),
               " differ");
  }
  if (full) {
    LORM_CHECK(q.size(-1) == d && q.size(-2) == d, op, ": q must be (..., ", d, ", ", d,
               ") to match p ", shape(p), ", got ", shape(q));
  } else {
    LORM_CHECK(q.size(-1) == d, op, ": diagonal q must be (..., ", d, ") to match p ", shape(p),
               ", got ", shape(q));
  }
}

// ts: floating tensors on one device; symmetric[k] (0/1) for each, a square (d, d)
// matrix where it is 1.
inline void check_inspect_terms(const std::vector<Tensor>& ts, const std::vector<int64_t>& symmetric) {
  LORM_CHECK(ts.size() == symmetric.size(), "inspect_terms: ", ts.size(), " tensors but ",
             symmetric.size(), " symmetric flags");
  for (size_t k = 0; k < ts.size(); ++k) {
    const Tensor& t = ts[k];
    LORM_CHECK(is_input_float(t.scalar_type()), "inspect_terms: ts[", k,
               "] must be float32, float16, bfloat16 or float64, got ", dtype_name(t.scalar_type()));
    LORM_CHECK(same_device(t, ts[0]), "inspect_terms: ts[", k, "] is on ", device_name(t),
               " but ts[0] is on ", device_name(ts[0]));
    LORM_CHECK(symmetric[k] == 0 || (t.dim() == 2 && t.size(0) == t.size(1)),
               "inspect_terms: symmetric[", k, "] needs a square (d, d) matrix, got ", shape(t));
  }
}

}  // namespace lorm
