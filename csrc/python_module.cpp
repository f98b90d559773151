// The Python module entry point of an extension module of lorm_ext (setup.py builds
// only; the CMake library has no Python). Importing it only has to load the shared
// object, which runs the static operator registrations; the module exposes nothing.
// TORCH_EXTENSION_NAME is the module's name (_C or _cuda), set per extension by
// torch's BuildExtension.
// Only the limited C API is used, so one build serves every CPython >= 3.10.
#include <Python.h>

#define LORM_CONCAT_(a, b) a##b
#define LORM_CONCAT(a, b) LORM_CONCAT_(a, b)
#define LORM_STRING_(a) #a
#define LORM_STRING(a) LORM_STRING_(a)

extern "C" PyObject* LORM_CONCAT(PyInit_, TORCH_EXTENSION_NAME)(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, LORM_STRING(TORCH_EXTENSION_NAME),
      "lorm_ext compiled kernels (see torch.ops.lorm_ext)", -1, nullptr};
  return PyModule_Create(&module_def);
}
