#include "checked_add.h"

#include <cmath>

#include "checks.h"

namespace lorm {
namespace {

constexpr const char* kOp = "add_terms";

void check_add_terms(const std::vector<Tensor>& sums, const std::vector<Tensor>& ts,
                     const std::vector<int64_t>& kinds, const std::vector<double>& limits,
                     const std::vector<Tensor>& probes) {
  const size_t n = ts.size();
  LORM_CHECK(sums.size() == n && kinds.size() == n && limits.size() == n, kOp, ": ", n,
             " terms but ", sums.size(), " sums, ", kinds.size(), " kinds and ", limits.size(),
             " limits");
  size_t squares = 0;
  for (size_t k = 0; k < n; ++k) {
    const Tensor &s = sums[k], &t = ts[k];
    LORM_CHECK(is_input_float(t.scalar_type()), kOp, ": ts[", k, "] must be a floating tensor, got ",
               dtype_name(t.scalar_type()));
    LORM_CHECK(is_acc_float(s.scalar_type()) && s.is_contiguous(), kOp, ": sums[", k,
               "] must be a contiguous float32 or float64 tensor");
    LORM_CHECK(shape(s) == shape(t), kOp, ": sums[", k, "] is ", shape(s), " but ts[", k, "] is ", shape(t));
    LORM_CHECK(same_device(s, t) && same_device(t, ts[0]), kOp, ": ts[", k, "] is on ", device_name(t),
               ", sums[", k, "] on ", device_name(s), ", ts[0] on ", device_name(ts[0]));
    LORM_CHECK(kinds[k] >= kPlainTerm && kinds[k] <= kSquareGram, kOp, ": kinds[", k, "] = ", kinds[k],
               " is not 0 (plain), 1 (diagonal Gram) or 2 (square Gram)");
    if (kinds[k] != kSquareGram) continue;
    LORM_CHECK(t.dim() == 2 && t.size(0) == t.size(1), kOp, ": kinds[", k,
               "] = 2 needs a square (d, d) term, got ", shape(t));
    LORM_CHECK(squares < probes.size(), kOp, ": one probe matrix per square Gram is needed, got ",
               probes.size());
    const Tensor& v = probes[squares++];
    LORM_CHECK(v.dim() == 2 && v.size(1) == t.size(0) && is_input_float(v.scalar_type()) && same_device(v, t),
               kOp, ": probes for ts[", k, "] must be a floating (P, ", t.size(0), ") tensor on ",
               device_name(t), ", got ", shape(v));
  }
  LORM_CHECK(squares == probes.size(), kOp, ": ", probes.size(), " probe matrices for ", squares,
             " square Grams");
}

// Smallest v.T q v over the probe rows v of `probes` (P, d), against -negative_rtol
// times sum |diag q| (E[v.T q v] = trace q for standard normal v: round-off's natural
// scale). q is exactly symmetric here, so v q = (q v).T; (P, d) @ (d, d) is the product
// BLAS does fastest (measured 2.6x faster than (d, d) @ (d, P) at d = 768, P = 8).
bool negative_curvature(const Tensor& q, const Tensor& probes, double negative_rtol) {
  const Tensor v = to_dtype(probes, ScalarType::Float);
  const Tensor vq = aten::mm(v, to_dtype(q, ScalarType::Float));  // (P, d)
  const Tensor curvature = aten::sum(aten::mul(vq, v), 1, ScalarType::Double);
  const Tensor diagonal_sum = aten::sum(aten::abs(aten::diagonal(q, 0, 1)), 0, ScalarType::Double);
  return item_double(aten::amin(curvature, 0)) < -negative_rtol * item_double(diagonal_sum);
}

int64_t verdict(const double* row, int64_t kind, double limit, double negative_rtol) {
  if (row[1] == 0.0) return kNotFinite;
  if (row[2] == 0.0) return kNotSymmetric;
  if (kind != kPlainTerm && row[3] < -negative_rtol * row[0]) return kNegativeDiagonal;
  if (!(row[0] <= limit)) return kWouldOverflow;
  return kAccepted;
}

}  // namespace

Tensor add_terms_with(const std::vector<Tensor>& sums, const std::vector<Tensor>& ts,
                      const std::vector<int64_t>& kinds, const std::vector<double>& limits,
                      double negative_rtol, const std::vector<Tensor>& probes,
                      const TermKernels& kernels) {
  check_add_terms(sums, ts, kinds, limits, probes);
  const int64_t n = static_cast<int64_t>(ts.size());
  std::vector<int64_t> symmetric(kinds.size());
  for (int64_t k = 0; k < n; ++k) symmetric[k] = kinds[k] == kSquareGram;
  const Tensor found = to_cpu(kernels.inspect(ts, symmetric));
  Tensor out = empty_cpu({n, 5}, ScalarType::Double);
  double* rows = out.mutable_data_ptr<double>();
  const double* findings = found.const_data_ptr<double>();
  bool all_accepted = true;
  for (int64_t k = 0; k < n; ++k) {
    for (int c = 0; c < 4; ++c) rows[5 * k + c] = findings[4 * k + c];
    const int64_t v = verdict(rows + 5 * k, kinds[k], limits[k], negative_rtol);
    rows[5 * k + 4] = static_cast<double>(v);
    all_accepted = all_accepted && v == kAccepted;
  }
  // The probes cost a product with q: only for an update every other check accepted.
  for (int64_t k = 0, square = 0; all_accepted && k < n; ++k) {
    if (kinds[k] != kSquareGram) continue;
    if (negative_curvature(ts[k], probes[square++], negative_rtol)) {
      rows[5 * k + 4] = static_cast<double>(kNegativeCurvature);
      all_accepted = false;
    }
  }
  if (all_accepted && n > 0) kernels.add(sums, ts);
  return out;
}

}  // namespace lorm
