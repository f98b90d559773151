// Which build of the vector loops (vectors.h) this process runs, and the op that tells.
#include <cstdlib>
#include <cstring>
#include <string>

#include "../stable.h"
#include "vectors.h"

namespace lorm {

namespace {

bool baseline_requested() {
  const char* flag = std::getenv("LORM_CPU_BASELINE");
  return flag != nullptr && flag[0] != '\0' && std::strcmp(flag, "0") != 0;
}

bool decide_avx2() {
#ifdef LORM_X86_ISAS
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && !baseline_requested();
#else
  return false;
#endif
}

}  // namespace

bool cpu_uses_avx2() {
  static const bool chosen = decide_avx2();
  return chosen;
}

// "avx2", "baseline" (x86-64 without AVX2, or LORM_CPU_BASELINE set) or "generic"
// (not x86-64: one build of the loops).
std::string cpu_isa() {
#ifdef LORM_X86_ISAS
  return cpu_uses_avx2() ? "avx2" : "baseline";
#else
  return "generic";
#endif
}

}  // namespace lorm

// No tensor argument picks a device, so the op is registered for every backend.
STABLE_TORCH_LIBRARY_IMPL(lorm_ext, CompositeExplicitAutograd, m) { m.impl("cpu_isa", TORCH_BOX(&lorm::cpu_isa)); }
