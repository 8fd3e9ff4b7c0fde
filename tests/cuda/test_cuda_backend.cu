// Every op of plora::cuda against plora::cpu (compiled separately in
// cpu_reference.cpp) on random inputs. Operands are windows of padded matrices
// (ld = cols + 2), so every op runs on strided views and must leave the padding
// as it was. Then the error paths and the memory pool. Without a usable CUDA
// device the device test cases are skipped and the reason is printed once.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "cpu_reference.hpp"
#include "plora/backend/cuda/cuda.cuh"
#include "support/numeric.hpp"

namespace plora {
namespace {

namespace ref = test::reference;
using test::max_abs_diff;
using test::random_matrix;
using test::relative_error;

/// Whether the device test cases must be skipped; prints the reason once.
bool no_gpu() {
  static const bool missing = [] {
    const std::string reason = cuda::unavailable_reason();
    if (!reason.empty()) std::fprintf(stderr, "[test_cuda] device test cases skipped: %s\n", reason.c_str());
    return !reason.empty();
  }();
  return missing;
}

/// A random matrix in host and device memory, used through the window that
/// leaves one padding column on each side.
struct Twin {
  Twin(Index rows, Index cols, std::uint64_t seed, float low = -1.0f, float high = 1.0f)
      : host(random_matrix(rows, cols + 2, seed, low, high)), device(to_backend<cuda>(host.view())), cols(cols) {}
  HostView h() { return host.view().col_block(1, cols); }
  View<Device> d() { return device.view().col_block(1, cols); }
  /// max |device - host| over the whole padded matrix, relative to max |host|.
  [[nodiscard]] double error() const { return relative_error(to_host<cuda>(device.view()).view(), host.view()); }

