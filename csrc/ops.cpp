// Operator schemas of lorm_ext and the Python module entry point.
//
// Kernels register themselves per device (cpu/*.cpp, cuda/*.cu) with
// TORCH_LIBRARY_IMPL; fake (meta) kernels live in lorm_ext/_fake.py.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import lorm_ext._C` only has to load this shared object, which runs the
// static registrations below; the module itself exposes nothing.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "lorm_ext compiled kernels (see torch.ops.lorm_ext)", -1,
      nullptr};
  return PyModule_Create(&module_def);
}
}

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
  // Whether this build compiled CUDA kernels (a GPU need not be present).
  m.def("built_with_cuda() -> bool", &built_with_cuda);
}
