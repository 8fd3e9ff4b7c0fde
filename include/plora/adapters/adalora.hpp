#pragma once
// AdaLoRA (Zhang et al. 2023) with PEFT's semantics (REFERENCE.md §4): an
// SVD-shaped update ΔW = c · P diag(λ) Q with P = lora_B (out x r),
// λ = lora_E (r x 1), Q = lora_A (r x in) and c = scaling / (ranknum + 1e-5):
//   A, B ~ N(0, 0.02^2), E = 0, ranknum = init_r (fixed; masking zeroes E instead),
//   scaling = alpha, or r when alpha <= 0,
//   y += c · dropout(x) (A ⊙ E)^T B^T.
// The rank allocator that masks E lives in adalora_allocator.hpp; the
// orthogonality regulariser is adalora_orthogonal_regularization below.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "plora/adapters/concepts.hpp"
#include "plora/adapters/detail/checks.hpp"
#include "plora/adapters/detail/host_init.hpp"
#include "plora/adapters/detail/input_dropout.hpp"
#include "plora/adapters/detail/restrict.hpp"
#include "plora/backend/scratch.hpp"
#include "plora/core/rng.hpp"

namespace plora {

namespace detail {
/// A contiguous (n x 1) column seen as a (1 x n) row (AdaLoRA's E as a scale_cols factor).
template <class T, class Space>
MatrixView<T, Space> as_row(MatrixView<T, Space> column) {
  return {column.data, 1, column.rows, column.rows};
}
}  // namespace detail

/// PEFT's AdaLoraConfig. The adapter uses init_r, alpha and dropout; the
/// schedule fields (target_r, tinit, tfinal, deltaT, beta1, beta2, total_step)
/// drive RankAllocator and orth_reg_weight drives adalora_orthogonal_regularization.
struct AdaLoraConfig {
  Index init_r = 12;             ///< initial rank of every adapted matrix
  Index target_r = 8;            ///< average rank per matrix at the end of the budget schedule
  float alpha = 8.0f;            ///< lora_alpha; <= 0 means "use init_r"
  float dropout = 0.0f;          ///< lora_dropout on the adapter's input, in [0, 1)
  float orth_reg_weight = 0.5f;  ///< weight of the orthogonality regulariser, >= 0
  Index tinit = 0;               ///< warm-up steps at the full budget
  Index tfinal = 0;              ///< final steps with the frozen rank pattern
  Index deltaT = 1;              ///< mask every deltaT steps while the budget shrinks
  float beta1 = 0.85f;           ///< EMA factor of the sensitivity
  float beta2 = 0.85f;           ///< EMA factor of the uncertainty
  Index total_step = 0;          ///< total training steps T (required by the allocator)
};

/// An AdaLoRA adapter of one (out x in) linear weight.
/// @tparam B  backend holding the factors and running the kernels
template <Backend B>
class AdaLora {
 public:
  using BackendType = B;
  using Config = AdaLoraConfig;
  using Matrix = typename B::Matrix;
  using View = plora::View<typename B::Space>;
  using ConstView = plora::ConstView<typename B::Space>;

  /// Per application: what backward needs.
  struct Saved {
    detail::Scratch<B> down;  // (tokens, r) = dropout(x) A^T, before the E gate
    typename detail::InputDropout<B>::Saved dropout;
    Index tokens = -1;
  };

  /// Draws A then B (each row-major, N(0, 0.02^2)) from `init` on the host; E starts at zero.
  AdaLora(Index out, Index in, const Config& config, RandomStream init)
      : config_(config), coefficient_(validated_coefficient(out, in, config)),
        dropout_(config.dropout, detail::dropout_stream_of(init)) {
    constexpr float init_std = 0.02f;
    a_ = to_backend<B>(detail::normal_host(config.init_r, in, init_std, init).view());
    b_ = to_backend<B>(detail::normal_host(out, config.init_r, init_std, init).view());
    e_ = Matrix(config.init_r, 1);
    allocate_grads_and_identity();
  }

