// plora's ViT against transformers / PEFT (fixtures from tools/make_fixtures.py,
// references computed in float64 from the same float32 weights): logits and
// every hidden state, then a PEFT LoRA (r 4, alpha 8, query + value, classifier
// trained) with non-zero B: logits, loss and every trainable gradient.
//
// Tolerances: plora computes in float32. Hidden states are O(1..10) after
// <= 4 layers of 64-wide sums; float32 rounding accumulates to ~1e-6 relative,
// i.e. ~1e-5 absolute, so 1e-4 absolute (the bound) has a 10x margin.
// Gradients pass back through the same layers; 1e-3 relative error is ~100x
// float32 rounding and far below the O(1) error of any wrong term.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "plora/adapters/full_delta.hpp"
#include "plora/adapters/lora.hpp"
#include "plora/adapters/partial.hpp"
#include "plora/backend/cpu/cpu.hpp"
#include "plora/io/safetensors.hpp"
#include "plora/io/vit_checkpoint.hpp"
#include "plora/masks/bernoulli.hpp"
#include "plora/models/concepts.hpp"
#include "plora/models/sites.hpp"
#include "plora/models/vit.hpp"
#include "plora/sparsity/sparsity.hpp"
#include "support/gradients.hpp"
#include "support/numeric.hpp"
#include "support/reports.hpp"

using namespace plora;
using plora::test::max_abs;
using plora::test::check_same_gradients;
using plora::test::finite_difference;
using plora::test::max_abs_diff;
using plora::test::relative_error;

namespace {
using LoraVit = Vit<cpu, Lora<cpu>>;
static_assert(Model<LoraVit>);

// One template argument list, so the doctest macros see no top-level comma.
LoraVit load_lora_vit(const std::filesystem::path& path, const ViTConfig& config) {
  return load_vit<cpu, Lora<cpu>>(path, config);
}

const std::filesystem::path kData = PLORA_TEST_DATA_DIR;

/// The checkpoint in `dir` under `config`, LoRA (r 4, alpha 8) on query and
/// value with B = 0.05 everywhere, so that A gets gradients too.
LoraVit lora_vit_with_nonzero_b(const std::filesystem::path& dir, const ViTConfig& config) {
  LoraVit model = load_lora_vit(dir, config);
  attach_adapters(model, std::vector<std::string>{"query", "value"}, [](const std::string& site, Index out, Index in) {
    Lora<cpu> lora(out, in, LoraConfig{.rank = 4, .alpha = 8.0f}, RandomStream(1, stream_id(site)));
    cpu::fill(lora.lora_B(), 0.05f);
    return lora;
  });
  return model;
}

ImageBatch reference_batch(const io::SafetensorsFile& reference, const ViTConfig& c) {
  ImageBatch batch;
  const Index n = reference.info("pixel_values").shape.front();
  batch.pixels = reference.load("pixel_values", n, c.num_channels * c.image_size * c.image_size);
  const HostMatrix labels = reference.load("labels");
  for (const float label : labels.values()) batch.labels.push_back(static_cast<std::int32_t>(label));
  return batch;
}

/// The whole comparison for one checkpoint directory written by make_fixtures.py.
void check_against_reference(const std::filesystem::path& dir) {
  INFO("checkpoint ", dir.string());
  LoraVit model = load_vit_checkpoint<cpu, Lora<cpu>>(dir);
  const ViTConfig& c = model.config();
  const io::SafetensorsFile reference = io::SafetensorsFile::open(dir / "reference.safetensors");
  const ImageBatch batch = reference_batch(reference, c);
  const Index n = batch.size(), rows = n * model.tokens();

  const HostMatrix logits = to_host<cpu>(model.forward(batch));
  const double logits_error = max_abs_diff(logits.view(), reference.load("logits", n, c.num_labels).view());
  CHECK(logits_error <= 1e-4);
  double hidden_error = 0.0;
  for (Index i = 0; i <= c.num_hidden_layers; ++i) {
    INFO("hidden state ", i);
    const HostMatrix expected = reference.load("hidden_states." + std::to_string(i), rows, c.hidden_size);
    // The last layer computes token 0 of each image only (the head's input).
    const ConstHostView compared = i == c.num_hidden_layers ? expected.view().every_nth_row(model.tokens()) : expected.view();
    const double error = max_abs_diff(model.hidden_state(i), compared);
    CHECK(error <= 1e-4);
    hidden_error = std::max(hidden_error, error);
  }

  // PEFT's LoRA on query and value with the fixture's values of A and B.
  const std::vector<std::string> targets = {"query", "value"};
  const auto attached = attach_adapters(model, targets, [&](const std::string& site, Index out, Index in) {
    Lora<cpu> lora(out, in, LoraConfig{.rank = 4, .alpha = 8.0f}, RandomStream(0, stream_id(site)));
    cpu::copy(lora.lora_A(), reference.load("lora." + site + ".lora_A", 4, in).view());
    cpu::copy(lora.lora_B(), reference.load("lora." + site + ".lora_B", out, 4).view());
    return lora;
  });
  CHECK(attached.size() == static_cast<std::size_t>(2 * c.num_hidden_layers));
  const TrainableCount count = trainable_count(model);
  CHECK(count.adapters == c.num_hidden_layers * 2 * 4 * (c.hidden_size + c.hidden_size));
  CHECK(count.head == c.num_labels * (c.hidden_size + 1));

  model.zero_grad();
  const float loss = model.forward_backward(batch);
  const HostMatrix lora_logits = reference.load("lora.logits", n, c.num_labels);
  CHECK(max_abs_diff(to_host<cpu>(model.forward(batch)).view(), lora_logits.view()) <= 1e-4);
  // An O(1) mean of float32 log-softmax values: ~1e-6 absolute.
  const double loss_error = std::abs(double(loss) - reference.load("lora.loss")(0, 0));
  CHECK(loss_error <= 1e-5);

  // Every trainable parameter has a PEFT gradient under the same name, and back.
  std::set<std::string> expected_names;
  for (const auto& key : reference.names())
    if (key.starts_with("grad.")) expected_names.insert(key.substr(5));
  std::set<std::string> names;
  double grad_error = 0.0;
  for (const auto& p : model.parameters()) {
    names.insert(p.name);
    INFO("gradient of ", p.name);
    REQUIRE(reference.contains("grad." + p.name));
    const HostMatrix expected = reference.load("grad." + p.name, p.grad.rows, p.grad.cols);
    const double error = relative_error(to_host<cpu>(p.grad).view(), expected.view());
    CHECK(error <= 1e-3);
    grad_error = std::max(grad_error, error);
  }
  CHECK(names == expected_names);
  MESSAGE(dir.filename().string(), ": max |diff| logits ", logits_error, ", hidden states ", hidden_error, ", loss ",
          loss_error, "; worst gradient relative error ", grad_error, " over ", names.size(), " parameters");
}
}  // namespace

