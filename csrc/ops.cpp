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
  // The server's checked add (checked_add.h): inspects every ts[k] like inspect_terms
  // (kinds[k]: 0 plain, 1 (d,) Gram, 2 (d, d) Gram), then the curvature probes of the
  // square Grams (probes: one (P, d) matrix per square Gram, in order); adds every ts[k]
  // into sums[k] iff no check fails. Returns (n, 5) float64 on the CPU: the findings
  // and a verdict code per term (0 accepted; see checked_add.h).
  m.def("add_terms(Tensor(a!)[] sums, Tensor[] ts, int[] kinds, float[] limits, float negative_rtol, "
        "Tensor[] probes) -> Tensor");
  // Which build of the CPU vector loops runs: "avx2", "baseline" or "generic".
  m.def("cpu_isa() -> str");
}
