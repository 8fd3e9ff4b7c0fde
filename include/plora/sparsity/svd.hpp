#pragma once
// The SVD extractor, the paper's default (METHOD.md §2): W = U S V^T is
// factorised once per weight; keep-fraction q keeps the top k = ceil(q * rank)
// singular triplets, rank = min(out, in), so the ratio is k / rank. Needs only
// forward passes.
#include <cmath>
#include <span>
#include <string>
#include <string_view>

#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/models/concepts.hpp"
#include "plora/sparsity/concepts.hpp"
#include "plora/sparsity/threshold_search.hpp"

namespace plora {

/// Rank-k truncations of one weight from a single factorisation.
/// @tparam B  backend
template <Backend B>
class SvdPruner {
 public:
  using Matrix = typename B::Matrix;

  /// @param weight (out x in), factorised here once; finite (else a
  ///        NumericError naming `site`)
  SvdPruner(ConstView<typename B::Space> weight, std::string_view site) {
    check<NumericError>(B::all_finite(weight), site, ": the weight holds NaN or Inf; its SVD is undefined");
    B::svd(u_, s_, vt_, weight);
  }

  /// min(out, in): the number of singular triplets.
  [[nodiscard]] Index rank() const { return s_.view().cols; }
  [[nodiscard]] Index kept_triplets(double q) const { return ceil_count(q, rank()); }
  [[nodiscard]] double density(double q) const {
    return static_cast<double>(kept_triplets(q)) / static_cast<double>(rank());
  }

  /// out (out x in) = U_k S_k V_k^T
  void apply(View<typename B::Space> out, double q) const {
    const Index k = kept_triplets(q);
    Matrix us(u_.view().rows, k);
    B::copy(us.view(), u_.view().col_block(0, k));
    B::scale_cols(us.view(), s_.view().col_block(0, k));
    B::gemm(out, us.view(), Op::N, vt_.view().row_block(0, k), Op::N, 1.0f, 0.0f);
  }

  /// Row norms of U_k S_k (per output row) and of V_k S_k (per input column).
  [[nodiscard]] SiteScores scores(double q) const {
    const Index k = kept_triplets(q);
    const HostMatrix u = to_host<B>(u_.view()), s = to_host<B>(s_.view()), vt = to_host<B>(vt_.view());
    SiteScores out{std::vector<float>(static_cast<std::size_t>(u.rows())),
                   std::vector<float>(static_cast<std::size_t>(vt.cols()))};
    for (Index i = 0; i < u.rows(); ++i) {
      double sum = 0.0;
      for (Index j = 0; j < k; ++j) {
        const double entry = double(u(i, j)) * double(s(0, j));
        sum += entry * entry;
      }
      out.rows[static_cast<std::size_t>(i)] = static_cast<float>(std::sqrt(sum));
    }
    for (Index i = 0; i < vt.cols(); ++i) {
      double sum = 0.0;
      for (Index j = 0; j < k; ++j) {
        const double entry = double(vt(j, i)) * double(s(0, j));
        sum += entry * entry;
      }
      out.cols[static_cast<std::size_t>(i)] = static_cast<float>(std::sqrt(sum));
    }
    return out;
  }

 private:
  Matrix u_;   // (out x rank)
  Matrix s_;   // (1 x rank), descending
  Matrix vt_;  // (rank x in)
};

/// The SVD ratio extractor: bisection over the q grid, forward passes only.
struct Svd {
  static constexpr std::string_view name = "svd";

  template <Model M>
  [[nodiscard]] SvdPruner<typename M::BackendType> pruner(M& model, const std::string& site,
                                                          std::span<const typename M::Batch> /*shots*/) const {
    return SvdPruner<typename M::BackendType>(model.site(site).weight(), site);
  }

  template <class Metric>
  [[nodiscard]] SearchOutcome search(Metric&& metric, double target, double resolution) const {
    return bisect_threshold(std::forward<Metric>(metric), target, resolution);
  }
};

}  // namespace plora
