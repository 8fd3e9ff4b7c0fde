// DebertaV2 against transformers / PEFT reference outputs and gradients
// (tests/data/deberta_*.safetensors from tools/make_deberta_fixtures.py), the
// disentangled attention against finite differences, and bad inputs.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "plora/adapters/lora.hpp"
#include "plora/backend/cpu/cpu.hpp"
#include "plora/io/deberta_checkpoint.hpp"
#include "plora/io/hf_config.hpp"
#include "plora/models/concepts.hpp"
#include "plora/models/deberta_v2.hpp"
#include "plora/models/sites.hpp"
#include "support/gradients.hpp"
#include "support/numeric.hpp"

using namespace plora;
using plora::test::check_same_gradients;
using plora::test::finite_difference;
using plora::test::max_abs_diff;
using plora::test::random_matrix;
using plora::test::relative_error;
using plora::test::weighted_sum;

using Deberta = DebertaV2<cpu, Lora<cpu>>;
static_assert(plora::Model<Deberta>);

namespace {
const std::string kData = PLORA_TEST_DATA_DIR;

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

std::vector<std::int32_t> ints(const io::SafetensorsFile& f, const std::string& name) {
  const auto v = f.load_ints(name);
  return {v.begin(), v.end()};
}

TokenBatch fixture_batch(const io::SafetensorsFile& f, bool regression) {
  TokenBatch b;
  const auto& shape = f.info("ref.input_ids").shape;
  b.batch = shape[0];
  b.seq_len = shape[1];
  b.input_ids = ints(f, "ref.input_ids");
  b.attention_mask = ints(f, "ref.attention_mask");
  b.token_type_ids = ints(f, "ref.token_type_ids");
  if (regression) {
    const HostMatrix targets = f.load("ref.labels");
    b.targets.assign(targets.values().begin(), targets.values().end());
  } else {
    b.labels = ints(f, "ref.labels");
  }
  return b;
}

/// max |a - b| over the rows of real (unpadded) tokens.
double real_token_diff(ConstHostView a, ConstHostView b, const std::vector<std::int32_t>& mask) {
  double worst = 0.0;
  for (Index r = 0; r < a.rows; ++r)
    if (mask[std::size_t(r)] != 0) worst = std::max(worst, max_abs_diff(a.row_block(r, 1), b.row_block(r, 1)));
  return worst;
}

struct Fixture {
  std::string name;
  nlohmann::json json;
  DebertaV2Config config;
  io::SafetensorsFile file;
  explicit Fixture(const std::string& n)
      : name(n), json(read_json(kData + "/deberta_" + n + ".json")), config(io::parse_deberta_v2_config(json, "deberta_" + n + ".json")),
        file(io::SafetensorsFile::open(kData + "/deberta_" + n + ".safetensors")) {}
  [[nodiscard]] std::string path() const { return kData + "/deberta_" + name + ".safetensors"; }
};

/// Attaches LoRA (r 4, alpha 8) to the fixture's target sites with PEFT's A and B values.
void attach_fixture_lora(Deberta& model, const Fixture& fx) {
  const auto targets = fx.json["lora_targets"].get<std::vector<std::string>>();
  const auto sites = attach_adapters(model, targets, [](const std::string& name, Index out, Index in) {
    return Lora<cpu>(out, in, LoraConfig{4, 8.0f}, RandomStream(0, stream_id(name)));
  });
  REQUIRE(sites.size() == 2 * targets.size());  // two layers
  for (const auto& s : sites) {
    auto& lora = model.site(s).adapter();
    cpu::copy(lora.lora_A(), fx.file.load("lora." + s + ".lora_A").view());
    cpu::copy(lora.lora_B(), fx.file.load("lora." + s + ".lora_B").view());
  }
}
}  // namespace

TEST_CASE("log-bucket relative positions equal PyTorch's float32 table (v3-base: 256 buckets, 512 positions)") {
  const auto file = io::SafetensorsFile::open(kData + "/deberta_rel.safetensors");
  const auto expected = file.load_ints("ref.buckets_v3");
  REQUIRE(expected.size() == 1023);
  int mismatches = 0;
  for (Index r = -511; r <= 511; ++r)
    mismatches += relative_position_bucket(r, 256, 512) != expected[std::size_t(r + 511)] ? 1 : 0;
  CHECK(mismatches == 0);
  CHECK(relative_position_bucket(511, 256, 512) == 255);  // log ratio exactly 127 before ceil
  CHECK(relative_position_bucket(-3, 8, 64) == -3);
}