TEST_CASE("ViT fixture A (vit.-prefixed keys) matches transformers and PEFT") {
  check_against_reference(kData / "vit_a");
}

TEST_CASE("ViT fixture B (odd sizes, eps 1e-6, no qkv bias, unprefixed keys + pooler) matches transformers and PEFT") {
  check_against_reference(kData / "vit_b");
}

TEST_CASE("a full-size checkpoint from `make_fixtures.py --full` (PLORA_VIT_REFERENCE_DIR)") {
  const char* dir = std::getenv("PLORA_VIT_REFERENCE_DIR");
  if (dir == nullptr) {
    MESSAGE("PLORA_VIT_REFERENCE_DIR not set: skipped (see docs/reference-checks.md)");
    return;
  }
  check_against_reference(dir);
}

TEST_CASE("gradients accumulate until zero_grad") {
  LoraVit model = load_vit_checkpoint<cpu, Lora<cpu>>(kData / "vit_b");
  const io::SafetensorsFile reference = io::SafetensorsFile::open(kData / "vit_b" / "reference.safetensors");
  const ImageBatch batch = reference_batch(reference, model.config());
  model.zero_grad();
  model.forward_backward(batch);
  const HostMatrix once = to_host<cpu>(model.parameters().back().grad);
  model.forward_backward(batch);
  HostMatrix twice = to_host<cpu>(model.parameters().back().grad);
  cpu::scale(twice.view(), 0.5f);
  CHECK(max_abs_diff(twice.view(), once.view()) <= 1e-6 * std::max(1.0, max_abs(once.view())));
  model.zero_grad();
  CHECK(max_abs(to_host<cpu>(model.parameters().back().grad).view()) == 0.0);
}