  /// y (T, out) += c · ((dropout(x) A^T) ⊙ E^T) B^T
  void forward(View y, ConstView x, Saved& saved) {
    detail::check_forward("AdaLora", y, x, out_features(), in_features());
    const ConstView input = dropout_.forward(x, saved.dropout);
    const View down = saved.down.rows(x.rows, rank());
    B::gemm(down, input, Op::N, a_.view(), Op::T, 1.0f, 0.0f);  // (T, in) -> (T, r)
    const View gated = gated_.rows(x.rows, rank());
    B::copy(gated, down);
    B::scale_cols(gated, e_row());
    B::gemm(y, gated, Op::N, b_.view(), Op::T, coefficient_, 1.0f);  // (T, r) -> (T, out)
    saved.tokens = x.rows;
  }

  /// With h = dropout(x) A^T and g = c dy B:  dB += c dy^T (h ⊙ E);
  /// dE += Σ_t g ⊙ h;  dA += (g ⊙ E)^T dropout(x);  dx += ((g ⊙ E) A) ⊙ mask.
  void backward(View dx, ConstView dy, ConstView x, const Saved& saved) {
    detail::check_backward("AdaLora", dx, dy, x, out_features(), in_features());
    detail::check_saved_tokens("AdaLora", saved.tokens, x.rows);
    const ConstView down = saved.down.rows(x.rows);
    const View work = gated_.rows(x.rows, rank());
    B::copy(work, down);
    B::scale_cols(work, e_row());
    B::gemm(db_.view(), dy, Op::T, work, Op::N, coefficient_, 1.0f);  // (out, r)
    const View d_gated = d_gated_.rows(x.rows, rank());
    B::gemm(d_gated, dy, Op::N, b_.view(), Op::N, coefficient_, 0.0f);  // (T, out) -> (T, r)
    B::copy(work, d_gated);
    B::mul(work, down);
    B::column_sums(detail::as_row(de_.view()), work, 1.0f);  // (1, r)
    B::scale_cols(d_gated, e_row());                         // now dL/dh
    B::gemm(da_.view(), d_gated, Op::T, dropout_.input(x, saved.dropout), Op::N, 1.0f, 1.0f);  // (r, in)
    if (!dx.empty()) dropout_.add_input_grad(dx, d_gated, a_.view(), saved.dropout, d_input_);
  }

  [[nodiscard]] ParameterList<typename B::Space> parameters() {
    return {{"lora_A", a_.view(), da_.view()}, {"lora_E", e_.view(), de_.view()}, {"lora_B", b_.view(), db_.view()}};
  }
  void zero_grad() {
    B::fill(da_.view(), 0.0f);
    B::fill(de_.view(), 0.0f);
    B::fill(db_.view(), 0.0f);
  }
  /// A, E and B are all trained (PEFT counts lora_E too).
  [[nodiscard]] Index trainable_count() const { return rank() * (in_features() + out_features() + 1); }

  /// Dense ΔW = c B diag(E) A (out x in).
  [[nodiscard]] Matrix delta() const {
    Matrix out(out_features(), in_features());
    add_delta(out.view(), 1.0f);
    return out;
  }
  void merge_into(View weight) const {
    require_shape(weight, out_features(), in_features(), "AdaLora::merge_into weight");
    add_delta(weight, 1.0f);
  }
  void unmerge_from(View weight) const {
    require_shape(weight, out_features(), in_features(), "AdaLora::unmerge_from weight");
    add_delta(weight, -1.0f);
  }

  void set_training(bool training) { dropout_.set_training(training); }
  [[nodiscard]] bool training() const { return dropout_.training(); }
  [[nodiscard]] Index in_features() const { return a_.view().cols; }
  [[nodiscard]] Index out_features() const { return b_.view().rows; }

