// Operator schemas of lorm_ext.
//
// Kernels register themselves per device (cpu/*.cpp in lorm_ext._C, cuda/* in
// lorm_ext._cuda) with STABLE_TORCH_LIBRARY_IMPL; fake (meta) kernels live in
// lorm_ext/_fake.py.
#include "stable.h"

STABLE_TORCH_LIBRARY(lorm_ext, m) {
  // acc (d, d) += x.T @ x, or acc (d,) += (x * x).sum(rows); rows = leading dims of x.
  m.def("gram_update(Tensor(a!) acc, Tensor x) -> ()");
  // z = x @ a.T; acc (r, r) += z.T @ z; diag_acc (d,) += (x * x).sum(rows) if given.
  m.def("lowrank_gram_update(Tensor(a!) acc, Tensor x, Tensor a, Tensor(b!)? diag_acc) -> ()");
  // X with X @ q = p, q (..., d, d) symmetric PSD or (..., d) diagonal, p (..., m, d).
  // A kernel that has it starts matrices with d >= mixed_min_dim (0: none) from a
  // float32 factor refined in float64 (same answer to float64 round-off; solve.cpp).
  m.def("spd_solve(Tensor q, Tensor p, int mixed_min_dim=1024) -> Tensor");
  // One read of each ts[k]: (n, 4) float64 on ts' device, row k = [max |t| (NaNs
  // skipped), all finite, exactly symmetric (1 unless symmetric[k], which needs a square
  // t), smallest diagonal entry (of a square t; any entry of a flat one; NaNs skipped;
  // +inf when there is none)].
  m.def("inspect_terms(Tensor[] ts, int[] symmetric) -> Tensor");
}