TEST_CASE("the relative rows a sequence length reaches: exact distances within the buckets, all rows once clamped") {
  DisentangledOptions v3;  // v3-base: 256 buckets, 512 positions, 2 x 256 rows
  // |r| <= 127 is below 256 / 2 buckets: rows 256 - 127 ... 256 + 127.
  CHECK(reached_relative_rows(v3, 128).first == 129);
  CHECK(reached_relative_rows(v3, 128).count == 255);
  CHECK(reached_relative_rows(v3, 1).first == 256);
  CHECK(reached_relative_rows(v3, 1).count == 1);
  // 512 tokens reach bucket +-255: every row but row 0 (span - 255 = 1 and 256 + 255 = 511).
  CHECK(reached_relative_rows(v3, 512).first == 1);
  CHECK(reached_relative_rows(v3, 512).count == 511);
  DisentangledOptions small;
  small.position_buckets = 4;  // span 4, rows 0 ... 7; 40 tokens reach bucket +-4, clamped to row 0 and row 7
  small.max_relative_positions = 16;
  CHECK(reached_relative_rows(small, 40).first == 0);
  CHECK(reached_relative_rows(small, 40).count == 8);
}

TEST_CASE("DeBERTa-v2 forward equals transformers: logits and per-layer hidden states") {
  for (const std::string name : {"rel", "abs"}) {
    INFO("fixture deberta_", name);
    const Fixture fx(name);
    Deberta model = load_deberta_v2<cpu, Lora<cpu>>(fx.path(), fx.config);
    const TokenBatch batch = fixture_batch(fx.file, model.regression());
    const HostMatrix logits = to_host<cpu>(model.forward(batch));
    // fp32 through a 2-layer model of width <= 32 with O(1) activations: the
    // two implementations differ only by summation order, ~1e-6; 1e-4 leaves margin.
    CHECK(max_abs_diff(logits.view(), fx.file.load("ref.logits").view()) <= 1e-4);
    const Index layers = fx.config.num_hidden_layers;
    for (Index i = 0; i < layers; ++i) {
      INFO("hidden state ", i);
      const HostMatrix h = to_host<cpu>(model.hidden_state(i));
      CHECK(real_token_diff(h.view(), fx.file.load("ref.hidden." + std::to_string(i)).view(), batch.attention_mask) <=
            1e-4);
    }
    // The last layer computes token 0 of each sequence alone (the pooler's
    // input), or every token when asked.
    const HostMatrix top_expected = fx.file.load("ref.hidden." + std::to_string(layers));
    CHECK(max_abs_diff(to_host<cpu>(model.hidden_state(layers)).view(),
                       top_expected.view().every_nth_row(batch.seq_len)) <= 1e-4);
    model.set_every_token(true);
    CHECK(max_abs_diff(to_host<cpu>(model.forward(batch)).view(), logits.view()) <= 1e-5);
    CHECK(real_token_diff(to_host<cpu>(model.hidden_state(layers)).view(), top_expected.view(), batch.attention_mask) <=
          1e-4);
  }
}

TEST_CASE("a checkpoint directory (config.json + model.safetensors) loads the same model") {
  const Fixture fx("rel");
  const auto dir = std::filesystem::temp_directory_path() / "plora_test_deberta_checkpoint";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(kData + "/deberta_rel.json", dir / "config.json");
  std::filesystem::copy_file(fx.path(), dir / "model.safetensors");
  Deberta model = load_deberta_v2<cpu, Lora<cpu>>(dir);
  CHECK(model.config().position_buckets == 8);
  const TokenBatch batch = fixture_batch(fx.file, false);
  CHECK(max_abs_diff(to_host<cpu>(model.forward(batch)).view(), fx.file.load("ref.logits").view()) <= 1e-4);
  CHECK(model.site_names().size() == 2 * 6);
  CHECK(model.site_names().front() == "deberta.encoder.layer.0.attention.self.query_proj");
  // A config with fewer layers than the file: refused, not the upper layers dropped.
  DebertaV2Config fewer = fx.config;
  fewer.num_hidden_layers -= 1;
  const std::string expected = "of encoder layer " + std::to_string(fewer.num_hidden_layers) +
                               ", but the config has num_hidden_layers " + std::to_string(fewer.num_hidden_layers);
  CHECK_THROWS_WITH_AS((load_deberta_v2<cpu, Lora<cpu>>(fx.path(), fewer)), doctest::Contains(expected.c_str()),
                       IoError);
  std::filesystem::remove_all(dir);
}

