#pragma once
// plora::cpu behind a plain C++ interface, so that the CUDA test (an nvcc
// translation unit, which must not see Eigen) can compare against it. Each
// function forwards to the cpu:: op of the same name; indices are host spans.
#include <cstdint>
#include <span>

#include "plora/backend/concepts.hpp"

namespace plora::test::reference {

using Ids = std::span<const std::int32_t>;

void gemm(HostView c, ConstHostView a, Op op_a, ConstHostView b, Op op_b, float alpha, float beta);
void gemm_strided_batched(HostView c, ConstHostView a, Op op_a, ConstHostView b, Op op_b, float alpha, float beta,
                          Index batch, Index stride_c, Index stride_a, Index stride_b);
void copy(HostView dst, ConstHostView src);
void fill(HostView x, float value);
void axpy(HostView y, float alpha, ConstHostView x);
void scale(HostView x, float alpha);
void mul(HostView y, ConstHostView x);
void add_row_vector(HostView x, ConstHostView bias);
void linear(HostView y, ConstHostView x, ConstHostView w, ConstHostView bias, ConstHostView residual = {});
void linear_gelu(HostView pre, HostView act, ConstHostView x, ConstHostView w, ConstHostView bias);
void attention(HostView probs, HostView context, ConstHostView q, ConstHostView k, ConstHostView v,
               ConstHostView mask, Index heads, float scale);
void attention_backward(HostView d_query, HostView d_key, HostView d_value, HostView d_scores, ConstHostView d_context,
                        ConstHostView probs, ConstHostView q, ConstHostView k, ConstHostView v, Index heads,
                        float scale);
void scale_cols(HostView x, ConstHostView s);
void column_sums(HostView out, ConstHostView x, float beta);
void gather_rows(HostView dst, ConstHostView src, Ids idx);
void scatter_add_rows(HostView dst, ConstHostView src, Ids idx, float alpha);
void gather_cols(HostView dst, ConstHostView src, Ids idx);
void scatter_add_cols(HostView dst, ConstHostView src, Ids idx, float alpha);
void gather_cols_periodic(HostView dst, ConstHostView src, Ids table, Index period);
void scatter_add_cols_periodic(HostView dst, ConstHostView src, Ids table, Index period, float alpha);
void transpose_blocks(HostView dst, ConstHostView src, Index block_rows, float beta);
void gelu_forward(HostView y, ConstHostView x);
void gelu_backward(HostView dx, ConstHostView dy, ConstHostView x);
void layernorm_forward(HostView y, HostView stats, ConstHostView x, ConstHostView gamma, ConstHostView beta,
                       float eps);
void layernorm_backward(HostView dx, HostView dgamma, HostView dbeta, ConstHostView dy, ConstHostView x,
                        ConstHostView stats, ConstHostView gamma);
void softmax_rows(HostView x);
void softmax_rows_backward(HostView dx, ConstHostView y, ConstHostView dy);
float cross_entropy(HostView dlogits, ConstHostView logits, Ids labels);
void dropout_mask(HostView mask, float p, std::uint64_t seed, std::uint64_t stream, std::uint64_t offset);
double sum_squares(ConstHostView x);
void adamw_step(HostView param, ConstHostView grad, HostView m, HostView v, const AdamWStep& step);
void sgd_step(HostView param, ConstHostView grad, HostView momentum_buffer, const SgdStep& step);
/// cpu::svd's singular values (1 x min(m, n)).
HostMatrix singular_values(ConstHostView a);

}  // namespace plora::test::reference