TEST_CASE("inference forwards pass one layer's buffers along and match the training pass bitwise") {
  // forward() hands each layer's activation buffers to the next layer; the
  // training pass keeps every layer's. Both run the same kernels on buffers of
  // the same shapes, so their logits must agree exactly, in any order.
  LoraVit model = load_vit_checkpoint<cpu, Lora<cpu>>(kData / "vit_a");
  const io::SafetensorsFile reference = io::SafetensorsFile::open(kData / "vit_a" / "reference.safetensors");
  const ImageBatch batch = reference_batch(reference, model.config());
  const HostMatrix first = to_host<cpu>(model.forward(batch));
  const HostMatrix again = to_host<cpu>(model.forward(batch));
  CHECK(max_abs_diff(again.view(), first.view()) == 0.0);
  model.zero_grad();
  const float loss = model.forward_backward(batch);
  const HostMatrix after_training = to_host<cpu>(model.forward(batch));
  CHECK(max_abs_diff(after_training.view(), first.view()) == 0.0);
  // The training pass's loss is the cross-entropy of those same logits (float32 log-softmax: ~1e-6).
  double expected_loss = 0.0;
  for (Index i = 0; i < first.rows(); ++i) {
    double max_logit = first(i, 0), sum = 0.0;
    for (Index j = 1; j < first.cols(); ++j) max_logit = std::max(max_logit, double(first(i, j)));
    for (Index j = 0; j < first.cols(); ++j) sum += std::exp(first(i, j) - max_logit);
    expected_loss += max_logit + std::log(sum) - first(i, batch.labels[std::size_t(i)]);
  }
  expected_loss /= double(first.rows());
  CHECK(std::abs(double(loss) - expected_loss) <= 1e-5);
}

TEST_CASE("the last layer computes token 0 alone unless every token is asked for: the same logits, loss and gradients") {
  const std::filesystem::path dir = kData / "vit_a";
  const ViTConfig config = load_vit_checkpoint_config(dir);
  LoraVit pruned = lora_vit_with_nonzero_b(dir, config), every = lora_vit_with_nonzero_b(dir, config);
  every.set_every_token(true);
  const io::SafetensorsFile reference = io::SafetensorsFile::open(dir / "reference.safetensors");
  const ImageBatch batch = reference_batch(reference, pruned.config());
  const Index layers = pruned.config().num_hidden_layers, n = batch.size();

  // Both compute token 0's rows with the same float operations; GEMMs over
  // fewer rows may block their sums differently, a few ulps of O(1) values,
  // grown through the layers to ~1e-6 relative. 1e-5 bounds it; a dropped or
  // misplaced row gives O(1) errors.
  const HostMatrix logits = to_host<cpu>(pruned.forward(batch));
  CHECK(max_abs_diff(logits.view(), to_host<cpu>(every.forward(batch)).view()) <= 1e-5);
  CHECK(pruned.hidden_state(layers).rows == n);
  CHECK(every.hidden_state(layers).rows == n * every.tokens());
  CHECK(max_abs_diff(pruned.hidden_state(layers), every.hidden_state(layers).every_nth_row(every.tokens())) <= 1e-5);

  pruned.zero_grad();
  every.zero_grad();
  const float loss = pruned.forward_backward(batch);
  CHECK(std::abs(double(loss) - double(every.forward_backward(batch))) <= 1e-6);
  check_same_gradients(pruned.parameters(), every.parameters(), 1e-5);
}

TEST_CASE("full fine-tuning folds every site's delta into one shared buffer: the model whose W is W + delta, bitwise") {
  // Every site of the folded model forms W + ΔW in the one buffer
  // attach_adapters shares, right before each GEMM that reads it. The merged
  // model holds W + ΔW (the same float addition) and asks each site for dL/dW
  // (the same GEMM as ΔW's gradient): the same float operations, so the loss
  // and every gradient agree bitwise. A GEMM reading another site's fold
  // would be off by O(1).
  using FullVit = Vit<cpu, FullDelta<cpu>>;
  const std::filesystem::path dir = kData / "vit_a";
  FullVit folded = load_vit_checkpoint<cpu, FullDelta<cpu>>(dir), merged = load_vit_checkpoint<cpu, FullDelta<cpu>>(dir);
  const std::vector<std::string> every_site = folded.site_names();
  std::uint64_t seed = 0;
  attach_adapters(folded, every_site, [&](const std::string&, Index out, Index in) {
    FullDelta<cpu> full(out, in, {}, RandomStream(1, 0));
    cpu::copy(full.delta_W(), plora::test::random_matrix(out, in, ++seed, -0.05f, 0.05f).view());
    return full;
  });
  for (const auto& name : every_site) {
    folded.site(name).adapter().merge_into(merged.site(name).mutable_weight());
    merged.site(name).enable_weight_grad(true);
  }
  const auto* const buffer = folded.site(every_site.front()).fold_buffer();
  CHECK(buffer != nullptr);
  for (const auto& name : every_site) CHECK(folded.site(name).fold_buffer() == buffer);
  // A copy (an extraction replica, which may run beside the original) shares nothing.
  FullVit copy = folded;
  for (const auto& name : every_site) CHECK(copy.site(name).fold_buffer() == nullptr);

  const io::SafetensorsFile reference = io::SafetensorsFile::open(dir / "reference.safetensors");
  const ImageBatch batch = reference_batch(reference, folded.config());
  folded.zero_grad();
  merged.zero_grad();
  const float loss = folded.forward_backward(batch);
  CHECK(loss == merged.forward_backward(batch));
  copy.zero_grad();
  CHECK(copy.forward_backward(batch) == loss);  // each of its sites formed W + ΔW in a buffer of its own
  CHECK(copy.site(every_site.front()).fold_buffer() != nullptr);
  CHECK(copy.site(every_site.front()).fold_buffer() != copy.site(every_site.back()).fold_buffer());
  for (const auto& name : every_site) {
    INFO("site ", name);
    const ConstHostView delta_grad = folded.site(name).adapter().delta_W_grad();
    CHECK(max_abs(delta_grad) > 0.0);
    CHECK(max_abs_diff(delta_grad, merged.site(name).weight_grad()->view()) == 0.0);
  }
  const auto folded_head = folded.parameters(), merged_head = merged.parameters();
  CHECK(max_abs_diff(folded_head.back().grad, merged_head.back().grad) == 0.0);
}

