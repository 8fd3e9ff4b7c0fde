#pragma once
// The runner's built-in demo, which needs no download. No pretrained DeBERTa
// and no labelled text set ship with Debian, but every Debian machine has the
// license texts of base-files in /usr/share/common-licenses: real English, with
// a natural label (which license a sentence comes from).
//
// Like the ViT runner's digits demo, a small DeBERTa-v2 is first pretrained on
// a source task (sentences of five licenses) and cached as a Hugging Face
// checkpoint directory (model.safetensors with Hub key names, config.json,
// spm.model) by the flow both demos share (common/demo_pretraining.hpp). What
// is this demo's own: a SentencePiece model and word embeddings (PPMI-SVD, no
// labels) learnt from the sentences of all ten licenses, and pooler +
// classifier as the head trained in full. The target task is the same question
// on five other licenses.
#include <sentencepiece_trainer.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <numeric>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/demo_pretraining.hpp"
#include "common/pipeline.hpp"
#include "common/report.hpp"
#include "deberta_runner/deberta_task.hpp"
#include "plora/adapters/full_delta.hpp"
#include "plora/io/atomic_file.hpp"
#include "plora/io/glue.hpp"
#include "plora/io/tokenizer.hpp"
#include "plora/models/deberta_v2.hpp"

namespace plora::runner {

inline const std::filesystem::path kLicenseDir = "/usr/share/common-licenses";
/// Pretraining classes and fine-tuning classes; no license is in both.
inline const std::vector<std::string> kSourceLicenses = {"GPL-3", "LGPL-2.1", "MPL-1.1", "GFDL-1.2", "Apache-2.0"};
inline const std::vector<std::string> kTargetLicenses = {"GPL-2", "MPL-2.0", "GFDL-1.3", "Artistic", "CC0-1.0"};
/// Sentences longer than this are cut into balanced pieces; shorter pieces than
/// kMinWords (headings, section numbers) are dropped.
inline constexpr std::size_t kMaxWords = 32;
inline constexpr std::size_t kMinWords = 4;
inline constexpr double kLicenseTestFraction = 0.25;
inline constexpr std::uint64_t kLicenseSplitSeed = 0;
/// Co-occurrence window (pieces either side) of the demo's word embeddings.
inline constexpr Index kEmbeddingWindow = 5;

/// How the demo's source model is pretrained; all of it is part of the cache key.
struct LicensePretraining {
  Index epochs = 20;
  double lr = 3e-3;
  Index batch = 32;
  double weight_decay = 0.01;
  std::uint64_t seed = 0;   ///< initialisation and batch order; independent of the run's --seed
  Index max_examples = 0;   ///< pretrain on at most this many source sentences (0 = all)
  Index vocab_size = 1000;  ///< SentencePiece pieces, specials included
  Index max_length = 64;    ///< tokens per sequence, [CLS] and [SEP] included
};

/// The demo DeBERTa-v2: v3's architecture (relative attention c2p|p2c with
/// shared keys, log buckets, LayerNorm on the relative embeddings, no absolute
/// positions), small. Dropouts 0: plora runs DeBERTa in eval mode.
inline DebertaV2Config licenses_deberta_config(Index vocab_size, Index num_labels) {
  DebertaV2Config c;
  c.vocab_size = vocab_size;
  c.hidden_size = 64;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.intermediate_size = 256;
  c.hidden_dropout_prob = 0.0f;
  c.attention_probs_dropout_prob = 0.0f;
  c.max_position_embeddings = 512;
  c.relative_attention = true;
  c.position_buckets = 32;
  c.share_att_key = true;
  c.pos_att_type = {"p2c", "c2p"};
  c.norm_rel_ebd = "layer_norm";
  c.position_biased_input = false;
  c.type_vocab_size = 0;
  c.num_labels = num_labels;
  return c;
}

/// The sentences of a license text: paragraphs (blank-line separated) joined
/// into one line each, split after words ending in '.', '?', '!', ';' or ':',
/// sentences over kMaxWords cut into balanced pieces, pieces under kMinWords
/// dropped.
inline std::vector<std::string> license_sentences(std::string_view text) {
  std::vector<std::string> out;
  std::vector<std::string> words;
  const auto emit = [&] {
    if (words.empty()) return;
    const std::size_t pieces = (words.size() + kMaxWords - 1) / kMaxWords;
    for (std::size_t p = 0; p < pieces; ++p) {
      const std::size_t begin = words.size() * p / pieces, end = words.size() * (p + 1) / pieces;
      if (end - begin < kMinWords) continue;
      std::string sentence;
      for (std::size_t w = begin; w < end; ++w) sentence += (w == begin ? "" : " ") + words[w];
      out.push_back(std::move(sentence));
    }
    words.clear();
  };
  std::size_t at = 0;
  while (at < text.size()) {
    std::size_t end = text.find('\n', at);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(at, end - at);
    at = end + 1;
    if (line.find_first_not_of(" \t\r\f") == std::string_view::npos) {
      emit();  // a paragraph ends
      continue;
    }
    for (std::size_t i = 0; i < line.size();) {
      while (i < line.size() && std::isspace(static_cast<unsigned char>(line[i]))) ++i;
      std::size_t j = i;
      while (j < line.size() && !std::isspace(static_cast<unsigned char>(line[j]))) ++j;
      if (j == i) break;
      words.emplace_back(line.substr(i, j - i));
      if (std::string_view(".?!;:").find(words.back().back()) != std::string_view::npos) emit();
      i = j;
    }
  }
  emit();
  return out;
}

/// What two sentences are compared by: their letters and digits, case-folded.
inline std::string sentence_key(std::string_view sentence) {
  std::string key;
  for (const char c : sentence)
    if (std::isalnum(static_cast<unsigned char>(c))) key += char(std::tolower(static_cast<unsigned char>(c)));
  return key;
}

/// Labelled sentences of `licenses` (label = position in the list) read from
/// `dir`. A text is kept once; a text that occurs in two of the licenses
/// (compared by sentence_key) is dropped, since its label would be ambiguous.
inline std::vector<TextExample> license_examples(const std::filesystem::path& dir,
                                                 const std::vector<std::string>& licenses) {
  struct Seen {
    std::int32_t label;
    bool ambiguous;
  };
  std::map<std::string, Seen> seen;
  std::vector<TextExample> examples;
  for (std::size_t l = 0; l < licenses.size(); ++l) {
    const std::filesystem::path file = dir / licenses[l];
    check<IoError>(std::filesystem::is_regular_file(file), "license text '", file.string(),
                   "' does not exist (the demo reads Debian's base-files texts; --checkpoint and --task run "
                   "without them)");
    for (auto& sentence : license_sentences(io::detail::read_file(file))) {
      const std::string key = sentence_key(sentence);
      const auto label = static_cast<std::int32_t>(l);
      const auto [it, fresh] = seen.try_emplace(key, Seen{label, false});
      if (fresh) {
        examples.push_back({std::move(sentence), {}, label, 0.0f});
      } else if (it->second.label != label) {
        it->second.ambiguous = true;
      }
    }
  }
  std::erase_if(examples, [&](const TextExample& e) { return seen.at(sentence_key(e.a)).ambiguous; });
  return examples;
}

namespace detail {
/// Feeds a list of sentences to SentencePiece's trainer.
class SentenceList : public sentencepiece::SentenceIterator {
 public:
  explicit SentenceList(std::span<const std::string> sentences) : sentences_(sentences) {}
  bool done() const override { return next_ >= sentences_.size(); }
  void Next() override { ++next_; }
  const std::string& value() const override { return sentences_[next_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  std::span<const std::string> sentences_;
  std::size_t next_ = 0;
};
}  // namespace detail

/// Trains a unigram SentencePiece model on `sentences` with DeBERTa-v3's
/// specials ([PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3, [MASK] user-defined) and writes
/// it to `file`. One thread, so the model is the same on every run.
inline void train_sentencepiece(const std::filesystem::path& file, std::span<const std::string> sentences,
                                Index vocab_size) {
  const std::unordered_map<std::string, std::string> options = {
      {"model_type", "unigram"},     {"vocab_size", std::to_string(vocab_size)},
      {"character_coverage", "1.0"}, {"pad_id", "0"},
      {"pad_piece", "[PAD]"},        {"bos_id", "1"},
      {"bos_piece", "[CLS]"},        {"eos_id", "2"},
      {"eos_piece", "[SEP]"},        {"unk_id", "3"},
      {"unk_piece", "[UNK]"},        {"user_defined_symbols", "[MASK]"},
      {"num_threads", "1"},          {"minloglevel", "2"},
      {"model_prefix", ""}};
  detail::SentenceList list(sentences);
  std::string model;
  const auto status = sentencepiece::SentencePieceTrainer::Train(options, &list, &model);
  check<ValueError>(status.ok(), "SentencePiece training on ", sentences.size(), " sentences (vocab_size ",
                    vocab_size, ") failed: ", status.ToString());
  io::write_file_atomically(file, model);
}

/// A stratified split of `examples` into {train, test}: a `test_fraction`
/// share of each class (at least one example) held out, drawn from `seed`.
inline std::pair<std::vector<TextExample>, std::vector<TextExample>> stratified_split(
    const std::vector<TextExample>& examples, double test_fraction, std::uint64_t seed) {
  std::map<std::int32_t, std::vector<Index>> by_class;
  for (Index i = 0; i < static_cast<Index>(examples.size()); ++i)
    by_class[examples[static_cast<std::size_t>(i)].label].push_back(i);
  std::vector<Index> train, test;
  for (auto& [label, members] : by_class) {
    RandomStream rng(seed, stream_id("deberta_runner.split") + static_cast<std::uint64_t>(label));
    io::detail::shuffle(members, rng);
    const auto held = std::max<std::size_t>(
        1, static_cast<std::size_t>(test_fraction * static_cast<double>(members.size()) + 0.5));
    test.insert(test.end(), members.begin(), members.begin() + std::ptrdiff_t(std::min(held, members.size())));
    train.insert(train.end(), members.begin() + std::ptrdiff_t(std::min(held, members.size())), members.end());
  }
  const auto pick = [&](std::vector<Index> indices) {
    std::sort(indices.begin(), indices.end());
    std::vector<TextExample> out;
    for (const Index i : indices) out.push_back(examples[static_cast<std::size_t>(i)]);
    return out;
  };
  return {pick(std::move(train)), pick(std::move(test))};
}

/// Word embeddings learnt from unlabelled sentences, the demo's stand-in for
/// DeBERTa's masked-LM pretraining (plora trains sites and heads, never the
/// embeddings): the rank-`dims` truncated SVD U_k sqrt(S_k) of the positive
/// pointwise mutual information of pieces co-occurring within `window`
/// positions (context counts smoothed by the power 0.75; Levy, Goldberg and
/// Dagan 2015). Pieces the corpus never shows (the specials among them) keep
/// the N(0, 1) rows of `random_rows`. Returns (vocab x dims) row-major values.
/// @tparam B  backend of the SVD
template <Backend B>
HostMatrix::Values corpus_embeddings(const DebertaV2Tokenizer& tokenizer, std::span<const std::string> sentences,
                                     Index dims, Index window, HostMatrix::Values random_rows) {
  const Index vocab = tokenizer.vocab_size();
  check<ValueError>(static_cast<Index>(random_rows.size()) == vocab * dims, "corpus_embeddings: ",
                    random_rows.size(), " random values for ", vocab, " x ", dims);
  std::vector<double> counts(static_cast<std::size_t>(vocab * vocab), 0.0), row(static_cast<std::size_t>(vocab), 0.0);
  for (const auto& sentence : sentences) {
    const std::vector<std::int32_t> ids = tokenizer.tokenize(sentence);
    const auto n = static_cast<Index>(ids.size());
    for (Index i = 0; i < n; ++i)
      for (Index j = std::max<Index>(0, i - window); j < std::min(n, i + window + 1); ++j)
        if (j != i) counts[static_cast<std::size_t>(ids[std::size_t(i)] * vocab + ids[std::size_t(j)])] += 1.0;
  }
  double total = 0.0, smoothed_total = 0.0;
  std::vector<double> context(static_cast<std::size_t>(vocab), 0.0);
  for (Index w = 0; w < vocab; ++w)
    for (Index c = 0; c < vocab; ++c) {
      const double n = counts[static_cast<std::size_t>(w * vocab + c)];
      row[std::size_t(w)] += n;
      context[std::size_t(c)] += n;
      total += n;
    }
  for (double& c : context) smoothed_total += (c = std::pow(c, 0.75));
  HostMatrix ppmi(vocab, vocab);
  for (Index w = 0; w < vocab; ++w)
    for (Index c = 0; c < vocab; ++c) {
      const double n = counts[static_cast<std::size_t>(w * vocab + c)];
      if (n > 0.0)
        ppmi(w, c) = static_cast<float>(std::max(
            0.0, std::log(n / total / (row[std::size_t(w)] / total * context[std::size_t(c)] / smoothed_total))));
    }
  typename B::Matrix a = to_backend<B>(ppmi.view()), u, s, vt;
  B::svd(u, s, vt, a.view());
  const HostMatrix hu = to_host<B>(u.view()), hs = to_host<B>(s.view());
  for (Index w = 0; w < vocab; ++w) {
    if (row[std::size_t(w)] == 0.0) continue;
    for (Index k = 0; k < dims && k < hs.cols(); ++k)
      random_rows[std::size_t(w * dims + k)] = hu(w, k) * std::sqrt(hs(0, k));
  }
  return random_rows;
}

namespace detail {
/// Every tensor of DebertaV2ForSequenceClassification for `c`, initialised
/// from `seed`: linear sites and head as transformers initialises them,
/// LayerNorms 1 / 0. Word and relative embeddings get no gradient in plora
/// (only sites and head train): the relative ones stay random features,
/// N(0, 1) (the LayerNorm after them rescales them anyway); the word
/// embeddings' N(0, 1) rows are replaced by corpus_embeddings where the corpus
/// has the piece.
inline HubTensors initial_deberta_weights(const DebertaV2Config& c, std::uint64_t seed) {
  HubTensorInit init(seed);
  const Index h = c.hidden_size;
  init.add("deberta.embeddings.word_embeddings.weight", {c.vocab_size, h}, 1.0f);
  init.layernorm("deberta.embeddings.LayerNorm", h);
  init.add("deberta.encoder.rel_embeddings.weight", {2 * c.position_buckets, h}, 1.0f);
  init.layernorm("deberta.encoder.LayerNorm", h);
  for (Index i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "deberta.encoder.layer." + std::to_string(i) + ".";
    for (const char* proj : {"query_proj", "key_proj", "value_proj"}) init.linear(p + "attention.self." + proj, h, h);
    init.linear(p + "attention.output.dense", h, h);
    init.layernorm(p + "attention.output.LayerNorm", h);
    init.linear(p + "intermediate.dense", c.intermediate_size, h);
    init.linear(p + "output.dense", h, c.intermediate_size);
    init.layernorm(p + "output.LayerNorm", h);
  }
  init.linear("pooler.dense", h, h);
  init.linear("classifier", c.num_labels, h);
  return std::move(init).take();
}

inline nlohmann::ordered_json hub_config_json(const DebertaV2Config& c, const std::vector<std::string>& labels) {
  const auto [id2label, label2id] = hub_label_maps(labels);
  return {{"architectures", {"DebertaV2ForSequenceClassification"}},
          {"model_type", "deberta-v2"},
          {"vocab_size", c.vocab_size},
          {"hidden_size", c.hidden_size},
          {"num_hidden_layers", c.num_hidden_layers},
          {"num_attention_heads", c.num_attention_heads},
          {"intermediate_size", c.intermediate_size},
          {"hidden_act", c.hidden_act},
          {"hidden_dropout_prob", c.hidden_dropout_prob},
          {"attention_probs_dropout_prob", c.attention_probs_dropout_prob},
          {"max_position_embeddings", c.max_position_embeddings},
          {"type_vocab_size", c.type_vocab_size},
          {"initializer_range", 0.02},
          {"layer_norm_eps", c.layer_norm_eps},
          {"relative_attention", c.relative_attention},
          {"max_relative_positions", c.max_relative_positions},
          {"position_buckets", c.position_buckets},
          {"share_att_key", c.share_att_key},
          {"pos_att_type", c.pos_att_type},
          {"norm_rel_ebd", c.norm_rel_ebd},
          {"position_biased_input", c.position_biased_input},
          {"pad_token_id", c.pad_token_id},
          {"pooler_hidden_size", c.hidden_size},
          {"pooler_hidden_act", c.pooler_hidden_act},
          {"pooler_dropout", c.pooler_dropout},
          {"id2label", id2label},
          {"label2id", label2id},
          {"torch_dtype", "float32"}};
}

inline nlohmann::ordered_json pretraining_key(const LicensePretraining& p) {
  return {{"format", "plora.licenses_pretraining"},
          {"version", 1},
          {"source_task", kSourceLicenses},
          {"tokenizer_corpus", "sentences of the source and target licenses"},
          {"word_embeddings", "PPMI-SVD of the tokenizer corpus"},
          {"embedding_window", kEmbeddingWindow},
          {"architecture", hub_config_json(licenses_deberta_config(p.vocab_size, 0), {})},
          {"epochs", p.epochs},
          {"lr", p.lr},
          {"batch", p.batch},
          {"weight_decay", p.weight_decay},
          {"seed", p.seed},
          {"max_examples", p.max_examples},
          {"vocab_size", p.vocab_size},
          {"max_length", p.max_length},
          {"test_fraction", kLicenseTestFraction},
          {"split_seed", kLicenseSplitSeed}};
}
}  // namespace detail

/// Pretrains the demo DeBERTa with the tokenizer `dir`/spm.model: word
/// embeddings from the unlabelled `corpus` (corpus_embeddings), then every
/// linear site and the head on `train` (evaluating on `test`, both of the
/// source licenses). Writes model.safetensors and config.json into `dir`;
/// returns {"seconds", "source_accuracy", ...}.
/// @tparam B  backend
template <Backend B>
nlohmann::ordered_json pretrain_licenses_deberta(const std::filesystem::path& dir, std::span<const std::string> corpus,
                                                 std::vector<TextExample> train, std::vector<TextExample> test,
                                                 const LicensePretraining& p, bool quiet, std::ostream& log) {
  const auto start = Clock::now();
  const DebertaV2Tokenizer tokenizer = DebertaV2Tokenizer::from_pretrained(dir);
  const DebertaV2Config config =
      licenses_deberta_config(tokenizer.vocab_size(), static_cast<Index>(kSourceLicenses.size()));
  HubTensors weights = detail::initial_deberta_weights(config, p.seed);
  auto& embeddings = weights.at("deberta.embeddings.word_embeddings.weight").values;
  embeddings = corpus_embeddings<B>(tokenizer, corpus, config.hidden_size, kEmbeddingWindow, std::move(embeddings));
  DebertaV2<B, FullDelta<B>> model(config, [&](const std::string& key, Index rows, Index cols) {
    return hub_tensor(weights, "DeBERTa", key, rows, cols);
  });

  const Index train_size = static_cast<Index>(train.size()), test_size = static_cast<Index>(test.size());
  if (!quiet)
    log << "pretraining the demo DeBERTa on " << kSourceLicenses.size() << " licenses (" << train_size
        << " sentences, every linear site) ...\n";
  const TokenBatches batches(tokenizer, std::move(train), false, p.batch, p.max_length, true, p.seed);
  const TokenBatches test_batches(tokenizer, std::move(test), false, p.batch, p.max_length, false, p.seed);
  const double accuracy = pretrain_every_site(model, batches, test_batches, p, quiet, log);
  save_hub_weights(dir / "model.safetensors", std::move(weights), model, {&model.pooler(), &model.classifier()});
  write_json(dir / "config.json", detail::hub_config_json(config, kSourceLicenses));
  return {{"seconds", seconds_since(start)},
          {"source_accuracy", accuracy},
          {"source_train_examples", train_size},
          {"source_test_examples", test_size},
          {"vocab_size", config.vocab_size}};
}

/// The demo's checkpoint and target task.
struct LicensesDemo {
  std::filesystem::path checkpoint;
  TextTask task;  ///< the target licenses, stratified 75 / 25 split
  nlohmann::ordered_json pretraining;
};

/// Reads the license sentences, reuses or (re)builds the tokenizer and the
/// pretrained checkpoint in `dir`, and returns the target task.
template <Backend B>
LicensesDemo prepare_licenses_demo(const std::filesystem::path& dir, const LicensePretraining& p, bool quiet,
                                   std::ostream& log) {
  const std::vector<TextExample> source = license_examples(kLicenseDir, kSourceLicenses);
  const std::vector<TextExample> target = license_examples(kLicenseDir, kTargetLicenses);
  auto [source_train, source_test] = stratified_split(source, kLicenseTestFraction, kLicenseSplitSeed);
  auto [target_train, target_test] = stratified_split(target, kLicenseTestFraction, kLicenseSplitSeed);

  const std::string source_task = std::to_string(kSourceLicenses.size()) + " licenses";
  nlohmann::ordered_json pretraining = cached_demo_checkpoint(
      dir, detail::pretraining_key(p), {"model.safetensors", "spm.model"}, {"DeBERTa", source_task}, quiet, log, [&] {
        std::vector<std::string> corpus;
        for (const auto* part : {&source, &target})
          for (const auto& e : *part) corpus.push_back(e.a);
        train_sentencepiece(dir / "spm.model", corpus, p.vocab_size);
        return pretrain_licenses_deberta<B>(dir, corpus, limited(std::move(source_train), p.max_examples),
                                            std::move(source_test), p, quiet, log);
      });
  TextTask task;
  task.name = "licenses";
  task.labels = kTargetLicenses;
  task.train = std::move(target_train);
  task.test = std::move(target_test);
  task.data = {{"type", "license sentences (built-in demo)"}, {"path", kLicenseDir.string()}};
  return {dir, std::move(task), std::move(pretraining)};
}

}  // namespace plora::runner
