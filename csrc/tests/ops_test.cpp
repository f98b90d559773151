// C++ test of the lorm_ext operators through the dispatcher, against plain ATen.
// Prints "N passed, M failed" and exits non-zero on any failure.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace {

c10::OperatorHandle op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "");
}

void gram_update(const at::Tensor& acc, const at::Tensor& x) {
  op("lorm_ext::gram_update").typed<void(const at::Tensor&, const at::Tensor&)>().call(acc, x);
}

void lowrank_gram_update(const at::Tensor& acc, const at::Tensor& x, const at::Tensor& a,
                         const std::optional<at::Tensor>& diag) {
  op("lorm_ext::lowrank_gram_update")
      .typed<void(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                  const std::optional<at::Tensor>&)>()
      .call(acc, x, a, diag);
}

// mixed_min_dim 1024: the op's default (this test's matrices take the float64 path).
at::Tensor spd_solve(const at::Tensor& q, const at::Tensor& p, int64_t mixed_min_dim = 1024) {
  return op("lorm_ext::spd_solve")
      .typed<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t)>()
      .call(q, p, mixed_min_dim);
}

bool close(const at::Tensor& a, const at::Tensor& b, double tol) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>() <=
         tol * std::max(1.0, b.abs().max().item<double>());
}

const std::vector<std::pair<std::string, std::function<bool()>>> kTests = {
    {"full gram of a (4, 9, 33) float32 batch",
     [] {
       at::Tensor x = at::randn({4, 9, 33});
       at::Tensor acc = at::zeros({33, 33}, at::kDouble);
       gram_update(acc, x);
       at::Tensor rows = x.reshape({-1, 33}).to(at::kDouble);
       return close(acc, rows.t().mm(rows), 1e-6);
     }},
    {"diagonal gram of transposed bfloat16 rows",
     [] {
       at::Tensor x = at::randn({17, 40}).to(at::kBFloat16).t();  // (40, 17), strided
       at::Tensor acc = at::zeros({17});
       gram_update(acc, x);
       at::Tensor rows = x.to(at::kDouble);
       return close(acc, (rows * rows).sum(0), 1e-6);
     }},
    {"low-rank gram equals A G A^T, diagonal equals diag(G)",
     [] {
       at::Tensor x = at::randn({50, 20});
       at::Tensor a = at::randn({4, 20});
       at::Tensor h = at::zeros({4, 4}, at::kDouble), g = at::zeros({20}, at::kDouble);
       lowrank_gram_update(h, x, a, g);
       at::Tensor x64 = x.to(at::kDouble), a64 = a.to(at::kDouble);
       at::Tensor z = x64.mm(a64.t());
       return close(h, z.t().mm(z), 1e-9) && close(g, (x64 * x64).sum(0), 1e-9);
     }},
    {"spd_solve matches pinv for definite and singular q",
     [] {
       at::Tensor x = at::randn({30, 12}, at::kDouble), y = at::randn({5, 12}, at::kDouble);
       at::Tensor q = at::stack({x.t().mm(x), y.t().mm(y)});
       at::Tensor p = at::randn({2, 3, 12}, at::kDouble);
       const std::optional<double> default_tolerance;
       at::Tensor expected =
           at::matmul(p, at::linalg_pinv(q, default_tolerance, default_tolerance, true));
       return close(spd_solve(q, p), expected, 1e-8);
     }},
    {"spd_solve's mixed-precision path (float32 factor, float64 refinement) matches pinv",
     [] {
       at::Tensor x = at::randn({400, 160}, at::kDouble);
       at::Tensor q = x.t().mm(x).unsqueeze(0);
       at::Tensor p = at::randn({1, 4, 160}, at::kDouble);
       const std::optional<double> default_tolerance;
       at::Tensor expected =
           at::matmul(p, at::linalg_pinv(q, default_tolerance, default_tolerance, true));
       return close(spd_solve(q, p, /*mixed_min_dim=*/128), expected, 1e-10);
     }},
    {"bad shape raises and leaves acc untouched",
     [] {
       at::Tensor acc = at::ones({5, 5});
       try {
         gram_update(acc, at::randn({3, 4}));
       } catch (const std::exception& e) {  // stable-ABI kernels throw std::runtime_error
         return std::string(e.what()).find("acc must be (d, d) or (d,)") != std::string::npos &&
                acc.eq(1).all().item<bool>();
       }
       return false;
     }},
};

}  // namespace

int main() {
  at::manual_seed(0);
  int passed = 0, failed = 0;
  for (const auto& [name, test] : kTests) {
    bool ok = false;
    try {
      ok = test();
    } catch (const std::exception& e) {
      std::printf("  error: %s\n", e.what());
    }
    std::printf("%s  %s\n", ok ? "PASS" : "FAIL", name.c_str());
    (ok ? passed : failed)++;
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