  /// The compact AdaLoRA of the kept rows of B (P) and kept columns of A (Q),
  /// all of E, and the same coefficient: Partial-AdaLoRA's factors.
  [[nodiscard]] AdaLora restricted(const std::vector<std::int32_t>& rows,
                                   const std::vector<std::int32_t>& cols) const {
    detail::check_kept("AdaLora::restricted", "rows", rows, out_features());
    detail::check_kept("AdaLora::restricted", "cols", cols, in_features());
    Matrix e(rank(), 1);
    B::copy(e.view(), e_.view());
    return AdaLora(config_, coefficient_, dropout_, detail::gather_cols_of<B>(a_.view(), cols), std::move(e),
                   detail::gather_rows_of<B>(b_.view(), rows));
  }

  /// PEFT's orthogonality term of this adapter, ||A A^T - I||_F + ||B^T B - I||_F,
  /// with `grad_scale` times its gradient added to the A and B grads:
  /// d/dM ||M M^T - I||_F = 2 (M M^T - I) M / norm. The deviation D = M M^T - I
  /// is formed before its norm, as PEFT does: expanding ||D||^2 into
  /// ||M M^T||^2 - 2 ||M||^2 + r cancels away a deviation below float rounding
  /// of the r diagonal terms (~1e-3 for r = 8), and the term with it.
  double orthogonality_penalty(float grad_scale) {
    const View deviation = gram_.rows(rank(), rank());
    B::gemm(deviation, a_.view(), Op::N, a_.view(), Op::T, 1.0f, 0.0f);  // A A^T (r, r)
    B::axpy(deviation, -1.0f, identity_.view());
    const double norm_a = std::sqrt(B::sum_squares(deviation));
    if (norm_a > 0.0)
      B::gemm(da_.view(), deviation, Op::N, a_.view(), Op::N, static_cast<float>(2.0 * grad_scale / norm_a), 1.0f);
    B::gemm(deviation, b_.view(), Op::T, b_.view(), Op::N, 1.0f, 0.0f);  // B^T B (r, r)
    B::axpy(deviation, -1.0f, identity_.view());
    const double norm_b = std::sqrt(B::sum_squares(deviation));
    if (norm_b > 0.0)
      B::gemm(db_.view(), b_.view(), Op::N, deviation, Op::N, static_cast<float>(2.0 * grad_scale / norm_b), 1.0f);
    return norm_a + norm_b;
  }

  [[nodiscard]] View lora_A() { return a_.view(); }
  [[nodiscard]] ConstView lora_A() const { return a_.view(); }
  [[nodiscard]] View lora_E() { return e_.view(); }
  [[nodiscard]] ConstView lora_E() const { return e_.view(); }
  [[nodiscard]] View lora_B() { return b_.view(); }
  [[nodiscard]] ConstView lora_B() const { return b_.view(); }
  [[nodiscard]] ConstView lora_A_grad() const { return da_.view(); }
  [[nodiscard]] ConstView lora_E_grad() const { return de_.view(); }
  [[nodiscard]] ConstView lora_B_grad() const { return db_.view(); }
  /// lora_alpha, or init_r when alpha <= 0.
  [[nodiscard]] float scaling() const { return scaling_of(config_); }
  /// The factor applied to the branch: scaling / (ranknum + 1e-5).
  [[nodiscard]] float coefficient() const { return coefficient_; }
  [[nodiscard]] Index rank() const { return config_.init_r; }
  [[nodiscard]] const Config& config() const { return config_; }
  /// The dropout stream; a checkpoint saves and restores its offset.
  [[nodiscard]] RandomStream& dropout_stream() { return dropout_.stream(); }

 private:
  AdaLora(const Config& config, float coefficient, const detail::InputDropout<B>& dropout, Matrix a, Matrix e,
          Matrix b)
      : config_(config), coefficient_(coefficient), dropout_(dropout), a_(std::move(a)), e_(std::move(e)),
        b_(std::move(b)) {
    allocate_grads_and_identity();
  }