TEST_CASE("deberta_v2_weight_source reads Hub keys from the file, a new task's classifier from nowhere") {
  const Fixture fx("rel");
  const WeightSource with_head = deberta_v2_weight_source(fx.file);
  const WeightSource new_head = deberta_v2_weight_source(fx.file, Head::New);
  const std::string embeddings = "deberta.embeddings.word_embeddings.weight";
  const HostMatrix stored = fx.file.load(embeddings);
  for (const WeightSource* source : {&with_head, &new_head}) {
    const auto loaded = (*source)(embeddings, stored.rows(), stored.cols());
    REQUIRE(loaded.has_value());
    CHECK(max_abs_diff(loaded->view(), stored.view()) == 0.0);
    CHECK_FALSE((*source)("deberta.no_such_tensor", 1, 1).has_value());  // the model draws it
    CHECK_THROWS_AS((*source)(embeddings, stored.rows() + 1, stored.cols()), ShapeError);
  }
  const auto head = with_head("classifier.weight", 3, 32);
  REQUIRE(head.has_value());
  CHECK(max_abs_diff(head->view(), fx.file.load("classifier.weight").view()) == 0.0);
  CHECK_FALSE(new_head("classifier.weight", 3, 32).has_value());
  CHECK_FALSE(new_head("classifier.bias", 1, 3).has_value());
  CHECK(new_head("pooler.dense.weight", 32, 32).has_value());  // only the classifier is new
}

TEST_CASE("DeBERTa-v2 + LoRA: loss, logits, LoRA and head gradients equal PEFT's") {
  for (const std::string name : {"rel", "abs"}) {
    INFO("fixture deberta_", name);
    const Fixture fx(name);
    Deberta model = load_deberta_v2<cpu, Lora<cpu>>(fx.path(), fx.config);
    attach_fixture_lora(model, fx);
    const TokenBatch batch = fixture_batch(fx.file, model.regression());
    // An inference pass first: it hands the layers' activation buffers around,
    // which the training pass after it must not notice.
    (void)model.forward(batch);
    model.zero_grad();
    const float loss = model.forward_backward(batch);
    CHECK(std::abs(loss - fx.file.load("ref.loss_lora")(0, 0)) <= 1e-4);
    CHECK(max_abs_diff(to_host<cpu>(model.forward(batch)).view(), fx.file.load("ref.logits_lora", batch.batch, fx.config.num_labels).view()) <= 1e-4);

    Index compared = 0;
    for (const auto& p : model.parameters()) {
      INFO("parameter ", p.name);
      const std::string key = "grad." + p.name;
      REQUIRE(fx.file.contains(key));
      const HostMatrix expected = fx.file.load(key, p.grad.rows, p.grad.cols);
      // fp32 backward through attention softmax and two LayerNorms: relative
      // error ~1e-5 expected from summation order; the bound is 1e-3.
      CHECK(relative_error(to_host<cpu>(p.grad).view(), expected.view()) <= 1e-3);
      ++compared;
    }
    // Every adapter (A and B per site, two layers) and the four head tensors.
    CHECK(compared == 2 * 2 * static_cast<Index>(fx.json["lora_targets"].size()) + 4);
  }
}