TEST_CASE("Partial-LoRA sites share one set of work buffers: the same loss and gradients as sites with their own, bitwise") {
  // The buffers hold nothing between calls, so sharing them changes no float
  // operation. The copy's sites each make their own buffers (a copy shares
  // nothing with its original), so it is the unshared reference. Every site
  // keeps different rows and columns, so a site reading another's stale
  // values (or sizes) would differ at O(1).
  using PartialVit = Vit<cpu, PartialLora<cpu>>;
  const std::filesystem::path dir = kData / "vit_a";
  PartialVit shared = load_vit_checkpoint<cpu, PartialLora<cpu>>(dir);
  const std::vector<std::string> sites = attach_adapters(
      shared, std::vector<std::string>{"query", "value"}, [](const std::string& site, Index out, Index in) {
        const RowColMask mask = PartialMask{}.sample(
            {.out = out, .in = in, .ratio = 0.3, .seed = 5, .stream = stream_id(site), .site = site});
        const PartialLora<cpu>::Config config{
            .inner = {.rank = 4, .alpha = 8.0f}, .kept_rows = mask.rows, .kept_cols = mask.cols};
        PartialLora<cpu> partial(out, in, config, RandomStream(1, stream_id(site)));
        cpu::fill(partial.inner().lora_B(), 0.05f);  // so that A gets gradients too
        return partial;
      });
  REQUIRE(sites.size() >= 2);
  const auto* const buffers = shared.site(sites.front()).adapter().work_buffers();
  CHECK(buffers != nullptr);
  for (const auto& name : sites) CHECK(shared.site(name).adapter().work_buffers() == buffers);
  PartialVit own = shared;
  for (const auto& name : sites) CHECK(own.site(name).adapter().work_buffers() == nullptr);

  const io::SafetensorsFile reference = io::SafetensorsFile::open(dir / "reference.safetensors");
  const ImageBatch batch = reference_batch(reference, shared.config());
  shared.zero_grad();
  own.zero_grad();
  const float loss = shared.forward_backward(batch);
  CHECK(own.forward_backward(batch) == loss);
  CHECK(own.site(sites.front()).adapter().work_buffers() != own.site(sites.back()).adapter().work_buffers());
  const auto shared_parameters = shared.parameters(), own_parameters = own.parameters();
  REQUIRE(shared_parameters.size() == own_parameters.size());
  for (std::size_t i = 0; i < shared_parameters.size(); ++i) {
    INFO("parameter ", shared_parameters[i].name);
    CHECK(max_abs(shared_parameters[i].grad) > 0.0);
    CHECK(max_abs_diff(shared_parameters[i].grad, own_parameters[i].grad) == 0.0);
  }
}

