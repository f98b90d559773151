// add_terms, written once for every device: the server's checked add of one client
// update into its running sums. Every term is inspected first (one read); only when
// every term passes every check are the terms added, so a rejected update leaves the
// sums bit for bit as they were.
#pragma once

#include <vector>

#include "stable.h"

namespace lorm {

// What a term is, for the checks: a plain term (p, a bias), a (d,) diagonal Gram, or a
// (d, d) Gram (exact symmetry and the curvature probe too).
enum TermKind : int64_t { kPlainTerm = 0, kDiagonalGram = 1, kSquareGram = 2 };

// Verdict per term (column 4 of add_terms' result); the first failing check counts.
enum Verdict : int64_t {
  kAccepted = 0,
  kNotFinite = 1,
  kNotSymmetric = 2,
  kNegativeDiagonal = 3,  // an entry of a Gram's diagonal below -negative_rtol * max|term|
  kWouldOverflow = 4,     // max|term| above the term's limit
  kNegativeCurvature = 5, // v.T q v < -negative_rtol * sum|diag q| for a probe v
};

// The two device-specific steps.
struct TermKernels {
  // (n, 4) float64 findings (on any device) of contiguous terms: [max |t|, all finite,
  // exactly symmetric (where symmetric[k]), smallest diagonal entry]; see inspect_terms.
  Tensor (*inspect)(const std::vector<Tensor>& ts, const std::vector<int64_t>& symmetric);
  // sums[k] += ts[k] for every k (contiguous, equal shapes, one device).
  void (*add)(const std::vector<Tensor>& sums, const std::vector<Tensor>& ts);
};

// The (n, 5) float64 CPU result of add_terms: the findings and the verdict per term;
// the terms were added iff every verdict is kAccepted. See the schema in ops.cpp.
Tensor add_terms_with(const std::vector<Tensor>& sums, const std::vector<Tensor>& ts,
                      const std::vector<int64_t>& kinds, const std::vector<double>& limits,
                      double negative_rtol, const std::vector<Tensor>& probes,
                      const TermKernels& kernels);

}  // namespace lorm
