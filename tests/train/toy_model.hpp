#pragma once
// A toy Model for the trainer tests: linear regression through one frozen
// LinearSite with a LoRA adapter, loss 0.5 * mean over rows of |x W'^T + b - y|^2,
// and a BatchSource whose batch order is a seeded permutation per epoch.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "plora/adapters/lora.hpp"
#include "plora/backend/cpu/cpu.hpp"
#include "plora/models/concepts.hpp"
#include "plora/nn/linear_site.hpp"
#include "plora/train/concepts.hpp"
#include "support/numeric.hpp"

namespace plora::test {

struct ToyBatch {
  HostMatrix x;  // (rows, in)
  HostMatrix y;  // (rows, out)
  [[nodiscard]] Index size() const { return x.rows(); }
};

inline constexpr Index kToyIn = 6, kToyOut = 3;

class ToyModel {
 public:
  using BackendType = cpu;
  using Batch = ToyBatch;
  using Site = LinearSite<cpu, Lora<cpu>>;

  /// W and b from `seed`; LoRA of `rank` with input dropout `dropout`.
  explicit ToyModel(std::uint64_t seed, Index rank = 2, float dropout = 0.0f)
      : site_("toy.proj", random_matrix(kToyOut, kToyIn, seed, -0.5f, 0.5f, 1),
              random_matrix(1, kToyOut, seed, -0.1f, 0.1f, 2)) {
    site_.attach(Lora<cpu>(kToyOut, kToyIn, {.rank = rank, .alpha = 2.0f, .use_rslora = false, .dropout = dropout},
                           RandomStream(seed, 3)));
  }

  ConstHostView forward(const ToyBatch& batch) {
    pred_ = HostMatrix(batch.x.rows(), kToyOut);
    site_.forward(pred_.view(), batch.x.view(), saved_);
    return pred_.view();
  }
  float forward_backward(const ToyBatch& batch) {
    forward(batch);
    const Index rows = batch.x.rows();
    HostMatrix dpred(rows, kToyOut);
    double loss = 0.0;
    for (Index r = 0; r < rows; ++r)
      for (Index c = 0; c < kToyOut; ++c) {
        const float diff = pred_(r, c) - batch.y(r, c);
        loss += 0.5 * double(diff) * diff;
        dpred(r, c) = diff / static_cast<float>(rows);
      }
    site_.backward(HostView{}, dpred.view(), batch.x.view(), saved_);
    return static_cast<float>(loss / static_cast<double>(rows));
  }
  ParameterList<Host> parameters() {
    ParameterList<Host> out;
    append_parameters(out, site_.name(), site_.adapter().parameters());
    return out;
  }
  void zero_grad() { site_.adapter().zero_grad(); }
  void set_training(bool training) { site_.adapter().set_training(training); }
  [[nodiscard]] std::vector<std::string> site_names() const { return {site_.name()}; }
  Site& site(const std::string& name) {
    check<ValueError>(name == site_.name(), "ToyModel: no site '", name, "'");
    return site_;
  }
  Lora<cpu>& adapter() { return site_.adapter(); }

 private:
  Site site_;
  Site::Saved saved_;
  HostMatrix pred_;
};

/// `batches` batches of `rows` examples of y = x (W + ΔW*)^T + b, with W, b
/// those of ToyModel(model_seed) and a rank-1 ΔW* a rank-2 LoRA can fit.
class ToySource {
 public:
  using Batch = ToyBatch;

  ToySource(std::uint64_t model_seed, std::uint64_t data_seed, Index batches, Index rows)
      : data_seed_(data_seed),
        batches_(batches),
        rows_(rows),
        x_(random_matrix(batches * rows, kToyIn, data_seed, -1.0f, 1.0f, 10)),
        y_(batches * rows, kToyOut) {
    const HostMatrix w = random_matrix(kToyOut, kToyIn, model_seed, -0.5f, 0.5f, 1);
    const HostMatrix b = random_matrix(1, kToyOut, model_seed, -0.1f, 0.1f, 2);
    const HostMatrix u = random_matrix(kToyOut, 1, data_seed, -1.0f, 1.0f, 11);
    const HostMatrix v = random_matrix(1, kToyIn, data_seed, -1.0f, 1.0f, 12);
    for (Index n = 0; n < x_.rows(); ++n)
      for (Index o = 0; o < kToyOut; ++o) {
        double acc = b(0, o);
        for (Index i = 0; i < kToyIn; ++i) acc += double(x_(n, i)) * (w(o, i) + u(o, 0) * v(0, i));
        y_(n, o) = static_cast<float>(acc);
      }
  }

  [[nodiscard]] Index batches_per_epoch() const { return batches_; }
  /// Batch i of the epoch's permutation of the batches (seeded by (data seed, epoch)).
  [[nodiscard]] ToyBatch batch(Index epoch, Index i) const {
    std::vector<Index> order(static_cast<std::size_t>(batches_));
    std::iota(order.begin(), order.end(), Index{0});
    RandomStream shuffle(data_seed_, 1000 + static_cast<std::uint64_t>(epoch));
    for (Index k = batches_ - 1; k > 0; --k)
      std::swap(order[static_cast<std::size_t>(k)],
                order[static_cast<std::size_t>(shuffle.below(static_cast<std::uint32_t>(k + 1)))]);
    const Index first = order[static_cast<std::size_t>(i)] * rows_;
    return {HostMatrix(x_.view().row_block(first, rows_)), HostMatrix(y_.view().row_block(first, rows_))};
  }

 private:
  std::uint64_t data_seed_;
  Index batches_, rows_;
  HostMatrix x_, y_;
};

static_assert(Model<ToyModel>);
static_assert(BatchSource<ToySource>);

}  // namespace plora::test