TEST_CASE("a forward from any layer's input gives forward's logits bitwise, whatever pass ran before") {
  static_assert(LayeredModel<LoraVit>);
  const std::filesystem::path dir = kData / "vit_a";
  LoraVit model = lora_vit_with_nonzero_b(dir, load_vit_checkpoint_config(dir));
  const io::SafetensorsFile reference = io::SafetensorsFile::open(dir / "reference.safetensors");
  const ImageBatch batch = reference_batch(reference, model.config());
  const Index layers = model.config().num_hidden_layers;
  REQUIRE(layers >= 2);
  const HostMatrix logits = to_host<cpu>(model.forward(batch));
  std::vector<HostMatrix> inputs;
  for (Index l = 0; l < layers; ++l) inputs.push_back(to_host<cpu>(model.hidden_state(l)));
  // The same float operations on the same layer inputs: equal bitwise. The
  // starting layers come in a scrambled order with whole forwards between,
  // so each pass takes the layers' buffers from wherever the last one left them.
  for (const Index first : {layers - 1, Index{0}, layers / 2, layers - 1, Index{1}}) {
    INFO("from layer ", first);
    CHECK(max_abs_diff(to_host<cpu>(model.forward_from(first, inputs[first].view(), batch)).view(), logits.view()) ==
          0.0);
    if (first % 2 == 1) CHECK(max_abs_diff(to_host<cpu>(model.forward(batch)).view(), logits.view()) == 0.0);
  }
  (void)model.forward(batch);
  CHECK(max_abs_diff(to_host<cpu>(model.forward_from(1, model.hidden_state(1), batch)).view(), logits.view()) == 0.0);

  CHECK(model.layer_of("vit.encoder.layer.1.attention.attention.query") == 1);
  CHECK(model.layer_of("vit.encoder.layer.0.output.dense") == 0);
  CHECK_THROWS_WITH_AS((void)model.layer_of("vit.encoder.layer.9.output.dense"), doctest::Contains("has no site"),
                       ValueError);
  const std::string outside = "forward_from: layer " + std::to_string(layers) + " is outside";
  CHECK_THROWS_WITH_AS(model.forward_from(layers, inputs[0].view(), batch), doctest::Contains(outside.c_str()),
                       ValueError);
  const HostMatrix short_input(inputs[0].rows() - 1, inputs[0].cols());
  CHECK_THROWS_WITH_AS(model.forward_from(0, short_input.view(), batch), doctest::Contains("expected"), ShapeError);
}

namespace {
/// The ViT as a plain Model (no forward_from): extraction then probes with whole forwards.
struct WholeForwardVit {
  using BackendType = cpu;
  using Batch = ImageBatch;
  LoraVit vit;
  ConstHostView forward(const ImageBatch& batch) { return vit.forward(batch); }
  float forward_backward(const ImageBatch& batch) { return vit.forward_backward(batch); }
  ParameterList<Host> parameters() { return vit.parameters(); }
  void zero_grad() { vit.zero_grad(); }
  void set_training(bool training) { vit.set_training(training); }
  [[nodiscard]] std::vector<std::string> site_names() const { return vit.site_names(); }
  LoraVit::Site& site(const std::string& name) { return vit.site(name); }
};
static_assert(Model<WholeForwardVit> && !LayeredModel<WholeForwardVit>);

struct ShotBatches {
  using Batch = ImageBatch;
  std::vector<ImageBatch> batches;
  [[nodiscard]] Index batches_per_epoch() const { return static_cast<Index>(batches.size()); }
  [[nodiscard]] ImageBatch batch(Index /*epoch*/, Index i) const { return batches[static_cast<std::size_t>(i)]; }
};
}  // namespace

TEST_CASE("SVD extraction probes a weight of layer l from layer l's cached inputs: whole forwards' report, bitwise") {
  const std::filesystem::path dir = kData / "vit_a";
  const ViTConfig config = load_vit_checkpoint_config(dir);
  LoraVit layered = load_lora_vit(dir, config);
  WholeForwardVit whole{load_lora_vit(dir, config)};
  const io::SafetensorsFile reference = io::SafetensorsFile::open(dir / "reference.safetensors");
  ImageBatch shots = reference_batch(reference, config);
  // Labelled with the model's own predictions: M0 = 1, and pruning can only lose accuracy.
  const HostMatrix logits = to_host<cpu>(layered.forward(shots));
  for (Index i = 0; i < logits.rows(); ++i) {
    const float* row = logits.view().data + i * logits.cols();
    shots.labels[static_cast<std::size_t>(i)] =
        static_cast<std::int32_t>(std::max_element(row, row + logits.cols()) - row);
  }
  // Two batches, so each probe scores several forwards from cached inputs.
  ShotBatches few_shot;
  const Index half = shots.size() / 2;
  REQUIRE(half >= 1);
  for (const auto& [first, count] : {std::pair{Index{0}, half}, std::pair{half, shots.size() - half}}) {
    ImageBatch part{HostMatrix(shots.pixels.view().row_block(first, count)), {}};
    part.labels.assign(shots.labels.begin() + first, shots.labels.begin() + first + count);
    few_shot.batches.push_back(std::move(part));
  }
  ExtractionConfig extraction;
  extraction.resolution = 1.0 / 8.0;
  const RatioReport fast = extract_ratios(Svd{}, layered, few_shot, extraction);
  const RatioReport slow = extract_ratios(Svd{}, whole, few_shot, extraction);
  plora::test::check_same_sites(fast, slow);
  CHECK(fast.sites.size() == layered.site_names().size());
  CHECK(fast.reference_metric == 1.0);
  bool some_pruned = false;
  for (const SiteRatio& site : fast.sites) some_pruned = some_pruned || site.ratio < 1.0;
  CHECK(some_pruned);
}

