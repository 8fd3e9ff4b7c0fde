#pragma once
// Model-level scenarios for the CUDA-vs-CPU equivalence test. Each scenario is
// a template over the backend defined once here: test_cuda_models.cu (nvcc)
// instantiates it with plora::cuda, models_cpu_reference.cpp (g++, Eigen) with
// plora::cpu, and the CPU results cross the translation-unit boundary as named
// host tensors (reference:: below). Checkpoint fixtures are read in the g++ TU
// only and handed over as host matrices, so the nvcc TU needs no io/ headers.
//
// Everything that is random (inputs, adapter factors, masks) is drawn on the
// host from fixed seeds, so both backends start from identical values.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "plora/adapters/adapters.hpp"
#include "plora/backend/concepts.hpp"
#include "plora/masks/masks.hpp"
#include "plora/models/batches.hpp"
#include "plora/models/deberta_v2.hpp"
#include "plora/models/sites.hpp"
#include "plora/models/vit.hpp"
#include "plora/nn/attention.hpp"
#include "plora/nn/layernorm.hpp"
#include "plora/nn/linear_site.hpp"
#include "plora/nn/mlp.hpp"
#include "plora/sparsity/extract.hpp"
#include "plora/sparsity/svd.hpp"
#include "plora/train/adamw.hpp"
#include "plora/train/trainer.hpp"
#include "support/numeric.hpp"

