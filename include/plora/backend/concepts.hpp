#pragma once
// The Backend concept: the complete set of numeric operations the rest of plora
// is written against. A backend is a stateless tag type whose static member
// functions do the work, chosen at compile time (`plora::cpu`, `plora::cuda`).
// Conventions: outputs first; all matrices row-major float views in the
// backend's memory space; "accumulate" ops add into their output.
#include <concepts>
#include <cstdint>
#include <span>

#include "plora/core/host_matrix.hpp"
#include "plora/core/view.hpp"

namespace plora {

/// Whether a GEMM operand is used as stored or transposed.
enum class Op { N, T };

/// Hyper-parameters of one fused AdamW update (PyTorch semantics).
struct AdamWStep {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  float bias_correction1 = 1.0f;  ///< 1 - beta1^t
  float bias_correction2 = 1.0f;  ///< 1 - beta2^t
};

/// Hyper-parameters of one SGD-with-momentum update (PyTorch semantics).
struct SgdStep {
  float lr = 1e-2f;
  float momentum = 0.0f;
  float dampening = 0.0f;
  float weight_decay = 0.0f;
  bool nesterov = false;
  bool first_step = false;  ///< PyTorch initialises the buffer to the gradient on the first step
};

template <class B>
concept Backend = requires {
  typename B::Space;
  typename B::Matrix;   // owning (rows, cols) zero-filled matrix with view()
  typename B::Indices;  // int32 index list in the backend's memory
} && requires(typename B::Matrix& m, const typename B::Matrix& cm, View<typename B::Space> v,
              ConstView<typename B::Space> cv, HostView hv, ConstHostView chv, std::span<const std::int32_t> ids,
              const typename B::Indices& idx, float f, const AdamWStep& adam, const SgdStep& sgd) {
  { typename B::Matrix(Index{1}, Index{1}) };
  { m.view() } -> std::same_as<View<typename B::Space>>;
  { cm.view() } -> std::same_as<ConstView<typename B::Space>>;
  { B::make_indices(ids) } -> std::same_as<typename B::Indices>;
  B::upload(v, chv);
  B::download(hv, cv);
  B::copy(v, cv);
  B::fill(v, f);
  B::gemm(v, cv, Op::N, cv, Op::T, f, f);
  B::linear(v, cv, cv, cv, cv);
  B::linear_gelu(v, v, cv, cv, cv);
  B::gemm_strided_batched(v, cv, Op::N, cv, Op::T, f, f, Index{1}, Index{0}, Index{0}, Index{0});
  B::attention(v, v, cv, cv, cv, cv, Index{1}, f);
  B::attention_backward(v, v, v, v, cv, cv, cv, cv, cv, Index{1}, f);
  B::axpy(v, f, cv);
  B::scale(v, f);
  B::mul(v, cv);
  B::add_row_vector(v, cv);
  B::scale_cols(v, cv);
  B::column_sums(v, cv, f);
  B::gather_rows(v, cv, idx);
  B::scatter_add_rows(v, cv, idx, f);
  B::gather_cols(v, cv, idx);
  B::scatter_add_cols(v, cv, idx, f);
  B::gather_cols_periodic(v, cv, idx, Index{1});
  B::scatter_add_cols_periodic(v, cv, idx, Index{1}, f);
  B::transpose_blocks(v, cv, Index{1}, f);
  B::gelu_forward(v, cv);
  B::gelu_backward(v, cv, cv);
  B::layernorm_forward(v, v, cv, cv, cv, f);
  B::layernorm_backward(v, v, v, cv, cv, cv, cv);
  B::softmax_rows(v);
  B::softmax_rows_backward(v, cv, cv);
  { B::cross_entropy(v, cv, idx) } -> std::same_as<float>;
  B::dropout_mask(v, f, std::uint64_t{}, std::uint64_t{}, std::uint64_t{});
  { B::sum_squares(cv) } -> std::same_as<double>;
  { B::all_finite(cv) } -> std::same_as<bool>;
  B::adamw_step(v, cv, v, v, adam);
  B::sgd_step(v, cv, v, sgd);
  B::svd(m, m, m, cv);
};

/// Copies a backend matrix to a new host matrix (for reports, checks, files).
template <Backend B>
HostMatrix to_host(ConstView<typename B::Space> source) {
  HostMatrix out(source.rows, source.cols);
  B::download(out.view(), source);
  return out;
}

/// Copies a host matrix to a new backend matrix.
template <Backend B>
typename B::Matrix to_backend(ConstHostView source) {
  typename B::Matrix out(source.rows, source.cols);
  B::upload(out.view(), source);
  return out;
}

}  // namespace plora