TEST_CASE("ViT training dropouts: transformers' placement, reproducible masks, gradients equal finite differences") {
  // The fixture's config has no dropout (as the Hub's ViTs); this test sets 0.1 for both.
  const std::filesystem::path dir = kData / "vit_a";
  ViTConfig config = load_vit_checkpoint_config(dir);
  config.hidden_dropout_prob = 0.1f;
  config.attention_probs_dropout_prob = 0.1f;
  LoraVit model = lora_vit_with_nonzero_b(dir, config), probe = lora_vit_with_nonzero_b(dir, config);
  const io::SafetensorsFile reference = io::SafetensorsFile::open(dir / "reference.safetensors");
  const ImageBatch batch = reference_batch(reference, config);
  const Index n = batch.size(), tokens = model.tokens(), rows = n * tokens, hidden = config.hidden_size;

  const HostMatrix eval_logits = to_host<cpu>(model.forward(batch));  // a new model evaluates: no draws
  CHECK(model.dropout_stream().offset() == 0);
  model.set_training(true);
  model.zero_grad();
  (void)model.forward_backward(batch);
  // Elements drawn by one training forward: the embeddings, then per layer the
  // attention probabilities and both residual branches, in the last layer
  // for token 0's queries and rows only. The head has none.
  const auto per_layer =
      static_cast<std::uint64_t>(n * config.num_attention_heads * tokens * tokens + 2 * rows * hidden);
  const auto last_layer = static_cast<std::uint64_t>(n * config.num_attention_heads * tokens + 2 * n * hidden);
  CHECK(model.dropout_stream().offset() ==
        static_cast<std::uint64_t>(rows * hidden) +
            static_cast<std::uint64_t>(config.num_hidden_layers - 1) * per_layer + last_layer);

  // Layer-0 query sees every layer's probability dropout and the branch
  // dropouts above it.
  plora::test::check_training_dropout(model, probe, batch, eval_logits, "vit.encoder.layer.0.attention.attention.query");

  ViTConfig bad = config;
  bad.hidden_dropout_prob = 1.0f;
  CHECK_THROWS_WITH_AS(load_lora_vit(dir, bad), doctest::Contains("hidden_dropout_prob"), ValueError);
}

TEST_CASE("a checkpoint for another number of labels gets a new head, the backbone is unchanged") {
  const std::filesystem::path dir = kData / "vit_a";
  CHECK(vit_head_matches(io::SafetensorsFile::open(dir / "model.safetensors"), 10));
  CHECK_FALSE(vit_head_matches(io::SafetensorsFile::open(dir / "model.safetensors"), 5));
  LoraVit model = load_vit_checkpoint<cpu, Lora<cpu>>(dir, 5, 7);
  model.set_every_token(true);  // hidden_state(layers) then holds every token
  CHECK(model.config().num_labels == 5);
  CHECK(model.config().id2label.empty());
  const io::SafetensorsFile reference = io::SafetensorsFile::open(dir / "reference.safetensors");
  const ImageBatch batch = reference_batch(reference, model.config());
  const ConstHostView logits = model.forward(batch);
  CHECK(logits.rows == batch.size());
  CHECK(logits.cols == 5);
  const Index layers = model.config().num_hidden_layers, rows = batch.size() * model.tokens();
  CHECK(max_abs_diff(model.hidden_state(layers),
                     reference.load("hidden_states." + std::to_string(layers), rows, 64).view()) <= 1e-4);
  auto& head = model.classifier();
  CHECK(max_abs(head.bias()) == 0.0);
  double sum_squares = 0.0;
  for (Index r = 0; r < 5; ++r)
    for (Index col = 0; col < 64; ++col) sum_squares += double(head.weight()(r, col)) * head.weight()(r, col);
  // 320 draws of N(0, 0.02^2): the sample std is within 15% of 0.02 with overwhelming probability.
  CHECK(std::sqrt(sum_squares / 320.0) == doctest::Approx(0.02).epsilon(0.15));
  // Drawn from stream (seed, "classifier.weight") in row-major order, so a seed reproduces it.
  RandomStream draw(7, stream_id("classifier.weight"));
  bool reproduced = true;
  for (Index r = 0; r < 5; ++r)
    for (Index col = 0; col < 64; ++col) reproduced = reproduced && head.weight()(r, col) == 0.02f * draw.normal();
  CHECK(reproduced);
}