TEST_CASE("disentangled attention backward equals finite differences (input and LoRA on the shared projections)") {
  // 2 sequences of 5 tokens, width 8, 2 heads, 4 buckets (so log buckets and clamping occur).
  const Index tokens = 5, batch = 2, hidden = 8, rows = batch * tokens;
  DisentangledOptions options;
  options.heads = 2;
  options.position_buckets = 4;
  options.max_relative_positions = 16;
  using Site = LinearSite<cpu, Lora<cpu>>;
  const auto site = [&](const std::string& name, std::uint64_t seed) {
    return Site(name, random_matrix(hidden, hidden, seed, -0.5f, 0.5f), random_matrix(1, hidden, seed + 100));
  };
  DisentangledSelfAttention<cpu, Lora<cpu>> attention(site("q", 1), site("k", 2), site("v", 3), std::nullopt,
                                                      std::nullopt, options);
  for (Site* s : {&attention.query(), &attention.key()}) {
    Lora<cpu> lora(hidden, hidden, LoraConfig{2, 4.0f}, RandomStream(9, stream_id(s->name())));
    cpu::copy(lora.lora_B(), random_matrix(hidden, 2, 11, -0.5f, 0.5f).view());  // B != 0
    s->attach(std::move(lora));
  }
  HostMatrix x = random_matrix(rows, hidden, 4);
  const HostMatrix rel = random_matrix(2 * options.span(), hidden, 5);
  HostMatrix mask(batch, tokens);
  mask(1, 4) = -1e30f;  // one padded key
  DisentangledScratch<cpu> scratch;
  BackwardScratch<cpu> common;
  HostMatrix every(rows, hidden);
  attention.forward(every.view(), x.view(), rel.view(), mask.view(), tokens, scratch);
  // Every token's queries, then the first token's alone (c2p one row, p2c one column per image and head).
  for (const Queries queries : {Queries::every_token, Queries::first_token}) {
    const Index out_rows = queries == Queries::every_token ? rows : batch;
    INFO("queries of ", out_rows, " rows");
    const HostMatrix weights = random_matrix(out_rows, hidden, 6);
    HostMatrix context(out_rows, hidden);
    const auto loss = [&] {
      attention.forward(context.view(), x.view(), rel.view(), mask.view(), tokens, scratch, nullptr, queries);
      return weighted_sum(context.view(), weights.view());
    };
    (void)loss();
    // The same float sums as token 0's rows of the full pass, possibly blocked
    // differently by GEMMs of other shapes: a few ulps of O(1) values.
    CHECK(max_abs_diff(context.view(), every.view().every_nth_row(rows / out_rows)) <= 1e-6);
    for (Site* s : {&attention.query(), &attention.key()}) s->adapter().zero_grad();
    HostMatrix dx(rows, hidden);
    attention.backward(dx.view(), weights.view(), x.view(), rel.view(), common, scratch);

    // Central differences, h = 1e-2 on O(1) inputs: truncation ~h^2 and rounding
    // ~1e-7 |loss| / h, both below 1e-3 of the gradients' scale; we allow 5e-3.
    CHECK(relative_error(dx.view(), finite_difference(x.view(), loss).view()) <= 5e-3);
    for (Site* s : {&attention.query(), &attention.key()}) {
      INFO("site ", s->name());
      const HostMatrix grad_b(s->adapter().lora_B_grad());
      const HostMatrix grad_a(s->adapter().lora_A_grad());
      CHECK(relative_error(grad_b.view(), finite_difference(s->adapter().lora_B(), loss).view()) <= 5e-3);
      CHECK(relative_error(grad_a.view(), finite_difference(s->adapter().lora_A(), loss).view()) <= 5e-3);
    }
  }
}

TEST_CASE("DeBERTa's last layer computes token 0 alone unless every token is asked for: the same logits, loss, gradients") {
  const Fixture fx("rel");  // c2p + p2c, log buckets, a padded sequence
  const auto make = [&] {
    Deberta m = load_deberta_v2<cpu, Lora<cpu>>(fx.path(), fx.config);
    attach_fixture_lora(m, fx);
    return m;
  };
  Deberta pruned = make(), every = make();
  every.set_every_token(true);
  const TokenBatch batch = fixture_batch(fx.file, false);
  // Both compute token 0's rows with the same float operations; GEMMs over
  // fewer rows may block their sums differently: ulps of O(1) values, grown
  // through two layers to ~1e-6 relative. A dropped or misplaced row gives O(1) errors.
  CHECK(max_abs_diff(to_host<cpu>(pruned.forward(batch)).view(), to_host<cpu>(every.forward(batch)).view()) <= 1e-5);
  pruned.zero_grad();
  every.zero_grad();
  CHECK(std::abs(double(pruned.forward_backward(batch)) - double(every.forward_backward(batch))) <= 1e-6);
  check_same_gradients(pruned.parameters(), every.parameters(), 1e-5);
}

