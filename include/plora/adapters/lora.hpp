#pragma once
// LoRA (Hu et al. 2021) with PEFT's semantics (REFERENCE.md §3):
//   ΔW = s · B A,  A (r x in) Kaiming-uniform(a = sqrt 5) = U(-1/sqrt(in), 1/sqrt(in)),
//   B (out x r) zeros,  s = alpha / r (rsLoRA: alpha / sqrt(r)),
//   y += s · dropout(x) A^T B^T  — dropout on the adapter branch only, training mode only.
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

/// PEFT's LoraConfig fields that shape one adapter.
struct LoraConfig {
  Index rank = 8;           ///< r
  float alpha = 8.0f;       ///< lora_alpha
  bool use_rslora = false;  ///< scaling alpha / sqrt(r) instead of alpha / r
  float dropout = 0.0f;     ///< lora_dropout on the adapter's input, in [0, 1)
};

/// A LoRA adapter of one (out x in) linear weight.
/// @tparam B  backend holding the factors and running the kernels
template <Backend B>
class Lora {
 public:
  using BackendType = B;
  using Config = LoraConfig;
  using Matrix = typename B::Matrix;
  using View = plora::View<typename B::Space>;
  using ConstView = plora::ConstView<typename B::Space>;

  /// Per application: what backward needs.
  struct Saved {
    detail::Scratch<B> down;  // (tokens, r) = dropout(x) A^T
    typename detail::InputDropout<B>::Saved dropout;
    Index tokens = -1;
  };

  /// Draws A from `init` (row-major, on the host); B starts at zero.
  Lora(Index out, Index in, const Config& config, RandomStream init)
      : config_(config), scaling_(validated_scaling(out, in, config)),
        dropout_(config.dropout, detail::dropout_stream_of(init)) {
    const float bound = static_cast<float>(1.0 / std::sqrt(static_cast<double>(in)));
    a_ = to_backend<B>(detail::uniform_host(config.rank, in, -bound, bound, init).view());
    b_ = Matrix(out, config.rank);
    da_ = Matrix(config.rank, in);
    db_ = Matrix(out, config.rank);
  }

  /// y (T, out) += s · dropout(x) (T, in) A^T B^T
  void forward(View y, ConstView x, Saved& saved) {
    detail::check_forward("Lora", y, x, out_features(), in_features());
    const ConstView input = dropout_.forward(x, saved.dropout);
    const View down = saved.down.rows(x.rows, rank());
    B::gemm(down, input, Op::N, a_.view(), Op::T, 1.0f, 0.0f);  // (T, in) -> (T, r)
    B::gemm(y, down, Op::N, b_.view(), Op::T, scaling_, 1.0f);  // (T, r) -> (T, out)
    saved.tokens = x.rows;
  }

  /// dB += s dy^T h;  g = s dy B;  dA += g^T dropout(x);  dx += (g A) ⊙ mask (unless dx is empty).
  void backward(View dx, ConstView dy, ConstView x, const Saved& saved) {
    detail::check_backward("Lora", dx, dy, x, out_features(), in_features());
    detail::check_saved_tokens("Lora", saved.tokens, x.rows);
    B::gemm(db_.view(), dy, Op::T, saved.down.rows(x.rows), Op::N, scaling_, 1.0f);  // (out, r)
    const View d_down = d_down_.rows(x.rows, rank());
    B::gemm(d_down, dy, Op::N, b_.view(), Op::N, scaling_, 0.0f);  // (T, out) -> (T, r)
    B::gemm(da_.view(), d_down, Op::T, dropout_.input(x, saved.dropout), Op::N, 1.0f, 1.0f);  // (r, in)
    if (!dx.empty()) dropout_.add_input_grad(dx, d_down, a_.view(), saved.dropout, d_input_);
  }

  [[nodiscard]] ParameterList<typename B::Space> parameters() {
    return {{"lora_A", a_.view(), da_.view()}, {"lora_B", b_.view(), db_.view()}};
  }
  void zero_grad() {
    B::fill(da_.view(), 0.0f);
    B::fill(db_.view(), 0.0f);
  }
  [[nodiscard]] Index trainable_count() const { return rank() * (in_features() + out_features()); }