  HostMatrix host;
  DeviceMatrix device;
  Index cols;
};

HostMatrix identity(Index n) {
  HostMatrix eye(n, n);
  for (Index i = 0; i < n; ++i) eye(i, i) = 1.0f;
  return eye;
}

// ---- host-only: these run with or without a device ---------------------------

TEST_CASE("a CUDA device is present when PLORA_REQUIRE_GPU is set (scripts/gpu-check sets it)") {
  if (std::getenv("PLORA_REQUIRE_GPU") == nullptr) return;
  CHECK_MESSAGE(!no_gpu(), "PLORA_REQUIRE_GPU is set but: ", cuda::unavailable_reason());
}

TEST_CASE("a math mode scope sets the mode and restores the one before it, nested") {
  REQUIRE(cuda::math_mode() == cuda::MathMode::Fp32);
  {
    const cuda::MathModeScope tf32(cuda::MathMode::Tf32);
    CHECK(cuda::math_mode() == cuda::MathMode::Tf32);
    {
      const cuda::MathModeScope bf16(cuda::MathMode::Bf16);
      CHECK(cuda::math_mode() == cuda::MathMode::Bf16);
    }
    CHECK(cuda::math_mode() == cuda::MathMode::Tf32);
  }
  CHECK(cuda::math_mode() == cuda::MathMode::Fp32);
}

TEST_CASE("failed CUDA, cuBLAS and cuSOLVER statuses become plora::Error naming the call") {
  CHECK_NOTHROW(PLORA_CUDA_CHECK(cudaSuccess));
  CHECK_THROWS_WITH_AS(PLORA_CUDA_CHECK(cudaErrorMemoryAllocation),
                       doctest::Contains("cudaErrorMemoryAllocation failed at"), Error);
  const auto blas_call = [] { return CUBLAS_STATUS_INVALID_VALUE; };
  CHECK_THROWS_WITH_AS(PLORA_CUDA_CHECK(blas_call()), doctest::Contains("blas_call() failed at"), Error);
  const auto solver_call = [] { return CUSOLVER_STATUS_INVALID_VALUE; };
  CHECK_THROWS_WITH_AS(PLORA_CUDA_CHECK(solver_call()), doctest::Contains("invalid argument passed to cuSOLVER"),
                       Error);
}

TEST_CASE("shapes, indices and hyper-parameters are validated on the host before any device work") {
  const View<Device> c{nullptr, 4, 3, 3};
  const ConstView<Device> a{nullptr, 4, 5, 5}, b{nullptr, 6, 3, 3};
  CHECK_THROWS_WITH_AS(cuda::gemm(c, a, Op::N, b, Op::N, 1.0f, 0.0f), doctest::Contains("op(a) is 4 x 5, op(b) is 6 x 3"),
                       ShapeError);
  CHECK_THROWS_AS(cuda::gemm_strided_batched(c, a, Op::N, b, Op::N, 1.0f, 0.0f, 2, 12, 20, 18), ShapeError);
  CHECK_THROWS_AS(cuda::gemm_strided_batched(c, a, Op::N, b, Op::N, 1.0f, 0.0f, 0, 12, 20, 18), ShapeError);
  CHECK_THROWS_AS(cuda::axpy(c, 1.0f, a), ShapeError);
  CHECK_THROWS_AS(cuda::dropout_mask(c, 1.0f, 1, 2, 3), ValueError);
  CHECK_THROWS_AS(DeviceMatrix(-1, 3), ShapeError);
  const Index big = Index{1} << 32;  // 2^64 elements: would wrap to an empty buffer
  CHECK_THROWS_WITH_AS(DeviceMatrix(big, big), doctest::Contains("4294967296 x 4294967296"), ShapeError);
  // Empty matrices and index lists need no device memory.
  const DeviceMatrix empty(0, 7);
  CHECK(empty.data() == nullptr);
  CHECK(empty.view().cols == 7);
  const auto no_ids = cuda::make_indices({});
  CHECK(no_ids.size() == 0);
  CHECK_THROWS_WITH_AS(cuda::gather_rows(c, a, no_ids), doctest::Contains("0 indices for 4 slots"), ShapeError);
}

TEST_CASE("the memory pool rounds requests up to its buckets") {
  using detail::cuda::DevicePool;
  CHECK(DevicePool::bucket_size(1) == 512);
  CHECK(DevicePool::bucket_size(512) == 512);
  CHECK(DevicePool::bucket_size(513) == 1024);
  CHECK(DevicePool::bucket_size((std::size_t{1} << 20) - 1) == std::size_t{1} << 20);
  CHECK(DevicePool::bucket_size(std::size_t{1} << 20) == std::size_t{2} << 20);
  CHECK(DevicePool::bucket_size((std::size_t{2} << 20) + 1) == std::size_t{4} << 20);
}

// ---- device test cases -------------------------------------------------------
// Tolerances: single fp32 operations may differ from the CPU's by the one
// rounding that nvcc's fused multiply-add saves (~1e-7 relative), so 1e-6;
// erff / expf are within 2 ulp on the device, so 2e-6; reductions of a few
// hundred O(1) terms summed in another order stay far below 1e-5.

TEST_CASE("fp32 gemm matches cpu for every transpose combination, alpha and beta" * doctest::skip(no_gpu())) {
  const Index m = 33, n = 47, k = 256;
  for (const Op op_a : {Op::N, Op::T})
    for (const Op op_b : {Op::N, Op::T}) {
      CAPTURE(static_cast<int>(op_a));
      CAPTURE(static_cast<int>(op_b));
      Twin a = op_a == Op::N ? Twin(m, k, 1) : Twin(k, m, 1);
      Twin b = op_b == Op::N ? Twin(k, n, 2) : Twin(n, k, 2);
      Twin c(m, n, 3);
      cuda::gemm(c.d(), a.d(), op_a, b.d(), op_b, 0.5f, 2.0f);
      ref::gemm(c.h(), a.h(), op_a, b.h(), op_b, 0.5f, 2.0f);
      // 256-term fp32 dot products summed in different orders: ~sqrt(k) eps
      // relative, i.e. ~1e-6; 1e-5 also rules out any TF32 rounding (~1e-3).
      CHECK(c.error() < 1e-5);
    }
  // k = 0: no products, c = beta * c (and c = 0 for beta = 0).
  for (const float beta : {3.0f, 0.0f}) {
    Twin a(4, 0, 4), b(0, 5, 5), c(4, 5, 6);
    cuda::gemm(c.d(), a.d(), Op::N, b.d(), Op::N, 1.0f, beta);
    ref::gemm(c.h(), a.h(), Op::N, b.h(), Op::N, 1.0f, beta);
    CHECK(c.error() == 0.0);
  }
}

TEST_CASE("strided batched gemm matches cpu" * doctest::skip(no_gpu())) {
  const Index batch = 3, m = 8, n = 12, k = 16;
  Twin a(batch * m, k, 7), b(batch * n, k, 8), c(batch * m, n, 9);
  const Index stride_a = m * a.d().ld, stride_b = n * b.d().ld, stride_c = m * c.d().ld;
  cuda::gemm_strided_batched(c.d().row_block(0, m), a.d().row_block(0, m), Op::N, b.d().row_block(0, n), Op::T, 1.5f,
                             0.5f, batch, stride_c, stride_a, stride_b);
  ref::gemm_strided_batched(c.h().row_block(0, m), a.h().row_block(0, m), Op::N, b.h().row_block(0, n), Op::T, 1.5f,
                            0.5f, batch, stride_c, stride_a, stride_b);
  CHECK(c.error() < 1e-5);
}

TEST_CASE("TF32 and BF16 math modes stay within their input rounding" * doctest::skip(no_gpu())) {
  const Index m = 128, n = 96, k = 256;
  Twin a(m, k, 10), b(n, k, 11);
  HostMatrix expected(m, n);
  ref::gemm(expected.view(), a.h(), Op::N, b.h(), Op::T, 1.0f, 0.0f);
  const auto run = [&](cuda::MathMode mode) {
    const cuda::MathModeScope scope(mode);
    CHECK(cuda::math_mode() == mode);
    DeviceMatrix c(m, n);
    cuda::gemm(c.view(), a.d(), Op::N, b.d(), Op::T, 1.0f, 0.0f);
    return relative_error(to_host<cuda>(c.view()).view(), expected.view());
  };
  // With u the unit roundoff of the input format, each product a_i b_i is off
  // by <= 2u relative, so |error| <= 2u sum_i |a_i b_i| ~ 2u k / 4 = 128u, while
  // max |c| ~ 4 sqrt(k / 9) ~ 21 (U(-1, 1) inputs). Worst cases:
  // TF32 (10 mantissa bits, u <= 2^-10): 6e-3.
  CHECK(run(cuda::MathMode::Tf32) < 1e-2);
  // BF16 (7 mantissa bits, u = 2^-8): 2.4e-2; typical errors are ~sqrt(k) times smaller.
  CHECK(run(cuda::MathMode::Bf16) < 3e-2);
  CHECK(run(cuda::MathMode::Fp32) < 1e-5);
  CHECK(cuda::math_mode() == cuda::MathMode::Fp32);
}

TEST_CASE("copy, fill and the elementwise, row-vector and column ops match cpu" * doctest::skip(no_gpu())) {
  Twin x(37, 300, 12), y(37, 300, 13), bias(1, 300, 14, 0.5f, 1.5f);
  cuda::axpy(y.d(), -0.75f, x.d());
  ref::axpy(y.h(), -0.75f, x.h());
  CHECK(y.error() < 1e-6);
  cuda::mul(y.d(), x.d());
  ref::mul(y.h(), x.h());
  CHECK(y.error() < 1e-6);
  cuda::scale(y.d(), 3.0f);
  ref::scale(y.h(), 3.0f);
  CHECK(y.error() < 1e-6);
  cuda::add_row_vector(y.d(), bias.d());
  ref::add_row_vector(y.h(), bias.h());
  CHECK(y.error() < 1e-6);
  // linear: the bias on every row of a product that overwrites z (fp32 sums of 40 terms).
  Twin z(37, 300, 16), input(37, 40, 17), weight(300, 40, 18);
  cuda::linear(z.d(), input.d(), weight.d(), bias.d());
  ref::linear(z.h(), input.h(), weight.h(), bias.h());
  CHECK(z.error() < 1e-5);
  // With a residual (x), and with the GELU after.
  cuda::linear(z.d(), input.d(), weight.d(), bias.d(), x.d());
  ref::linear(z.h(), input.h(), weight.h(), bias.h(), x.h());
  CHECK(z.error() < 1e-5);
  Twin activation(37, 300, 19);
  cuda::linear_gelu(z.d(), activation.d(), input.d(), weight.d(), bias.d());
  ref::linear_gelu(z.h(), activation.h(), input.h(), weight.h(), bias.h());
  CHECK(z.error() < 1e-5);
  CHECK(activation.error() < 1e-5);
  cuda::scale_cols(y.d(), bias.d());
  ref::scale_cols(y.h(), bias.h());
  CHECK(y.error() < 1e-6);
  Twin sums(1, 300, 15);
  cuda::column_sums(sums.d(), y.d(), 0.5f);
  ref::column_sums(sums.h(), y.h(), 0.5f);
  CHECK(sums.error() < 1e-5);
  cuda::copy(x.d(), y.d());
  ref::copy(x.h(), y.h());
  CHECK(x.error() == 0.0);
  cuda::fill(x.d(), 2.5f);
  ref::fill(x.h(), 2.5f);
  CHECK(x.error() == 0.0);
  CHECK_THROWS_AS(cuda::upload(x.d(), y.host.view()), ShapeError);
}

TEST_CASE("gathers and scatter-adds match cpu; repeated indices accumulate; bad indices throw" *
          doctest::skip(no_gpu())) {
  Twin src(9, 20, 16);
  const std::vector<std::int32_t> row_ids{7, 0, 3, 3};
  const auto rows = cuda::make_indices(row_ids);
  Twin gathered(4, 20, 17);
  cuda::gather_rows(gathered.d(), src.d(), rows);
  ref::gather_rows(gathered.h(), src.h(), row_ids);
  CHECK(gathered.error() == 0.0);
  Twin acc(9, 20, 18);
  cuda::scatter_add_rows(acc.d(), gathered.d(), rows, -1.5f);
  ref::scatter_add_rows(acc.h(), gathered.h(), row_ids, -1.5f);
  CHECK(acc.error() < 1e-6);

  const std::vector<std::int32_t> col_ids{19, 2, 2, 5, 0};
  const auto cols = cuda::make_indices(col_ids);
  Twin gathered_cols(9, 5, 19);
  cuda::gather_cols(gathered_cols.d(), src.d(), cols);
  ref::gather_cols(gathered_cols.h(), src.h(), col_ids);
  CHECK(gathered_cols.error() == 0.0);
  Twin acc_cols(9, 20, 20);
  cuda::scatter_add_cols(acc_cols.d(), gathered_cols.d(), cols, 0.5f);
  ref::scatter_add_cols(acc_cols.h(), gathered_cols.h(), col_ids, 0.5f);
  CHECK(acc_cols.error() < 1e-6);

  const auto out_of_range = cuda::make_indices(std::vector<std::int32_t>{0, 9, 1, 2});
  CHECK_THROWS_WITH_AS(cuda::gather_rows(gathered.d(), src.d(), out_of_range),
                       doctest::Contains("index 9 is outside [0, 9)"), ShapeError);
  const auto negative = cuda::make_indices(std::vector<std::int32_t>{0, 1, 2, 3, -1});
  CHECK_THROWS_AS(cuda::scatter_add_cols(acc_cols.d(), gathered_cols.d(), negative, 1.0f), ShapeError);
  CHECK_THROWS_AS(cuda::gather_cols(gathered_cols.d(), src.d(), rows), ShapeError);  // 4 indices for 5 columns
}

TEST_CASE("periodic gathers, scatter-adds and block transposes match cpu" * doctest::skip(no_gpu())) {
  // 12 rows cycling through 3 index lists of 4 (repeats accumulate in the scatter).
  Twin src(12, 20, 41);
  const std::vector<std::int32_t> table_ids{19, 19, 0, 7, 3, 2, 1, 0, 5, 5, 5, 5};
  const auto table = cuda::make_indices(table_ids);
  Twin gathered(12, 4, 42);
  cuda::gather_cols_periodic(gathered.d(), src.d(), table, 3);
  ref::gather_cols_periodic(gathered.h(), src.h(), table_ids, 3);
  CHECK(gathered.error() == 0.0);
  Twin acc(12, 20, 43);
  cuda::scatter_add_cols_periodic(acc.d(), gathered.d(), table, 3, 0.5f);
  ref::scatter_add_cols_periodic(acc.h(), gathered.h(), table_ids, 3, 0.5f);
  CHECK(acc.error() < 1e-6);  // at most 5 terms of size <= 1: a few roundings in another order
  CHECK_THROWS_AS(cuda::gather_cols_periodic(gathered.d(), src.d(), table, 4), ShapeError);

  // Three blocks of 4 x 6 rows and their transposes, overwritten (beta 0) and accumulated.
  Twin blocks(12, 6, 44), transposed(18, 4, 45);
  cuda::transpose_blocks(transposed.d(), blocks.d(), 4, 0.0f);
  ref::transpose_blocks(transposed.h(), blocks.h(), 4, 0.0f);
  CHECK(transposed.error() == 0.0);
  cuda::transpose_blocks(transposed.d(), blocks.d(), 4, 0.5f);
  ref::transpose_blocks(transposed.h(), blocks.h(), 4, 0.5f);
  CHECK(transposed.error() < 1e-6);  // one multiply-add, fused or not
  CHECK_THROWS_AS(cuda::transpose_blocks(transposed.d(), blocks.d(), 5, 0.0f), ShapeError);
}

TEST_CASE("gelu forward and backward match cpu" * doctest::skip(no_gpu())) {
  Twin x(16, 257, 21, -5.0f, 5.0f), dy(16, 257, 22), y(16, 257, 23), dx(16, 257, 24);
  cuda::gelu_forward(y.d(), x.d());
  ref::gelu_forward(y.h(), x.h());
  CHECK(y.error() < 2e-6);
  cuda::gelu_backward(dx.d(), dy.d(), x.d());
  ref::gelu_backward(dx.h(), dy.h(), x.h());
  CHECK(dx.error() < 2e-6);
}

TEST_CASE("layernorm forward and backward match cpu, with and without parameter gradients" *
          doctest::skip(no_gpu())) {
  const Index rows = 37, cols = 300;  // 300 columns: some threads of a 256-thread block take two
  Twin x(rows, cols, 25, -2.0f, 2.0f), gamma(1, cols, 26, 0.5f, 1.5f), beta(1, cols, 27), y(rows, cols, 28),
      stats(rows, 2, 29);
  cuda::layernorm_forward(y.d(), stats.d(), x.d(), gamma.d(), beta.d(), 1e-5f);
  ref::layernorm_forward(y.h(), stats.h(), x.h(), gamma.h(), beta.h(), 1e-5f);
  CHECK(y.error() < 1e-5);
  CHECK(stats.error() < 1e-5);

  Twin dy(rows, cols, 30), dx(rows, cols, 31), dgamma(1, cols, 32), dbeta(1, cols, 33);
  cuda::layernorm_backward(dx.d(), dgamma.d(), dbeta.d(), dy.d(), x.d(), stats.d(), gamma.d());
  ref::layernorm_backward(dx.h(), dgamma.h(), dbeta.h(), dy.h(), x.h(), stats.h(), gamma.h());
  CHECK(dx.error() < 1e-5);
  CHECK(dgamma.error() < 1e-5);  // accumulated onto random initial values
  CHECK(dbeta.error() < 1e-5);

  Twin frozen_dx(rows, cols, 34);
  cuda::layernorm_backward(frozen_dx.d(), View<Device>{}, View<Device>{}, dy.d(), x.d(), stats.d(), gamma.d());
  ref::layernorm_backward(frozen_dx.h(), HostView{}, HostView{}, dy.h(), x.h(), stats.h(), gamma.h());
  CHECK(frozen_dx.error() < 1e-5);
  CHECK_THROWS_AS(cuda::layernorm_forward(y.d(), stats.d(), x.d(), gamma.d().col_block(0, 10), beta.d(), 1e-5f),
                  ShapeError);
}

TEST_CASE("softmax rows and their backward match cpu" * doctest::skip(no_gpu())) {
  Twin x(19, 1000, 35, -8.0f, 8.0f), dy(19, 1000, 36), dx(19, 1000, 37);
  cuda::softmax_rows(x.d());
  ref::softmax_rows(x.h());
  CHECK(x.error() < 1e-5);
  cuda::softmax_rows_backward(dx.d(), x.d(), dy.d());
  ref::softmax_rows_backward(dx.h(), x.h(), dy.h());
  CHECK(dx.error() < 1e-5);
}

TEST_CASE("attention and its backward match cpu, every query or the first token's, with and without a mask" *
          doctest::skip(no_gpu())) {
  const Index batch = 3, heads = 4, d = 8, tokens = 21;
  Twin k(batch * tokens, heads * d, 50), v(batch * tokens, heads * d, 51), mask(batch, tokens, 52, -4.0f, 0.0f);
  for (const Index queries : {tokens, Index{1}}) {
    CAPTURE(queries);
    Twin q(batch * queries, heads * d, 53), probs(batch * heads * queries, tokens, 54),
        context(batch * queries, heads * d, 55);
    for (const bool masked : {false, true}) {
      const ConstView<Device> device_mask = masked ? mask.d() : ConstView<Device>{};
      cuda::attention(probs.d(), context.d(), q.d(), k.d(), v.d(), device_mask, heads, 0.35f);
      ref::attention(probs.h(), context.h(), q.h(), k.h(), v.h(), masked ? mask.h() : ConstHostView{}, heads, 0.35f);
      // Scores are fp32 sums of 8 products; probabilities and their sums of 21 terms within a few ulp.
      CHECK(probs.error() < 1e-5);
      CHECK(context.error() < 1e-5);
    }
    // The backward from the same probabilities: sums of <= 21 products each.
    Twin d_context(batch * queries, heads * d, 56), d_scores(batch * heads * queries, tokens, 57);
    Twin dq(batch * queries, heads * d, 58), dk(batch * tokens, heads * d, 59), dv(batch * tokens, heads * d, 60);
    cuda::attention_backward(dq.d(), dk.d(), dv.d(), d_scores.d(), d_context.d(), probs.d(), q.d(), k.d(), v.d(), heads,
                             0.35f);
    ref::attention_backward(dq.h(), dk.h(), dv.h(), d_scores.h(), d_context.h(), probs.h(), q.h(), k.h(), v.h(), heads,
                            0.35f);
    CHECK(dq.error() < 1e-5);
    CHECK(dk.error() < 1e-5);
    CHECK(dv.error() < 1e-5);
  }
}

TEST_CASE("cross entropy matches cpu and rejects bad labels" * doctest::skip(no_gpu())) {
  Twin logits(23, 10, 38, -3.0f, 3.0f), dlogits(23, 10, 39);
  std::vector<std::int32_t> labels;
  for (std::int32_t r = 0; r < 23; ++r) labels.push_back(r * 7 % 10);
  const float loss = cuda::cross_entropy(dlogits.d(), logits.d(), cuda::make_indices(labels));
  const float expected = ref::cross_entropy(dlogits.h(), logits.h(), labels);
  // Per-row float logs within a few ulp, summed in double.
  CHECK(loss == doctest::Approx(expected).epsilon(1e-6));
  CHECK(dlogits.error() < 2e-6);
  labels[4] = 10;
  CHECK_THROWS_WITH_AS(cuda::cross_entropy(dlogits.d(), logits.d(), cuda::make_indices(labels)),
                       doctest::Contains("label 10 of row 4"), ValueError);
  labels.pop_back();
  CHECK_THROWS_AS(cuda::cross_entropy(dlogits.d(), logits.d(), cuda::make_indices(labels)), ShapeError);
}

TEST_CASE("dropout masks equal cpu's bit for bit" * doctest::skip(no_gpu())) {
  Twin mask(64, 100, 40);
  cuda::dropout_mask(mask.d(), 0.3f, 5, 6, 1000);
  ref::dropout_mask(mask.h(), 0.3f, 5, 6, 1000);
  CHECK(mask.error() == 0.0);
  double dropped = 0;
  for (Index r = 0; r < 64; ++r)
    for (Index c = 0; c < 100; ++c) dropped += mask.h()(r, c) == 0.0f;
  // Binomial(6400, 0.3): std 36.7; 5 sigma.
  CHECK(std::abs(dropped - 1920.0) < 5 * 36.7);
}

TEST_CASE("sum of squares and finiteness match cpu and ignore the padding" * doctest::skip(no_gpu())) {
  Twin x(33, 65, 41);
  // Squares of floats are exact in double; only the summation order differs.
  CHECK(cuda::sum_squares(x.d()) == doctest::Approx(ref::sum_squares(x.h())).epsilon(1e-12));
  CHECK(cuda::all_finite(x.d()));
  x.host(5, 0) = std::numeric_limits<float>::quiet_NaN();  // padding column
  cuda::upload(x.device.view(), x.host.view());
  CHECK(cuda::all_finite(x.d()));
  CHECK(std::isfinite(cuda::sum_squares(x.d())));
  x.host(7, 10) = std::numeric_limits<float>::infinity();  // inside the window
  cuda::upload(x.device.view(), x.host.view());
  CHECK_FALSE(cuda::all_finite(x.d()));
}

TEST_CASE("AdamW and SGD steps match cpu over several steps" * doctest::skip(no_gpu())) {
  Twin param(17, 40, 42), grad(17, 40, 43), m(17, 40, 44), v(17, 40, 45, 0.0f, 1.0f);
  for (int t = 1; t <= 3; ++t) {
    AdamWStep step;
    step.lr = 1e-2f;
    step.weight_decay = 0.01f;
    step.bias_correction1 = 1.0f - std::pow(step.beta1, static_cast<float>(t));
    step.bias_correction2 = 1.0f - std::pow(step.beta2, static_cast<float>(t));
    cuda::adamw_step(param.d(), grad.d(), m.d(), v.d(), step);
    ref::adamw_step(param.h(), grad.h(), m.h(), v.h(), step);
  }
  CHECK(param.error() < 1e-6);
  CHECK(m.error() < 1e-6);
  CHECK(v.error() < 1e-6);

  Twin sgd_param(17, 40, 46), buffer(17, 40, 47);
  for (int t = 1; t <= 3; ++t) {
    SgdStep step;
    step.lr = 0.1f;
    step.momentum = 0.9f;
    step.dampening = 0.1f;
    step.weight_decay = 0.01f;
    step.nesterov = true;
    step.first_step = t == 1;
    cuda::sgd_step(sgd_param.d(), grad.d(), buffer.d(), step);
    ref::sgd_step(sgd_param.h(), grad.h(), buffer.h(), step);
  }
  CHECK(sgd_param.error() < 1e-6);
  CHECK(buffer.error() < 1e-6);
}

TEST_CASE("thin SVD matches cpu's singular values and reconstructs the matrix" * doctest::skip(no_gpu())) {
  for (const auto& [m, n] : {std::pair<Index, Index>{40, 25}, std::pair<Index, Index>{20, 33}}) {
    CAPTURE(m);
    CAPTURE(n);
    Twin a(m, n, 48);
    const Index k = std::min(m, n);
    DeviceMatrix u, s, vt;
    cuda::svd(u, s, vt, a.d());
    REQUIRE(u.rows() == m);
    REQUIRE(u.cols() == k);
    REQUIRE(s.cols() == k);
    REQUIRE(vt.rows() == k);
    REQUIRE(vt.cols() == n);
    const HostMatrix hu = to_host<cuda>(u.view()), hs = to_host<cuda>(s.view()), hvt = to_host<cuda>(vt.view());
    for (Index i = 1; i < k; ++i) CHECK(hs(0, i - 1) >= hs(0, i));
    // Both SVDs are backward stable: errors ~ eps ||a|| times a modest factor
    // of the dimension (~1e-6 here); 2e-5 leaves an order of magnitude.
    CHECK(relative_error(hs.view(), ref::singular_values(a.h()).view()) < 2e-5);
    HostMatrix us = hu, back(m, n), utu(k, k), vvt(k, k);
    ref::scale_cols(us.view(), hs.view());
    ref::gemm(back.view(), us.view(), Op::N, hvt.view(), Op::N, 1.0f, 0.0f);
    CHECK(relative_error(back.view(), HostMatrix(a.h()).view()) < 2e-5);
    ref::gemm(utu.view(), hu.view(), Op::T, hu.view(), Op::N, 1.0f, 0.0f);
    ref::gemm(vvt.view(), hvt.view(), Op::N, hvt.view(), Op::T, 1.0f, 0.0f);
    CHECK(max_abs_diff(utu.view(), identity(k).view()) < 2e-5);
    CHECK(max_abs_diff(vvt.view(), identity(k).view()) < 2e-5);
    // The input may view an output (as on the CPU): the pool must not hand its
    // block to the working copy before it is read.
    DeviceMatrix in_u = to_backend<cuda>(HostMatrix(a.h()).view()), alias_s, alias_vt;
    cuda::svd(in_u, alias_s, alias_vt, in_u.view());
    CHECK(relative_error(to_host<cuda>(alias_s.view()).view(), hs.view()) < 2e-5);
  }
  DeviceMatrix u, s, vt;
  const DeviceMatrix empty(0, 5);
  cuda::svd(u, s, vt, empty.view());
  CHECK(s.cols() == 0);
  CHECK(vt.cols() == 5);
}

TEST_CASE("the memory pool hands a freed block out again and reports out-of-memory clearly" *
          doctest::skip(no_gpu())) {
  const std::size_t bucket = detail::cuda::DevicePool::bucket_size(100 * 100 * sizeof(float));
  const auto before = cuda::memory_stats();
  const float* first = nullptr;
  {
    const DeviceMatrix block(100, 100);
    first = block.data();
    CHECK(cuda::memory_stats().bytes_in_use == before.bytes_in_use + bucket);
  }
  CHECK(cuda::memory_stats().bytes_in_use == before.bytes_in_use);
  CHECK(cuda::memory_stats().bytes_cached >= bucket);
  const DeviceMatrix again(100, 100);
  CHECK(again.data() == first);  // the free lists are last in, first out
  cuda::release_cached_memory();
  CHECK(cuda::memory_stats().bytes_cached == 0);

  const Index huge = Index{1} << 22;  // (2^22)^2 floats: 64 TiB
  CHECK_THROWS_WITH_AS(DeviceMatrix(huge, huge),
                       doctest::Contains("out of device memory: requested 70368744177664 bytes"), Error);
  // The failed request leaves the device usable.
  DeviceMatrix after(4, 4);
  cuda::fill(after.view(), 1.0f);
  CHECK(cuda::sum_squares(after.view()) == 16.0);
}

TEST_CASE("the memory pool's peak is the most bytes live at once since its reset" * doctest::skip(no_gpu())) {
  const std::size_t small = detail::cuda::DevicePool::bucket_size(100 * 100 * sizeof(float));
  const std::size_t large = detail::cuda::DevicePool::bucket_size(1000 * 1000 * sizeof(float));
  cuda::reset_peak_memory();
  const std::size_t base = cuda::memory_stats().bytes_in_use;
  CHECK(cuda::memory_stats().peak_bytes_in_use == base);
  {
    const DeviceMatrix a(100, 100);
    {
      const DeviceMatrix b(1000, 1000);  // a and b live together: the peak
    }
    const DeviceMatrix c(100, 100);  // a and c: below the peak
    CHECK(cuda::memory_stats().bytes_in_use == base + 2 * small);
  }
  CHECK(cuda::memory_stats().bytes_in_use == base);
  CHECK(cuda::memory_stats().peak_bytes_in_use == base + small + large);
  cuda::reset_peak_memory();
  CHECK(cuda::memory_stats().peak_bytes_in_use == base);
}

}  // namespace
}  // namespace plora