TEST_CASE("vit_weight_source hands over the file's classifier or none, and always the backbone") {
  const io::SafetensorsFile file = io::SafetensorsFile::open(kData / "vit_a" / "model.safetensors");
  const WeightSource kept = vit_weight_source(file), fresh = vit_weight_source(file, Head::New);
  const std::string norm = "vit.layernorm.weight";
  for (const WeightSource* source : {&kept, &fresh}) {
    const std::optional<HostMatrix> loaded = (*source)(norm, 1, 64);
    REQUIRE(loaded.has_value());
    CHECK(max_abs_diff(loaded->view(), file.load(norm, 1, 64).view()) == 0.0);
    CHECK_THROWS_WITH_AS((*source)("vit.no_such_tensor", 1, 1), doctest::Contains("vit.no_such_tensor"), IoError);
  }
  const std::optional<HostMatrix> head = kept("classifier.weight", 10, 64);
  REQUIRE(head.has_value());
  CHECK(max_abs_diff(head->view(), file.load("classifier.weight", 10, 64).view()) == 0.0);
  CHECK_FALSE(fresh("classifier.weight", 10, 64).has_value());
  CHECK_FALSE(fresh("classifier.bias", 1, 10).has_value());

  // A source without a backbone tensor: the model names it; without the head: the model draws one.
  const ViTConfig config = load_vit_checkpoint_config(kData / "vit_a");
  const WeightSource no_norm = [&](const std::string& key, Index rows, Index cols) -> std::optional<HostMatrix> {
    if (key == norm) return std::nullopt;
    return kept(key, rows, cols);
  };
  CHECK_THROWS_WITH_AS(LoraVit(config, no_norm), doctest::Contains("'vit.layernorm.weight'"), IoError);
  LoraVit drawn(config, fresh, 7);
  CHECK(max_abs_diff(drawn.classifier().weight(), file.load("classifier.weight", 10, 64).view()) > 0.0);
  CHECK(max_abs(drawn.classifier().bias()) == 0.0);
}

TEST_CASE("bad checkpoints and configs fail with errors naming the key") {
  const std::filesystem::path a = kData / "vit_a", b = kData / "vit_b";
  ViTConfig config = load_vit_checkpoint_config(a);

  SUBCASE("a tensor whose shape disagrees with the config") {
    config.intermediate_size = 100;
    CHECK_THROWS_WITH_AS(load_lora_vit(a, config),
                         doctest::Contains("vit.encoder.layer.0.intermediate.dense.weight"), ShapeError);
  }
  SUBCASE("a layer the checkpoint does not have") {
    config.num_hidden_layers = 5;
    CHECK_THROWS_WITH_AS(load_lora_vit(a, config), doctest::Contains("vit.encoder.layer.4."), IoError);
  }
  SUBCASE("fewer layers than the checkpoint holds: refused, not the upper layers dropped") {
    const Index stored = config.num_hidden_layers;
    config.num_hidden_layers = stored - 1;
    const std::string expected = "of encoder layer " + std::to_string(stored - 1) +
                                 ", but the config has num_hidden_layers " + std::to_string(stored - 1);
    CHECK_THROWS_WITH_AS(load_lora_vit(a, config), doctest::Contains(expected.c_str()), IoError);
  }
  SUBCASE("a corrupt layer count: the first missing layer is named, nothing is sized by the count") {
    const Index stored = config.num_hidden_layers;
    config.num_hidden_layers = 1'000'000'000;  // reserving that many layers threw std::bad_alloc
    const std::string first_missing = "vit.encoder.layer." + std::to_string(stored) + ".";
    CHECK_THROWS_WITH_AS(load_lora_vit(a, config), doctest::Contains(first_missing.c_str()), IoError);
  }
  SUBCASE("a bias the checkpoint does not have (fixture B has qkv_bias false)") {
    ViTConfig with_bias = load_vit_checkpoint_config(b);
    CHECK_FALSE(with_bias.qkv_bias);
    with_bias.qkv_bias = true;
    CHECK_THROWS_WITH_AS(load_lora_vit(b, with_bias),
                         doctest::Contains("encoder.layer.0.attention.attention.query.bias"), IoError);
  }
  SUBCASE("a weight source returning the wrong shape") {
    const io::SafetensorsFile file = io::SafetensorsFile::open(a / "model.safetensors");
    const WeightSource sloppy = [&](const std::string& key, Index rows, Index cols) {
      return key == "vit.layernorm.bias" ? HostMatrix(1, cols + 1) : file.load(key, rows, cols);
    };
    CHECK_THROWS_WITH_AS(LoraVit(config, sloppy), doctest::Contains("vit.layernorm.bias"), ShapeError);
  }
  SUBCASE("unsupported configs") {
    config.hidden_act = "gelu_new";
    CHECK_THROWS_WITH_AS(load_lora_vit(a, config), doctest::Contains("gelu_new"), ValueError);
  }
  SUBCASE("a missing checkpoint file") {
    CHECK_THROWS_AS(load_lora_vit(kData / "no_such_checkpoint", config), IoError);
  }
}

