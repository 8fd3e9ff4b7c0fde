// The g++ side of the CUDA test: plain forwards to plora::cpu (Eigen).
#include "cpu_reference.hpp"

#include "plora/backend/cpu/cpu.hpp"

namespace plora::test::reference {

void gemm(HostView c, ConstHostView a, Op op_a, ConstHostView b, Op op_b, float alpha, float beta) {
  cpu::gemm(c, a, op_a, b, op_b, alpha, beta);
}
void gemm_strided_batched(HostView c, ConstHostView a, Op op_a, ConstHostView b, Op op_b, float alpha, float beta,
                          Index batch, Index stride_c, Index stride_a, Index stride_b) {
  cpu::gemm_strided_batched(c, a, op_a, b, op_b, alpha, beta, batch, stride_c, stride_a, stride_b);
}
void copy(HostView dst, ConstHostView src) { cpu::copy(dst, src); }
void fill(HostView x, float value) { cpu::fill(x, value); }
void axpy(HostView y, float alpha, ConstHostView x) { cpu::axpy(y, alpha, x); }
void scale(HostView x, float alpha) { cpu::scale(x, alpha); }
void mul(HostView y, ConstHostView x) { cpu::mul(y, x); }
void add_row_vector(HostView x, ConstHostView bias) { cpu::add_row_vector(x, bias); }
void linear(HostView y, ConstHostView x, ConstHostView w, ConstHostView bias, ConstHostView residual) {
  cpu::linear(y, x, w, bias, residual);
}
void linear_gelu(HostView pre, HostView act, ConstHostView x, ConstHostView w, ConstHostView bias) {
  cpu::linear_gelu(pre, act, x, w, bias);
}
void attention(HostView probs, HostView context, ConstHostView q, ConstHostView k, ConstHostView v,
               ConstHostView mask, Index heads, float scale) {
  cpu::attention(probs, context, q, k, v, mask, heads, scale);
}
void attention_backward(HostView d_query, HostView d_key, HostView d_value, HostView d_scores, ConstHostView d_context,
                        ConstHostView probs, ConstHostView q, ConstHostView k, ConstHostView v, Index heads,
                        float scale) {
  cpu::attention_backward(d_query, d_key, d_value, d_scores, d_context, probs, q, k, v, heads, scale);
}
void scale_cols(HostView x, ConstHostView s) { cpu::scale_cols(x, s); }
void column_sums(HostView out, ConstHostView x, float beta) { cpu::column_sums(out, x, beta); }
void gather_rows(HostView dst, ConstHostView src, Ids idx) { cpu::gather_rows(dst, src, cpu::make_indices(idx)); }
void scatter_add_rows(HostView dst, ConstHostView src, Ids idx, float alpha) {
  cpu::scatter_add_rows(dst, src, cpu::make_indices(idx), alpha);
}
void gather_cols(HostView dst, ConstHostView src, Ids idx) { cpu::gather_cols(dst, src, cpu::make_indices(idx)); }
void scatter_add_cols(HostView dst, ConstHostView src, Ids idx, float alpha) {
  cpu::scatter_add_cols(dst, src, cpu::make_indices(idx), alpha);
}
void gather_cols_periodic(HostView dst, ConstHostView src, Ids table, Index period) {
  cpu::gather_cols_periodic(dst, src, cpu::make_indices(table), period);
}
void scatter_add_cols_periodic(HostView dst, ConstHostView src, Ids table, Index period, float alpha) {
  cpu::scatter_add_cols_periodic(dst, src, cpu::make_indices(table), period, alpha);
}
void transpose_blocks(HostView dst, ConstHostView src, Index block_rows, float beta) {
  cpu::transpose_blocks(dst, src, block_rows, beta);
}
void gelu_forward(HostView y, ConstHostView x) { cpu::gelu_forward(y, x); }
void gelu_backward(HostView dx, ConstHostView dy, ConstHostView x) { cpu::gelu_backward(dx, dy, x); }
void layernorm_forward(HostView y, HostView stats, ConstHostView x, ConstHostView gamma, ConstHostView beta,
                       float eps) {
  cpu::layernorm_forward(y, stats, x, gamma, beta, eps);
}
void layernorm_backward(HostView dx, HostView dgamma, HostView dbeta, ConstHostView dy, ConstHostView x,
                        ConstHostView stats, ConstHostView gamma) {
  cpu::layernorm_backward(dx, dgamma, dbeta, dy, x, stats, gamma);
}
void softmax_rows(HostView x) { cpu::softmax_rows(x); }
void softmax_rows_backward(HostView dx, ConstHostView y, ConstHostView dy) { cpu::softmax_rows_backward(dx, y, dy); }
float cross_entropy(HostView dlogits, ConstHostView logits, Ids labels) {
  return cpu::cross_entropy(dlogits, logits, cpu::make_indices(labels));
}
void dropout_mask(HostView mask, float p, std::uint64_t seed, std::uint64_t stream, std::uint64_t offset) {
  cpu::dropout_mask(mask, p, seed, stream, offset);
}
double sum_squares(ConstHostView x) { return cpu::sum_squares(x); }
void adamw_step(HostView param, ConstHostView grad, HostView m, HostView v, const AdamWStep& step) {
  cpu::adamw_step(param, grad, m, v, step);
}
void sgd_step(HostView param, ConstHostView grad, HostView momentum_buffer, const SgdStep& step) {
  cpu::sgd_step(param, grad, momentum_buffer, step);
}
HostMatrix singular_values(ConstHostView a) {
  HostMatrix u, s, vt;
  cpu::svd(u, s, vt, a);
  return s;
}

}  // namespace plora::test::reference