TEST_CASE("DeBERTa forward from a layer's input gives forward's logits bitwise, whatever pass ran before") {
  static_assert(LayeredModel<Deberta>);
  const Fixture fx("rel");  // c2p + p2c, log buckets, a padded sequence: the key mask and rel reach every layer
  Deberta model = load_deberta_v2<cpu, Lora<cpu>>(fx.path(), fx.config);
  attach_fixture_lora(model, fx);
  const TokenBatch batch = fixture_batch(fx.file, false);
  const Index layers = fx.config.num_hidden_layers;
  REQUIRE(layers == 2);
  const HostMatrix logits = to_host<cpu>(model.forward(batch));
  const HostMatrix input0 = to_host<cpu>(model.hidden_state(0)), input1 = to_host<cpu>(model.hidden_state(1));
  // The same float operations on the same layer inputs: equal bitwise, also
  // after passes that left the layers' buffers elsewhere.
  CHECK(max_abs_diff(to_host<cpu>(model.forward_from(1, input1.view(), batch)).view(), logits.view()) == 0.0);
  CHECK(max_abs_diff(to_host<cpu>(model.forward_from(0, input0.view(), batch)).view(), logits.view()) == 0.0);
  CHECK(max_abs_diff(to_host<cpu>(model.forward_from(1, input1.view(), batch)).view(), logits.view()) == 0.0);
  CHECK(max_abs_diff(to_host<cpu>(model.forward(batch)).view(), logits.view()) == 0.0);

  CHECK(model.layer_of("deberta.encoder.layer.1.attention.self.query_proj") == 1);
  CHECK_THROWS_WITH_AS((void)model.layer_of("deberta.encoder.layer.2.attention.self.query_proj"),
                       doctest::Contains("has no site"), ValueError);
  for (const char* alias : {"deberta.encoder.layer.01.attention.self.query_proj",
                            "deberta.encoder.layer.+1.attention.self.query_proj",
                            "deberta.encoder.layer.-0.attention.self.query_proj"})
    CHECK_THROWS_WITH_AS((void)model.layer_of(alias), doctest::Contains("has no site"), ValueError);
  CHECK_THROWS_WITH_AS(model.forward_from(2, input1.view(), batch), doctest::Contains("layer 2 is outside [0, 2)"),
                       ValueError);
  const HostMatrix narrow(input1.rows(), input1.cols() - 1);
  CHECK_THROWS_WITH_AS(model.forward_from(1, narrow.view(), batch), doctest::Contains("expected"), ShapeError);
}

TEST_CASE("DeBERTa-v2 layer gradients equal finite differences through the full model (abs config)") {
  const Fixture fx("abs");
  const TokenBatch batch = fixture_batch(fx.file, true);
  // The fixture's N(0, 0.02) head makes backbone gradients ~1e-3, where float
  // rounding swamps finite differences; a 10x larger pooler and classifier
  // raise them ~100x (loss O(1)) so central differences with h = 1e-2 resolve
  // them to ~1e-3 relative.
  const auto make = [&] {
    Deberta m = load_deberta_v2<cpu, Lora<cpu>>(fx.path(), fx.config);
    attach_fixture_lora(m, fx);
    cpu::scale(m.pooler().weight(), 10.0f);
    cpu::scale(m.classifier().weight(), 10.0f);
    return m;
  };
  Deberta model = make(), probe = make();
  model.zero_grad();
  (void)model.forward_backward(batch);
  const auto loss = [&] {
    probe.zero_grad();
    return double(probe.forward_backward(batch));
  };
  // Layer-0 adapters: their gradients cross layer 1, the pooler, the GELU and
  // the MSE head; pos_key_proj acts only through the c2p relative-position path.
  for (const std::string site : {"deberta.encoder.layer.0.attention.self.pos_key_proj",
                                 "deberta.encoder.layer.0.attention.self.query_proj"}) {
    INFO("site ", site);
    const HostMatrix analytic(model.site(site).adapter().lora_B_grad());
    CHECK(relative_error(analytic.view(), finite_difference(probe.site(site).adapter().lora_B(), loss).view()) <= 1e-2);
  }
}