TEST_CASE("bad batches and site names fail clearly") {
  LoraVit model = load_vit_checkpoint<cpu, Lora<cpu>>(kData / "vit_b");
  ImageBatch batch{HostMatrix(2, 3 * 20 * 20 - 1), {0, 1}};
  CHECK_THROWS_WITH_AS(model.forward(batch), doctest::Contains("1200"), ShapeError);
  batch.pixels = HostMatrix(2, 3 * 20 * 20);
  batch.labels = {0};
  CHECK_THROWS_WITH_AS(model.forward_backward(batch), doctest::Contains("1 labels for 2 images"), ShapeError);
  batch.labels = {0, 7};
  CHECK_THROWS_AS(model.forward_backward(batch), ValueError);  // 7 labels: ids 0..6
  batch.labels = {0, 1};
  batch.pixels(1, 5) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH_AS(model.forward(batch), doctest::Contains("pixel 1205 of image 1 is nan"), ValueError);
  CHECK_THROWS_AS((void)model.site("vit.encoder.layer.3.attention.attention.query"), ValueError);  // 3 layers
  CHECK_THROWS_AS((void)model.site("encoder.layer.0.attention.attention.query"), ValueError);     // the prefix is part
  // The message names the model, the layer range and every suffix.
  CHECK_THROWS_WITH_AS((void)model.site("vit.encoder.layer.0.attention.query"),
                       doctest::Contains("ViT has no site 'vit.encoder.layer.0.attention.query'; sites are "
                                         "vit.encoder.layer.<0..2>.{attention.attention.query, attention.attention.key, "
                                         "attention.attention.value, attention.output.dense, intermediate.dense, "
                                         "output.dense}"),
                       ValueError);
  CHECK(model.site("vit.encoder.layer.2.output.dense").in_features() == 96);
}

TEST_CASE("site names and PEFT target matching") {
  CHECK(matches_target("vit.encoder.layer.0.attention.attention.query", "query"));
  CHECK(matches_target("vit.encoder.layer.0.attention.attention.query", "attention.query"));
  const std::string query = "vit.encoder.layer.0.attention.attention.query";
  CHECK(matches_target(query, query));
  CHECK_FALSE(matches_target("vit.encoder.layer.0.attention.attention.query", "uery"));
  CHECK_FALSE(matches_target("vit.encoder.layer.0.attention.attention.query", ""));
  CHECK_FALSE(matches_target("query", "attention.query"));

  LoraVit model = load_vit_checkpoint<cpu, Lora<cpu>>(kData / "vit_b");
  const std::vector<std::string> names = model.site_names();
  REQUIRE(names.size() == 3u * 6u);
  CHECK(names[0] == "vit.encoder.layer.0.attention.attention.query");
  CHECK(names[3] == "vit.encoder.layer.0.attention.output.dense");
  CHECK(names[17] == "vit.encoder.layer.2.output.dense");
  for (const auto& name : names) CHECK(model.site(name).name() == name);

  // "output.dense" is a suffix of both attention.output.dense and output.dense, as in PEFT.
  const std::vector<std::string> dense = {"output.dense"};
  const auto matched = matched_sites(model, dense);
  CHECK(matched.size() == 6u);
  const std::vector<std::string> typo = {"query", "vaule"};
  CHECK_THROWS_WITH_AS(attach_adapters(model, typo, [](const std::string&, Index out, Index in) {
                         return Lora<cpu>(out, in, LoraConfig{}, RandomStream(0, 0));
                       }),
                       doctest::Contains("vaule"), ValueError);
  CHECK(trainable_count(model).adapters == 0);  // nothing attached by the failed call
  CHECK(trainable_count(model).head == 7 * (48 + 1));
}
