// C++ test of the CPU vector loops (csrc/cpu/value_loops.h, lowrank_rows.h) against
// plain scalar answers, with no torch: ctest runs it on both x86-64 builds
// (LORM_CPU_BASELINE unset and 1), tests/test_cpu_isa.py cross-compiles it for aarch64
// (the generic build) and runs it under qemu. Exits non-zero on any failure.
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "../cpu/lowrank_rows.h"
#include "../cpu/value_loops.h"
#include "../cpu/vectors.h"  // cpu_uses_avx2 (csrc/cpu/isa.cpp, x86-64 only)

namespace {

int failed = 0, passed = 0;

void expect(bool ok, const char* what, int size) {
  if (ok) {
    ++passed;
  } else {
    ++failed;
    std::printf("FAILED: %s (size %d)\n", what, size);
  }
}

std::mt19937 rng(3);
float gaussian() { return std::normal_distribution<float>(0.0f, 1.0f)(rng); }

void scans() {
  for (int n : {0, 1, 7, 16, 33, 1000}) {
    std::vector<float> v(n);
    for (float& x : v) x = gaussian();
    if (n > 20) v[5] = NAN, v[11] = -INFINITY;
    float largest = 0.0f, smallest = INFINITY;
    bool finite = true;
    for (float x : v) {
      if (std::fabs(x) > largest) largest = std::fabs(x);
      if (x < smallest) smallest = x;
      finite = finite && std::isfinite(x);
    }
    const lorm::ValueScan found = lorm::scan_float32(v.data(), n);
    expect(found.max_abs == largest && found.min == smallest && found.finite == finite, "scan", n);
  }
}

void symmetry() {
  for (int d : {1, 5, 8, 13, 24, 37}) {
    std::vector<float> t(d * d);
    for (int i = 0; i < d; ++i)
      for (int j = i; j < d; ++j) t[i * d + j] = t[j * d + i] = gaussian();
    t[(d / 2) * d + d / 2] = NAN;  // the diagonal is never compared
    expect(lorm::symmetric_rows_float32(t.data(), d, 0, d), "symmetric", d);
    if (d > 1) {
      t[1 * d + (d - 1)] += 1.0f;
      expect(!lorm::symmetric_rows_float32(t.data(), d, 0, d), "asymmetric", d);
      expect(lorm::symmetric_rows_float32(t.data(), d, 2, d), "rows past the difference", d);
    }
  }
}

void narrowing_and_adding() {
  for (int n : {3, 8, 1003}) {
    std::vector<double> in(n);
    double sum = 0.0;
    for (double& x : in) sum += std::fabs(x = gaussian());
    std::vector<float> out(n);
    lorm::NarrowedRow row = lorm::narrow_float64(in.data(), out.data(), n);
    bool same = true;
    for (int i = 0; i < n; ++i) same = same && out[i] == static_cast<float>(in[i]);
    expect(same && !row.subnormal && std::fabs(row.abs_sum - sum) <= 1e-12 * sum, "narrow", n);
    in[n - 1] = DBL_MIN / 4;
    row = lorm::narrow_float64(in.data(), out.data(), n);
    expect(row.subnormal && out[n - 1] == 0.0f, "narrow a subnormal", n);

    std::vector<double> acc(n, 1.0);
    lorm::add_float32_into_float64(acc.data(), out.data(), n);
    same = true;
    for (int i = 0; i < n; ++i) same = same && acc[i] == 1.0 + static_cast<double>(out[i]);
    expect(same, "add", n);
  }
}

void lowrank() {
  const int rows = 9, d = 45;
  for (int r : {1, 3, 8, 11}) {
    std::vector<float> x(rows * d);
    std::vector<double> a(r * d), zz(r * r, 0.0), diag(d, 0.0);
    for (float& e : x) e = gaussian();
    for (double& e : a) e = gaussian();
    lorm::lowrank_rows_float32(x.data(), d, rows, d, a.data(), r, zz.data(), diag.data());
    bool close = true;
    for (int k = 0; k < r; ++k) {
      for (int l = 0; l < r; ++l) {
        double want = 0.0;
        for (int i = 0; i < rows; ++i) {
          double zk = 0.0, zl = 0.0;
          for (int j = 0; j < d; ++j) {
            zk += static_cast<double>(x[i * d + j]) * a[k * d + j];
            zl += static_cast<double>(x[i * d + j]) * a[l * d + j];
          }
          want += zk * zl;
        }
        close = close && std::fabs(zz[k * r + l] - want) <= 1e-10 * (1.0 + std::fabs(want));
      }
    }
    for (int j = 0; j < d; ++j) {
      double want = 0.0;
      for (int i = 0; i < rows; ++i) want += static_cast<double>(x[i * d + j]) * x[i * d + j];
      close = close && std::fabs(diag[j] - want) <= 1e-12 * want;
    }
    expect(close, "lowrank rows", r);
  }
}

}  // namespace

int main() {
  scans();
  symmetry();
  narrowing_and_adding();
  lowrank();
#ifdef LORM_X86_ISAS
  std::printf("build: %s\n", lorm::cpu_uses_avx2() ? "avx2" : "baseline");
#else
  std::printf("build: generic\n");
#endif
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