TEST_CASE("DeBERTa-v2 training dropouts: transformers' placement, reproducible masks, gradients equal finite differences") {
  const Fixture fx("rel");  // hidden 0.1, attention 0.1, pooler 0, cls absent (-> 0.1); c2p + p2c, shared keys
  DebertaV2Config config = fx.config;
  config.pooler_dropout = 0.1f;  // every dropout of the model active
  const TokenBatch batch = fixture_batch(fx.file, false);
  // A 10x head as in the test above, so the adapter gradients are large enough for finite differences.
  const auto make = [&] {
    Deberta m = load_deberta_v2<cpu, Lora<cpu>>(fx.path(), config);
    attach_fixture_lora(m, fx);
    cpu::scale(m.pooler().weight(), 10.0f);
    cpu::scale(m.classifier().weight(), 10.0f);
    return m;
  };
  Deberta model = make(), probe = make();
  const Index n = batch.batch, tokens = batch.seq_len, rows = n * tokens, hidden = fx.config.hidden_size;
  const Index heads = fx.config.num_attention_heads, span = fx.config.position_buckets;

  CHECK(model.dropout_stream().offset() == 0);
  const HostMatrix eval_logits = to_host<cpu>(model.forward(batch));  // a new model evaluates: no draws
  CHECK(model.dropout_stream().offset() == 0);
  model.set_training(true);
  model.zero_grad();
  (void)model.forward_backward(batch);
  // Elements drawn by one training forward: the embeddings; per layer the
  // layer's copy of rel, the attention probabilities and both residual
  // branches (in the last layer for token 0's queries and rows only); the
  // pooler's input (token 0) and the classifier's input.
  const auto per_layer = static_cast<std::uint64_t>(2 * span * hidden + n * heads * tokens * tokens + 2 * rows * hidden);
  const auto last_layer = static_cast<std::uint64_t>(2 * span * hidden + n * heads * tokens + 2 * n * hidden);
  const auto per_forward = static_cast<std::uint64_t>(rows * hidden + 2 * n * hidden) +
                           static_cast<std::uint64_t>(fx.config.num_hidden_layers - 1) * per_layer + last_layer;
  CHECK(model.dropout_stream().offset() == per_forward);

  // Layer-0 query_proj sees the attention and rel dropouts of both layers and
  // both residual-branch dropouts of layer 1; the classifier sees its own.
  plora::test::check_training_dropout(model, probe, batch, eval_logits,
                                      "deberta.encoder.layer.0.attention.self.query_proj");
}

