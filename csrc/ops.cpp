// Operator schemas of lorm_ext.
//
// Kernels register themselves per device (cpu/*.cpp, cuda/*) with
// TORCH_LIBRARY_IMPL; fake (meta) kernels live in lorm_ext/_fake.py.
#include <torch/library.h>

namespace {
bool built_with_cuda() {
#ifdef LORM_WITH_CUDA
  return true;
#else
  return false;
#endif
}
}  // namespace

TORCH_LIBRARY(lorm_ext, m) {
  // acc (d, d) += x.T @ x, or acc (d,) += (x * x).sum(rows); rows = leading dims of x.
  m.def("gram_update(Tensor(a!) acc, Tensor x) -> ()");
  // z = x @ a.T; acc (r, r) += z.T @ z; diag_acc (d,) += (x * x).sum(rows) if given.
  m.def("lowrank_gram_update(Tensor(a!) acc, Tensor x, Tensor a, Tensor(b!)? diag_acc) -> ()");
  // X with X @ q = p, q (..., d, d) symmetric PSD or (..., d) diagonal, p (..., m, d).
  m.def("spd_solve(Tensor q, Tensor p) -> Tensor");
  // One read of t: (3,) float64 on t's device = [max |t| (NaNs skipped), all finite,
  // exactly symmetric (always 1 unless `symmetric`, which needs a square t)].
  m.def("inspect_term(Tensor t, bool symmetric) -> Tensor");
  // Whether this build compiled CUDA kernels (a GPU need not be present).
  m.def("built_with_cuda() -> bool", &built_with_cuda);
}