  /// Dense ΔW = s B A (out x in).
  [[nodiscard]] Matrix delta() const {
    Matrix out(out_features(), in_features());
    add_delta(out.view(), 1.0f);
    return out;
  }
  void merge_into(View weight) const {
    require_shape(weight, out_features(), in_features(), "Lora::merge_into weight");
    add_delta(weight, 1.0f);
  }
  void unmerge_from(View weight) const {
    require_shape(weight, out_features(), in_features(), "Lora::unmerge_from weight");
    add_delta(weight, -1.0f);
  }

  void set_training(bool training) { dropout_.set_training(training); }
  [[nodiscard]] bool training() const { return dropout_.training(); }
  [[nodiscard]] Index in_features() const { return a_.view().cols; }
  [[nodiscard]] Index out_features() const { return b_.view().rows; }

  /// The compact LoRA of the kept rows of B and kept columns of A (same
  /// scaling, dropout and dropout stream): Partial-LoRA's B_R and A_C.
  [[nodiscard]] Lora restricted(const std::vector<std::int32_t>& rows, const std::vector<std::int32_t>& cols) const {
    detail::check_kept("Lora::restricted", "rows", rows, out_features());
    detail::check_kept("Lora::restricted", "cols", cols, in_features());
    return Lora(config_, scaling_, dropout_, detail::gather_cols_of<B>(a_.view(), cols),
                detail::gather_rows_of<B>(b_.view(), rows));
  }

  [[nodiscard]] View lora_A() { return a_.view(); }
  [[nodiscard]] ConstView lora_A() const { return a_.view(); }
  [[nodiscard]] View lora_B() { return b_.view(); }
  [[nodiscard]] ConstView lora_B() const { return b_.view(); }
  [[nodiscard]] ConstView lora_A_grad() const { return da_.view(); }
  [[nodiscard]] ConstView lora_B_grad() const { return db_.view(); }
  [[nodiscard]] float scaling() const { return scaling_; }
  [[nodiscard]] Index rank() const { return config_.rank; }
  [[nodiscard]] const Config& config() const { return config_; }
  /// The dropout stream; a checkpoint saves and restores its offset.
  [[nodiscard]] RandomStream& dropout_stream() { return dropout_.stream(); }

 private:
  Lora(const Config& config, float scaling, const detail::InputDropout<B>& dropout, Matrix a, Matrix b)
      : config_(config), scaling_(scaling), dropout_(dropout), a_(std::move(a)), b_(std::move(b)),
        da_(a_.view().rows, a_.view().cols), db_(b_.view().rows, b_.view().cols) {}

  static float validated_scaling(Index out, Index in, const Config& config) {
    detail::check_layer_shape("Lora", out, in);
    detail::check_rank("Lora", "rank", config.rank, out, in);
    check<ValueError>(config.alpha > 0.0f && std::isfinite(config.alpha), "Lora: alpha = ", config.alpha,
                      " must be a finite value > 0");
    detail::check_dropout("Lora", config.dropout);
    const auto r = static_cast<float>(config.rank);
    return config.use_rslora ? config.alpha / std::sqrt(r) : config.alpha / r;
  }

  /// target (out, in) += sign · s B A
  void add_delta(View target, float sign) const {
    B::gemm(target, b_.view(), Op::N, a_.view(), Op::N, sign * scaling_, 1.0f);
  }

  Config config_;
  float scaling_ = 1.0f;
  detail::InputDropout<B> dropout_;
  Matrix a_;   // (r, in)
  Matrix b_;   // (out, r)
  Matrix da_;  // (r, in)
  Matrix db_;  // (out, r)
  detail::Scratch<B> d_down_;   // (T, r) dL/dh
  detail::Scratch<B> d_input_;  // (T, in) branch input grad before the dropout mask
};

}  // namespace plora