TEST_CASE("DeBERTa-v2 bad inputs and checkpoints give clear errors") {
  const Fixture fx("rel");
  Deberta model = load_deberta_v2<cpu, Lora<cpu>>(fx.path(), fx.config);
  TokenBatch batch = fixture_batch(fx.file, false);

  TokenBatch out_of_vocab = batch;
  out_of_vocab.input_ids[5] = static_cast<std::int32_t>(fx.config.vocab_size);
  CHECK_THROWS_WITH_AS((void)model.forward(out_of_vocab), doctest::Contains("outside the vocabulary"), ValueError);

  TokenBatch too_long;
  too_long.batch = 1;
  too_long.seq_len = fx.config.max_position_embeddings + 1;
  too_long.input_ids.assign(std::size_t(too_long.seq_len), 5);
  too_long.attention_mask.assign(std::size_t(too_long.seq_len), 1);
  CHECK_THROWS_WITH_AS((void)model.forward(too_long), doctest::Contains("max_position_embeddings"), ValueError);

  TokenBatch bad_label = batch;
  bad_label.labels[0] = 7;
  CHECK_THROWS_AS((void)model.forward_backward(bad_label), ValueError);
  TokenBatch two_in_mask = batch;
  two_in_mask.attention_mask[3] = 2;
  CHECK_THROWS_WITH_AS((void)model.forward(two_in_mask),
                       doctest::Contains("attention_mask value 2 at sequence 0 position 3 is not 0 (padding) or 1"),
                       ValueError);
  TokenBatch short_mask = batch;
  short_mask.attention_mask.pop_back();
  CHECK_THROWS_AS((void)model.forward(short_mask), ShapeError);
  {  // a regression target that is not a number (the abs fixture is the regression model)
    const Fixture abs("abs");
    Deberta regression = load_deberta_v2<cpu, Lora<cpu>>(abs.path(), abs.config);
    TokenBatch nan_target = fixture_batch(abs.file, true);
    nan_target.targets[1] = std::numeric_limits<float>::quiet_NaN();
    CHECK_THROWS_WITH_AS((void)regression.forward_backward(nan_target), doctest::Contains("regression target 1 is nan"),
                         ValueError);
  }
  TokenBatch overflowing;  // batch x seq_len wrapped to 0 and passed the size check
  overflowing.batch = Index{1} << 62;
  overflowing.seq_len = 4;
  CHECK_THROWS_WITH_AS((void)model.forward(overflowing), doctest::Contains("tokens overflow a count"), ShapeError);
  DebertaV2Config one_bucket = fx.config;
  one_bucket.position_buckets = 1;  // log-bucketing would divide by buckets / 2 = 0
  CHECK_THROWS_WITH_AS(Deberta(one_bucket, [&](const std::string& key, Index rows, Index cols) {
                         return fx.file.contains(key) ? std::optional(fx.file.load(key, rows, cols)) : std::nullopt;
                       }),
                       doctest::Contains("position_buckets 1 must be <= 0 (none) or >= 2"), ValueError);

  CHECK_THROWS_WITH_AS((void)model.site("deberta.encoder.layer.9.attention.self.query_proj"),
                       doctest::Contains("no site"), ValueError);
  const auto load_missing = [&] { return load_deberta_v2<cpu, Lora<cpu>>(kData + "/no_such_checkpoint", fx.config); };
  CHECK_THROWS_WITH_AS(load_missing(), doctest::Contains("no_such_checkpoint"), IoError);

  // A checkpoint without one backbone tensor: the error names it.
  const auto without = [&](const std::string& hidden_key) {
    return [&, hidden_key](const std::string& key, Index rows, Index cols) -> std::optional<HostMatrix> {
      if (key == hidden_key || !fx.file.contains(key)) return std::nullopt;
      return fx.file.load(key, rows, cols);
    };
  };
  const std::string missing = "deberta.encoder.layer.1.attention.self.key_proj.bias";
  CHECK_THROWS_WITH_AS(Deberta(fx.config, without(missing)), doctest::Contains(missing.c_str()), IoError);
  CHECK_THROWS_WITH_AS(Deberta(fx.config, without("deberta.encoder.rel_embeddings.weight")),
                       doctest::Contains("rel_embeddings"), IoError);
  // A corrupt layer count: the first layer the checkpoint lacks is named
  // (reserving a billion layers threw std::bad_alloc).
  DebertaV2Config many_layers = fx.config;
  many_layers.num_hidden_layers = 1'000'000'000;
  const std::string first_missing = "deberta.encoder.layer." + std::to_string(fx.config.num_hidden_layers) + ".";
  CHECK_THROWS_WITH_AS(Deberta(many_layers, without("")), doctest::Contains(first_missing.c_str()), IoError);

  // No pooler / classifier in the checkpoint (deberta-v3-base): drawn N(0, 0.02), zero biases.
  Deberta fresh(fx.config, without("pooler.dense.weight"), 3);
  const HostMatrix pooler(fresh.pooler().weight());
  double sum_squares = 0.0;
  for (const float v : pooler.values()) sum_squares += double(v) * v;
  const double std_dev = std::sqrt(sum_squares / double(pooler.size()));
  CHECK(std_dev == doctest::Approx(0.02).epsilon(0.15));  // 1024 draws: std error ~2%

  DebertaV2Config bad = fx.config;
  bad.hidden_act = "gelu_new";
  CHECK_THROWS_WITH_AS(Deberta(bad, without("")), doctest::Contains("gelu_new"), ValueError);
  DebertaV2Config bad_dropout = fx.config;
  bad_dropout.attention_probs_dropout_prob = 1.0f;
  CHECK_THROWS_WITH_AS(Deberta(bad_dropout, without("")), doctest::Contains("attention_probs_dropout_prob"), ValueError);
  bad = fx.config;
  bad.num_attention_heads = 5;
  CHECK_THROWS_AS(Deberta(bad, without("")), ValueError);
}