namespace plora::test::models {

/// Named results of one scenario run, copied to the host.
using Tensors = std::map<std::string, HostMatrix>;
/// Frozen weights by Hugging Face key.
using Weights = std::map<std::string, HostMatrix>;

/// tests/data/vit_a as host data.
struct VitFixture {
  ViTConfig config;
  Weights weights;   ///< every tensor the Vit constructor asks for
  ImageBatch batch;  ///< the fixture's images and labels
  HostMatrix logits; ///< transformers' logits of `batch`
  ImageBatch shots;  ///< random images labelled with the CPU model's predictions (metric M0 = 1)
};

/// tests/data/deberta_rel.* as host data.
struct DebertaFixture {
  DebertaV2Config config;
  Weights weights;  ///< the checkpoint's tensors the model asked for; absent ones stay absent
  TokenBatch batch;
  HostMatrix logits;  ///< transformers' logits of `batch`
  std::vector<std::string> lora_targets;
};

/// A BatchSource over fixed batches (the trainer's data, the few-shot set).
template <class BatchType>
struct FixedBatches {
  using Batch = BatchType;
  std::vector<Batch> batches;
  [[nodiscard]] Index batches_per_epoch() const { return static_cast<Index>(batches.size()); }
  [[nodiscard]] Batch batch(Index /*epoch*/, Index i) const { return batches[static_cast<std::size_t>(i)]; }
};

/// The CPU side, compiled by g++ in models_cpu_reference.cpp.
namespace reference {
VitFixture load_vit_fixture();
DebertaFixture load_deberta_fixture();
/// Logits of the fixtures' batches without adapters (comparable with transformers').
HostMatrix vit_plain_logits(const VitFixture& fixture);
HostMatrix deberta_plain_logits(const DebertaFixture& fixture);
Tensors adapter_init();
Tensors adapter_steps();
Tensors layers();
Tensors vit(const VitFixture& fixture);
Tensors deberta(const DebertaFixture& fixture);
Tensors vit_training(const VitFixture& fixture);
Tensors vit_svd_extraction(const VitFixture& fixture);
}  // namespace reference

namespace scenario {

// ---- helpers ------------------------------------------------------------------

template <Backend B>
typename B::Matrix random_on(Index rows, Index cols, std::uint64_t seed, float low = -1.0f, float high = 1.0f) {
  return to_backend<B>(random_matrix(rows, cols, seed, low, high).view());
}

template <Backend B>
void record(Tensors& out, const std::string& name, ConstView<typename B::Space> value) {
  out.insert_or_assign(name, to_host<B>(value));
}

inline HostMatrix scalar(double value) { return HostMatrix(1, 1, {static_cast<float>(value)}); }

inline HostMatrix index_row(const std::vector<std::int32_t>& ids) {
  HostMatrix out(1, static_cast<Index>(ids.size()));
  for (std::size_t i = 0; i < ids.size(); ++i) out.values()[i] = static_cast<float>(ids[i]);
  return out;
}

template <Backend B>
void record_values(Tensors& out, const std::string& prefix, const ParameterList<typename B::Space>& params) {
  for (const auto& p : params) record<B>(out, prefix + p.name, p.value);
}
template <Backend B>
void record_grads(Tensors& out, const std::string& prefix, const ParameterList<typename B::Space>& params) {
  for (const auto& p : params) record<B>(out, prefix + p.name + ".grad", p.grad);
}

/// Overwrites every trainable tensor of `adapter` with U(-0.5, 0.5) draws (a
/// fresh LoRA's B = 0 would hide half of its forward and backward); Random
/// Masking's ΔW is then cut back to its support.
template <class A>
void randomise(A& adapter, std::uint64_t seed) {
  using B = typename A::BackendType;
  for (const auto& p : adapter.parameters())
    B::upload(p.value, random_matrix(p.value.rows, p.value.cols, seed, -0.5f, 0.5f, stream_id(p.name)).view());
  if constexpr (requires { adapter.mask(); }) B::mul(adapter.delta_W(), adapter.mask());
}

/// Calls f(kind, adapter) for one adapter of every kind on an (out x in) weight,
/// each from its own seeded stream; LoRA and AdaLoRA (also inside Partial) with
/// input dropout 0.1, so the dropout masks are compared too.
template <Backend B, class F>
void for_each_adapter(Index out, Index in, F&& f) {
  const auto init = [](const char* kind) { return RandomStream(7, stream_id(kind)); };
  const LoraConfig lora_config{.rank = 4, .alpha = 8.0f, .use_rslora = false, .dropout = 0.1f};
  const AdaLoraConfig adalora_config{.init_r = 4, .alpha = 8.0f, .dropout = 0.1f};
  const auto mask = [&](const char* kind) {
    return PartialMask{}.sample(MaskRequest{.out = out, .in = in, .ratio = 0.4, .seed = 7, .stream = stream_id(kind)});
  };
  Lora<B> lora(out, in, lora_config, init("lora"));
  f("lora", lora);
  AdaLora<B> adalora(out, in, adalora_config, init("adalora"));
  f("adalora", adalora);
  const RowColMask partial_mask = mask("partial_lora");
  PartialLora<B> partial(out, in, {lora_config, partial_mask.rows, partial_mask.cols}, init("partial_lora"));
  f("partial_lora", partial);
  const RowColMask partial_adalora_mask = mask("partial_adalora");
  PartialAdaLora<B> partial_adalora(out, in, {adalora_config, partial_adalora_mask.rows, partial_adalora_mask.cols},
                                    init("partial_adalora"));
  f("partial_adalora", partial_adalora);
  RandomMasking<B> masking(out, in, {.density = 0.3}, init("random_masking"));
  f("random_masking", masking);
  FullDelta<B> full(out, in, {}, init("full_delta"));
  f("full_delta", full);
}

// ---- adapters -----------------------------------------------------------------

/// Initial parameter values, Random Masking's support and Partial's kept rows / columns.
template <Backend B>
Tensors adapter_init() {
  Tensors out;
  for_each_adapter<B>(12, 20, [&](const std::string& kind, auto& adapter) {
    record_values<B>(out, kind + ".", adapter.parameters());
    if constexpr (requires { adapter.mask(); }) record<B>(out, kind + ".mask", adapter.mask());
    if constexpr (requires { adapter.kept_rows(); }) {
      out.insert_or_assign(kind + ".kept_rows", index_row(adapter.kept_rows()));
      out.insert_or_assign(kind + ".kept_cols", index_row(adapter.kept_cols()));
    }
  });
  return out;
}

/// Two training-mode forwards (fresh dropout masks each) and backwards of every
/// adapter kind on random inputs, then delta() and merge_into().
template <Backend B>
Tensors adapter_steps() {
  Tensors out;
  const Index tokens = 9, out_features = 12, in_features = 20;
  for_each_adapter<B>(out_features, in_features, [&](const std::string& kind, auto& adapter) {
    using A = std::remove_cvref_t<decltype(adapter)>;
    randomise(adapter, 11);
    adapter.set_training(true);
    const auto x = random_on<B>(tokens, in_features, 101);
    const auto dy = random_on<B>(tokens, out_features, 102);
    auto y = random_on<B>(tokens, out_features, 103);  // forward adds to y
    auto dx = random_on<B>(tokens, in_features, 104);  // backward adds to dx
    typename A::Saved saved;
    adapter.zero_grad();
    adapter.forward(y.view(), x.view(), saved);
    adapter.backward(dx.view(), dy.view(), x.view(), saved);
    record<B>(out, kind + ".y", y.view());
    record<B>(out, kind + ".dx", dx.view());
    record_grads<B>(out, kind + ".", adapter.parameters());
    // Second step: a new dropout mask; gradients accumulate; dx skipped.
    adapter.forward(y.view(), x.view(), saved);
    adapter.backward(View<typename B::Space>{}, dy.view(), x.view(), saved);
    record<B>(out, kind + ".y2", y.view());
    record_grads<B>(out, kind + ".step2.", adapter.parameters());
    record<B>(out, kind + ".delta", adapter.delta().view());
    auto weight = random_on<B>(out_features, in_features, 105);
    adapter.merge_into(weight.view());
    record<B>(out, kind + ".merged", weight.view());
  });
  return out;
}

// ---- layers -------------------------------------------------------------------

/// A LinearSite (weight U(-0.3, 0.3), bias U(-1, 1)) carrying a LoRA with random B.
template <Backend B>
LinearSite<B, Lora<B>> lora_site(const std::string& name, Index out, Index in) {
  const std::uint64_t seed = stream_id(name);
  LinearSite<B, Lora<B>> site(name, random_on<B>(out, in, seed, -0.3f, 0.3f), random_on<B>(1, out, seed + 1));
  Lora<B> lora(out, in, LoraConfig{.rank = 4, .alpha = 8.0f}, RandomStream(5, seed));
  B::upload(lora.lora_B(), random_matrix(out, 4, seed + 2, -0.5f, 0.5f).view());
  site.attach(std::move(lora));
  return site;
}

/// Forward and backward of a LinearSite (with dL/dW), a trainable LayerNorm,
/// SelfAttention (two batch / head shapes, one with a padding mask, so both
/// batching orders of its per-head GEMMs run) and an Mlp, all with LoRA sites.
template <Backend B>
Tensors layers() {
  Tensors out;
  {
    auto site = lora_site<B>("site", 24, 16);
    site.enable_weight_grad(true);
    const auto x = random_on<B>(10, 16, 201), dy = random_on<B>(10, 24, 202);
    typename B::Matrix y(10, 24), dx(10, 16);
    typename LinearSite<B, Lora<B>>::Saved saved;
    site.forward(y.view(), x.view(), saved);
    site.backward(dx.view(), dy.view(), x.view(), saved);
    record<B>(out, "site.y", y.view());
    record<B>(out, "site.dx", dx.view());
    record<B>(out, "site.dW", site.weight_grad()->view());
    record_grads<B>(out, "site.", site.adapter().parameters());
  }
  {
    LayerNorm<B> norm("norm", random_on<B>(1, 16, 211, 0.5f, 1.5f), random_on<B>(1, 16, 212), 1e-5f, true);
    const auto x = random_on<B>(10, 16, 213, -2.0f, 3.0f), dy = random_on<B>(10, 16, 214);
    typename B::Matrix y(10, 16), dx(10, 16);
    norm.forward(y.view(), x.view());
    norm.backward(dx.view(), dy.view(), x.view());
    record<B>(out, "norm.y", y.view());
    record<B>(out, "norm.dx", dx.view());
    record_grads<B>(out, "norm.", norm.parameters());
  }
  struct AttentionShape {
    Index batch, tokens, heads;
    bool masked;
  };
  for (const AttentionShape shape : {AttentionShape{2, 5, 4, true}, AttentionShape{3, 4, 2, false}}) {
    const std::string p = "attention" + std::to_string(shape.heads) + ".";
    const Index hidden = 16, rows = shape.batch * shape.tokens;
    SelfAttention<B, Lora<B>> attention(lora_site<B>(p + "query", hidden, hidden),
                                        lora_site<B>(p + "key", hidden, hidden),
                                        lora_site<B>(p + "value", hidden, hidden),
                                        lora_site<B>(p + "output", hidden, hidden), shape.heads);
    HostMatrix mask(shape.batch, shape.tokens);
    mask(1, shape.tokens - 1) = -10000.0f;  // the last token of image 1 is padding
    const auto device_mask = to_backend<B>(mask.view());
    const auto x = random_on<B>(rows, hidden, 221), dy = random_on<B>(rows, hidden, 222);
    typename B::Matrix y(rows, hidden), dx(rows, hidden);
    BackwardScratch<B> scratch;
    attention.forward(y.view(), x.view(), shape.tokens,
                      shape.masked ? device_mask.view() : ConstView<typename B::Space>{});
    attention.backward(dx.view(), dy.view(), x.view(), scratch);
    record<B>(out, p + "y", y.view());
    record<B>(out, p + "probabilities", attention.probabilities());
    record<B>(out, p + "dx", dx.view());
    for (auto* s : {&attention.query(), &attention.key(), &attention.value(), &attention.output()})
      record_grads<B>(out, s->name() + ".", s->adapter().parameters());
  }
  {
    Mlp<B, Lora<B>> mlp(lora_site<B>("mlp.intermediate", 32, 16), lora_site<B>("mlp.output", 16, 32));
    const auto x = random_on<B>(10, 16, 231), dy = random_on<B>(10, 16, 232);
    typename B::Matrix y(10, 16), dx(10, 16);
    BackwardScratch<B> scratch;
    mlp.forward(y.view(), x.view());
    mlp.backward(dx.view(), dy.view(), x.view(), scratch);
    record<B>(out, "mlp.y", y.view());
    record<B>(out, "mlp.dx", dx.view());
    record_grads<B>(out, "mlp.intermediate.", mlp.intermediate().adapter().parameters());
    record_grads<B>(out, "mlp.output.", mlp.output().adapter().parameters());
  }
  return out;
}

// ---- models -------------------------------------------------------------------

/// Attaches LoRA (r 4, alpha 8, B ~ U(-0.2, 0.2) so that every factor gets a
/// gradient) to the sites matching `targets`.
template <class M>
void attach_lora(M& model, const std::vector<std::string>& targets) {
  using B = typename M::BackendType;
  attach_adapters(model, targets, [](const std::string& site, Index out, Index in) {
    Lora<B> lora(out, in, LoraConfig{.rank = 4, .alpha = 8.0f}, RandomStream(3, stream_id(site)));
    B::upload(lora.lora_B(), random_matrix(out, 4, stream_id(site), -0.2f, 0.2f).view());
    return lora;
  });
}

template <Backend B, Adapter A>
Vit<B, A> build_vit(const VitFixture& fixture) {
  return Vit<B, A>(fixture.config, [&fixture](const std::string& key, Index, Index) { return fixture.weights.at(key); });
}

/// The head the checkpoint lacks (pooler) is drawn from seed 5 on the host.
template <Backend B, Adapter A>
DebertaV2<B, A> build_deberta(const DebertaFixture& fixture) {
  const WeightSource source = [&fixture](const std::string& key, Index, Index) -> std::optional<HostMatrix> {
    const auto found = fixture.weights.find(key);
    if (found == fixture.weights.end()) return std::nullopt;
    return found->second;
  };
  return DebertaV2<B, A>(fixture.config, source, 5);
}

/// Logits, last hidden state, loss and every trainable gradient (LoRA on query
/// and value, classifier) of the ViT fixture.
template <Backend B>
Tensors vit(const VitFixture& fixture) {
  auto model = build_vit<B, Lora<B>>(fixture);
  attach_lora(model, {"query", "value"});
  Tensors out;
  record<B>(out, "logits", model.forward(fixture.batch));
  record<B>(out, "hidden.last", model.hidden_state(fixture.config.num_hidden_layers));
  model.zero_grad();
  out.insert_or_assign("loss", scalar(model.forward_backward(fixture.batch)));
  record_grads<B>(out, "", model.parameters());
  return out;
}

/// The same for the DeBERTa fixture (LoRA on its lora_targets; the query and
/// key adapters also act on the relative position embeddings), then one
/// training-mode step: the model's dropouts (masks drawn alike on both backends).
template <Backend B>
Tensors deberta(const DebertaFixture& fixture) {
  auto model = build_deberta<B, Lora<B>>(fixture);
  attach_lora(model, fixture.lora_targets);
  Tensors out;
  record<B>(out, "logits", model.forward(fixture.batch));
  for (Index i = 0; i <= fixture.config.num_hidden_layers; ++i)
    record<B>(out, "hidden." + std::to_string(i), model.hidden_state(i));
  model.zero_grad();
  out.insert_or_assign("loss", scalar(model.forward_backward(fixture.batch)));
  record_grads<B>(out, "", model.parameters());
  model.set_training(true);
  model.zero_grad();
  out.insert_or_assign("training.loss", scalar(model.forward_backward(fixture.batch)));
  record_grads<B>(out, "training.", model.parameters());
  return out;
}

/// Three Trainer steps (AdamW, gradient clipping, adapter dropout 0.1) of a
/// ViT with Partial-LoRA on query, value and the MLP output, masks sampled by
/// PartialMask from (seed, site). Records the masks, the per-step losses and
/// the trained parameters.
template <Backend B>
Tensors vit_training(const VitFixture& fixture) {
  using A = PartialLora<B>;
  auto model = build_vit<B, A>(fixture);
  Tensors out;
  const std::vector<std::string> targets = {"query", "value", "layer.0.output.dense", "layer.3.output.dense"};
  attach_adapters(model, targets, [&](const std::string& site, Index rows, Index cols) {
    const RowColMask mask = PartialMask{}.sample(
        MaskRequest{.out = rows, .in = cols, .ratio = 0.5, .seed = 11, .stream = stream_id(site), .site = site});
    out.insert_or_assign("mask." + site + ".rows", index_row(mask.rows));
    out.insert_or_assign("mask." + site + ".cols", index_row(mask.cols));
    return A(rows, cols, {LoraConfig{.rank = 4, .alpha = 8.0f, .use_rslora = false, .dropout = 0.1f}, mask.rows, mask.cols},
             RandomStream(11, stream_id(site)));
  });
  AdamW<B> optimizer(AdamWConfig{.lr = 1e-2, .eps = 1e-2, .weight_decay = 1e-2});
  Trainer<Vit<B, A>, AdamW<B>> trainer(
      model, optimizer, TrainerConfig{.epochs = 2, .max_steps = 3, .grad_clip = 1.0, .log_every = 1, .seed = 11});
  const TrainResult result = trainer.fit(FixedBatches<ImageBatch>{{fixture.batch, fixture.shots}});
  HostMatrix losses(1, static_cast<Index>(result.log.size()));
  for (std::size_t i = 0; i < result.log.size(); ++i) losses.values()[i] = static_cast<float>(result.log[i].loss);
  out.insert_or_assign("losses", losses);
  record_values<B>(out, "trained.", model.parameters());
  return out;
}

/// SVD ratio extraction on query and value of the ViT fixture over its shots:
/// M0, and per site the ratio and the row / column scores.
template <Backend B>
Tensors vit_svd_extraction(const VitFixture& fixture) {
  auto model = build_vit<B, Lora<B>>(fixture);
  ExtractionConfig config;
  config.targets = {"query", "value"};
  const RatioReport report = extract_ratios(Svd{}, model, FixedBatches<ImageBatch>{{fixture.shots}}, config);
  Tensors out;
  out.insert_or_assign("reference_metric", scalar(report.reference_metric));
  for (const SiteRatio& site : report.sites) {
    out.insert_or_assign("ratio." + site.name, scalar(site.ratio));
    out.insert_or_assign("row_scores." + site.name,
                         HostMatrix(1, static_cast<Index>(site.row_scores.size()), site.row_scores));
    out.insert_or_assign("col_scores." + site.name,
                         HostMatrix(1, static_cast<Index>(site.col_scores.size()), site.col_scores));
  }
  return out;
}

}  // namespace scenario
}  // namespace plora::test::models
