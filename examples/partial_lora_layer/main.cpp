// Partial-LoRA on one frozen linear layer: fit y = x (W + ΔW*)^T, where ΔW* is
// a rank-4 update living on the kept rows and columns of a random mask at
// ratio 0.25, and print the loss curve. See README.md.
#include <cstdio>

#include "plora/adapters/partial.hpp"
#include "plora/backend/cpu/cpu.hpp"
#include "plora/masks/bernoulli.hpp"
#include "plora/nn/linear_site.hpp"
#include "plora/train/adamw.hpp"

using namespace plora;
using Site = LinearSite<cpu, PartialLora<cpu>>;

int main() {
  const Index out = 32, in = 64, n = 256, rank = 4;
  RandomStream rng(7, 0);
  const auto random = [&](Index rows, Index cols, float std) {
    HostMatrix m(rows, cols);
    for (float& v : m.values()) v = std * rng.normal();
    return m;
  };
  const HostMatrix w = random(out, in, 0.1f), x = random(n, in, 1.0f);
  // Rows and columns are each kept with probability sqrt(0.25) = 0.5.
  const RowColMask mask = PartialMask{}.sample({.out = out, .in = in, .ratio = 0.25, .seed = 1});
  const PartialConfig<Lora<cpu>> config{{.rank = rank, .alpha = 8.0f}, mask.rows, mask.cols};

  Site teacher("teacher", w, HostMatrix());  // W + ΔW*: a partial adapter with a random B
  teacher.attach(PartialLora<cpu>(out, in, config, RandomStream(2, 0)));
  cpu::copy(teacher.adapter().inner().lora_B(), random(static_cast<Index>(mask.rows.size()), rank, 0.5f).view());
  HostMatrix y(n, out), prediction(n, out), dy(n, out);
  Site::Saved saved;
  teacher.forward(y.view(), x.view(), saved);

  Site layer("layer", w, HostMatrix());  // W frozen; only B_R (|R| x r) and A_C (r x |C|) train
  layer.attach(PartialLora<cpu>(out, in, config, RandomStream(3, 0)));
  AdamW<cpu> adam({.lr = 1e-2, .weight_decay = 0.0});
  ParameterList<Host> params = layer.adapter().parameters();
  for (int step = 0; step <= 200; ++step) {
    layer.adapter().zero_grad();
    layer.forward(prediction.view(), x.view(), saved);
    double loss = 0.0;  // mean squared error and its gradient
    for (Index i = 0; i < n * out; ++i) {
      const float d = prediction.data()[i] - y.data()[i];
      loss += double(d) * d / double(n * out);
      dy.data()[i] = 2.0f * d / static_cast<float>(n * out);
    }
    layer.backward(HostView{}, dy.view(), x.view(), saved);  // no dx needed: the input is data
    adam.step(params);
    if (step % 20 == 0) std::printf("step %3d  mse %.3e\n", step, loss);
  }
  std::printf("kept %zu of %lld rows, %zu of %lld columns: %lld trainable parameters (dense LoRA: %lld)\n",
              mask.rows.size(), static_cast<long long>(out), mask.cols.size(), static_cast<long long>(in),
              static_cast<long long>(layer.adapter().trainable_count()), static_cast<long long>(rank * (out + in)));
}
