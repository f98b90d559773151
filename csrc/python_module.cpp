// The Python module entry point of lorm_ext._C (setup.py builds only; the CMake
// library has no Python). `import lorm_ext._C` only has to load this shared object,
// which runs the static operator registrations; the module itself exposes nothing.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C", "lorm_ext compiled kernels (see torch.ops.lorm_ext)", -1,
      nullptr};
  return PyModule_Create(&module_def);
}