  void allocate_grads_and_identity() {
    da_ = Matrix(a_.view().rows, a_.view().cols);
    de_ = Matrix(e_.view().rows, 1);
    db_ = Matrix(b_.view().rows, b_.view().cols);
    HostMatrix identity(rank(), rank());
    for (Index i = 0; i < rank(); ++i) identity(i, i) = 1.0f;
    identity_ = to_backend<B>(identity.view());
  }

  static float scaling_of(const Config& config) {
    return config.alpha > 0.0f ? config.alpha : static_cast<float>(config.init_r);
  }
  static float validated_coefficient(Index out, Index in, const Config& config) {
    detail::check_layer_shape("AdaLora", out, in);
    detail::check_rank("AdaLora", "init_r", config.init_r, out, in);
    check<ValueError>(std::isfinite(config.alpha), "AdaLora: alpha = ", config.alpha, " must be finite");
    detail::check_dropout("AdaLora", config.dropout);
    // PEFT: result * scaling / (ranknum + 1e-5), ranknum a float32 tensor holding init_r.
    return scaling_of(config) / (static_cast<float>(config.init_r) + 1e-5f);
  }

  [[nodiscard]] ConstView e_row() const { return detail::as_row(ConstView(e_.view())); }

  /// target (out, in) += sign · c (B diag(E)) A
  void add_delta(View target, float sign) const {
    Matrix gated_b(out_features(), rank());
    B::copy(gated_b.view(), b_.view());
    B::scale_cols(gated_b.view(), e_row());
    B::gemm(target, gated_b.view(), Op::N, a_.view(), Op::N, sign * coefficient_, 1.0f);
  }

  Config config_;
  float coefficient_ = 1.0f;
  detail::InputDropout<B> dropout_;
  Matrix a_;   // (r, in)   Q
  Matrix e_;   // (r, 1)    λ
  Matrix b_;   // (out, r)  P
  Matrix da_;  // (r, in)
  Matrix de_;  // (r, 1)
  Matrix db_;  // (out, r)
  detail::Scratch<B> gated_;    // (T, r) h ⊙ E, and products in backward
  detail::Scratch<B> d_gated_;  // (T, r)
  detail::Scratch<B> d_input_;  // (T, in)
  detail::Scratch<B> gram_;     // (r, r) for the orthogonality term: A A^T - I, then B^T B - I
  Matrix identity_;             // (r, r)
};

/// PEFT's orthogonality regulariser (AdaLoraModel.forward): returns
///   orth_reg_weight · (Σ_adapters ||A A^T - I||_F + ||B^T B - I||_F) / (2 · #adapters)
/// — PEFT divides by the number of lora_A and lora_B matrices, i.e. the mean
/// over matrices — and adds its gradient into every adapter's A and B grads.
/// Pass `&partial.inner()` for Partial<AdaLora> adapters (their compact factors).
/// @tparam B  backend of the adapters
template <Backend B>
double adalora_orthogonal_regularization(const std::vector<AdaLora<B>*>& adapters, float orth_reg_weight) {
  check<ValueError>(orth_reg_weight >= 0.0f && std::isfinite(orth_reg_weight),
                    "adalora_orthogonal_regularization: orth_reg_weight = ", orth_reg_weight,
                    " must be finite and >= 0");
  if (adapters.empty()) return 0.0;
  const float grad_scale = orth_reg_weight / (2.0f * static_cast<float>(adapters.size()));
  double total = 0.0;
  for (AdaLora<B>* adapter : adapters) {
    check<ValueError>(adapter != nullptr, "adalora_orthogonal_regularization: null adapter pointer");
    total += adapter->orthogonality_penalty(grad_scale);
  }
  return static_cast<double>(grad_scale) * total;
}

}  // namespace plora
