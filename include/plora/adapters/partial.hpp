#pragma once
// Partial<A>: a low-rank adapter restricted to kept output rows R and input
// columns C (METHOD.md §1). Only the compact factors (B_R, A_C) are stored,
// computed and updated:
//   forward : y[:, R] += compact(x[:, C])
//   backward: g = dy[:, R]; compact backward on (g, x[:, C]); dx[:, C] += its input grad
// The result equals the dense adapter whose masked rows of B and columns of A
// are zero, so delta() is that dense ΔW, zero-padded, and merges like it.
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "plora/adapters/adalora.hpp"
#include "plora/adapters/concepts.hpp"
#include "plora/adapters/detail/checks.hpp"
#include "plora/adapters/detail/scratch.hpp"
#include "plora/adapters/lora.hpp"
#include "plora/core/rng.hpp"

namespace plora {

/// The dense adapter's config plus the kept rows (of out) and columns (of in),
/// each sorted ascending, unique, in range and non-empty.
/// @tparam A  the restrictable adapter (Lora<B>, AdaLora<B>)
template <RestrictableAdapter A>
struct PartialConfig {
  typename A::Config inner{};
  std::vector<std::int32_t> kept_rows;
  std::vector<std::int32_t> kept_cols;
};

/// @tparam A  the restrictable adapter whose compact form is trained
template <RestrictableAdapter A>
class Partial {
 public:
  using BackendType = typename A::BackendType;
  using Config = PartialConfig<A>;
  using Matrix = typename BackendType::Matrix;
  using View = plora::View<typename BackendType::Space>;
  using ConstView = plora::ConstView<typename BackendType::Space>;

  struct Saved {
    typename A::Saved inner;
  };

  /// Builds the dense A from `init` (so initial values are exactly the dense
  /// adapter's), then keeps its restriction to (kept_rows, kept_cols).
  Partial(Index out, Index in, const Config& config, RandomStream init)
      : out_(out), in_(in), kept_rows_(checked(config.kept_rows, out, "kept_rows")),
        kept_cols_(checked(config.kept_cols, in, "kept_cols")), rows_(indices(kept_rows_)),
        cols_(indices(kept_cols_)), inner_(A(out, in, config.inner, init).restricted(kept_rows_, kept_cols_)) {}

  /// y (T, out)[:, R] += compact(x (T, in)[:, C])
  void forward(View y, ConstView x, Saved& saved) {
    detail::check_forward("Partial", y, x, out_, in_);
    const View x_kept = x_kept_.rows(x.rows, kept_in());
    BackendType::gather_cols(x_kept, x, cols_);
    const View y_kept = y_kept_.rows(x.rows, kept_out());
    BackendType::fill(y_kept, 0.0f);
    inner_.forward(y_kept, x_kept, saved.inner);
    BackendType::scatter_add_cols(y, y_kept, rows_, 1.0f);
  }

  /// Compact grads accumulate; dx[:, C] += compact input grad (unless dx is empty).
  /// x[:, C] is gathered again rather than kept in Saved, to keep activations small.
  void backward(View dx, ConstView dy, ConstView x, const Saved& saved) {
    detail::check_backward("Partial", dx, dy, x, out_, in_);
    const View x_kept = x_kept_.rows(x.rows, kept_in());
    BackendType::gather_cols(x_kept, x, cols_);
    const View dy_kept = y_kept_.rows(x.rows, kept_out());
    BackendType::gather_cols(dy_kept, dy, rows_);
    if (dx.empty()) {
      inner_.backward(View{}, dy_kept, x_kept, saved.inner);
      return;
    }
    const View dx_kept = dx_kept_.rows(x.rows, kept_in());
    BackendType::fill(dx_kept, 0.0f);
    inner_.backward(dx_kept, dy_kept, x_kept, saved.inner);
    BackendType::scatter_add_cols(dx, dx_kept, cols_, 1.0f);
  }

  [[nodiscard]] ParameterList<typename BackendType::Space> parameters() { return inner_.parameters(); }
  void zero_grad() { inner_.zero_grad(); }
  [[nodiscard]] Index trainable_count() const { return inner_.trainable_count(); }

  /// Dense ΔW (out x in): the compact ΔW at (R, C), zeros elsewhere.
  [[nodiscard]] Matrix delta() const {
    Matrix out(out_, in_);
    add_padded(out.view(), 1.0f);
    return out;
  }
  void merge_into(View weight) const {
    require_shape(weight, out_, in_, "Partial::merge_into weight");
    add_padded(weight, 1.0f);
  }
  void unmerge_from(View weight) const {
    require_shape(weight, out_, in_, "Partial::unmerge_from weight");
    add_padded(weight, -1.0f);
  }

  void set_training(bool training) { inner_.set_training(training); }
  [[nodiscard]] Index in_features() const { return in_; }
  [[nodiscard]] Index out_features() const { return out_; }

  /// The compact adapter (|R| x |C|): its parameters are the trained ones.
  [[nodiscard]] A& inner() { return inner_; }
  [[nodiscard]] const A& inner() const { return inner_; }
  [[nodiscard]] const std::vector<std::int32_t>& kept_rows() const { return kept_rows_; }
  [[nodiscard]] const std::vector<std::int32_t>& kept_cols() const { return kept_cols_; }

 private:
  static std::vector<std::int32_t> checked(const std::vector<std::int32_t>& ids, Index bound, const char* what) {
    detail::check_kept("Partial", what, ids, bound);
    return ids;
  }
  static typename BackendType::Indices indices(const std::vector<std::int32_t>& ids) {
    return BackendType::make_indices(std::span<const std::int32_t>(ids));
  }
  [[nodiscard]] Index kept_out() const { return static_cast<Index>(kept_rows_.size()); }
  [[nodiscard]] Index kept_in() const { return static_cast<Index>(kept_cols_.size()); }

  /// target (out, in)[R, C] += sign · compact ΔW (|R|, |C|)
  void add_padded(View target, float sign) const {
    const Matrix compact = inner_.delta();
    Matrix kept_rows_full(kept_out(), in_);  // (|R|, in)
    BackendType::scatter_add_cols(kept_rows_full.view(), compact.view(), cols_, 1.0f);
    BackendType::scatter_add_rows(target, kept_rows_full.view(), rows_, sign);
  }

  Index out_ = 0;
  Index in_ = 0;
  std::vector<std::int32_t> kept_rows_;
  std::vector<std::int32_t> kept_cols_;
  typename BackendType::Indices rows_;
  typename BackendType::Indices cols_;
  A inner_;
  detail::Scratch<BackendType> x_kept_;   // (T, |C|)
  detail::Scratch<BackendType> y_kept_;   // (T, |R|): compact output, then dy[:, R]
  detail::Scratch<BackendType> dx_kept_;  // (T, |C|)
};

/// Partial-LoRA (the method) and Partial-AdaLoRA.
template <Backend B>
using PartialLora = Partial<Lora<B>>;
template <Backend B>
using PartialAdaLora = Partial<AdaLora<B>>;

}  // namespace plora
