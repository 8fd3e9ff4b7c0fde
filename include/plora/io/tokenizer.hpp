#pragma once
// DeBERTa-v2/v3 tokenizer on SentencePiece (libsentencepiece; link `sentencepiece`).
// Conventions of transformers' DebertaV2Tokenizer (REFERENCE.md §2): ids are the
// spm model's piece ids ([PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3 in DeBERTa-v3's
// spm.model), no lower-casing, `[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]`,
// token types 0 up to and including the first [SEP] and 1 after it.
//
// Text normalisation is the spm model's own (nmt_nfkc for DeBERTa-v3).
// transformers 5's tokenizer instead applies NFC plus whitespace folding, so
// the two agree on ordinary text but differ on compatibility characters
// (e.g. full-width letters, which spm folds to ASCII and transformers maps to
// [UNK]). Special-token strings inside the text are not matched as specials.
#include <sentencepiece_processor.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "plora/core/error.hpp"
#include "plora/io/detail/mapped_file.hpp"
#include "plora/io/detail/spm_model.hpp"
#include "plora/models/batches.hpp"

namespace plora {

/// One tokenised sequence (or pair) with its specials, unpadded.
struct Encoding {
  std::vector<std::int32_t> input_ids;
  std::vector<std::int32_t> token_type_ids;
};

/// How encode_batch pads: to the longest sequence of the batch, or always to max_length.
enum class Padding { Longest, MaxLength };

class DebertaV2Tokenizer {
 public:
  /// Loads a SentencePiece model file (a checkpoint's spm.model).
  explicit DebertaV2Tokenizer(const std::filesystem::path& spm_model)
      : processor_(std::make_shared<sentencepiece::SentencePieceProcessor>()) {
    check<IoError>(std::filesystem::is_regular_file(spm_model), "tokenizer: SentencePiece model '",
                   spm_model.string(), "' does not exist");
    const io::detail::MappedFile file(spm_model);
    io::detail::check_spm_model(file.bytes(), spm_model.string());
    const auto status = processor_->LoadFromSerializedProto(
        {reinterpret_cast<const char*>(file.bytes().data()), file.bytes().size()});
    check<IoError>(status.ok(), "tokenizer: cannot load SentencePiece model '", spm_model.string(),
                   "': ", status.ToString());
    pad_id_ = special_id("[PAD]", spm_model);
    cls_id_ = special_id("[CLS]", spm_model);
    sep_id_ = special_id("[SEP]", spm_model);
    unk_id_ = processor_->unk_id();
  }

  /// The tokenizer of a Hugging Face checkpoint directory (its spm.model).
  static DebertaV2Tokenizer from_pretrained(const std::filesystem::path& directory) {
    return DebertaV2Tokenizer(directory / "spm.model");
  }

  /// Number of spm pieces; added tokens such as v3's [MASK] come after them.
  [[nodiscard]] Index vocab_size() const { return processor_->GetPieceSize(); }
  [[nodiscard]] std::int32_t pad_id() const { return pad_id_; }
  [[nodiscard]] std::int32_t cls_id() const { return cls_id_; }
  [[nodiscard]] std::int32_t sep_id() const { return sep_id_; }
  [[nodiscard]] std::int32_t unk_id() const { return unk_id_; }

  /// Piece ids of `text`, without specials.
  [[nodiscard]] std::vector<std::int32_t> tokenize(std::string_view text) const {
    std::vector<int> ids;
    const auto status = processor_->Encode(text, &ids);
    check<ValueError>(status.ok(), "tokenizer: cannot encode text: ", status.ToString());
    return {ids.begin(), ids.end()};
  }

  /// `[CLS] a [SEP]`, truncating a from the end to fit max_length.
  [[nodiscard]] Encoding encode(std::string_view a, Index max_length) const {
    check<ValueError>(max_length >= 3, "tokenizer: max_length ", max_length, " leaves no room for text after [CLS] and [SEP]");
    std::vector<std::int32_t> ids_a = tokenize(a);
    ids_a.resize(std::min(ids_a.size(), static_cast<std::size_t>(max_length - 2)));
    return assemble(ids_a, {}, false);
  }

  /// `[CLS] a [SEP] b [SEP]`, truncating longest-first to fit max_length as the
  /// tokenizers library does: the shorter text (a on ties) keeps at most half the
  /// budget, rounded down, the longer one the rest; both are cut from the end.
  [[nodiscard]] Encoding encode(std::string_view a, std::string_view b, Index max_length) const {
    check<ValueError>(max_length >= 5, "tokenizer: max_length ", max_length,
                      " leaves no room for a text pair after [CLS], [SEP], [SEP]");
    std::vector<std::int32_t> ids_a = tokenize(a), ids_b = tokenize(b);
    const auto budget = static_cast<std::size_t>(max_length - 3);
    if (ids_a.size() + ids_b.size() > budget) {
      auto& shorter = ids_a.size() > ids_b.size() ? ids_b : ids_a;
      auto& longer = ids_a.size() > ids_b.size() ? ids_a : ids_b;
      shorter.resize(std::min(shorter.size(), budget / 2));
      longer.resize(budget - shorter.size());
    }
    return assemble(ids_a, ids_b, true);
  }

  /// Encodes texts (pairs when `b` is non-empty, same length as `a`) into one
  /// padded TokenBatch (labels and targets left empty).
  [[nodiscard]] TokenBatch encode_batch(std::span<const std::string> a, std::span<const std::string> b,
                                        Index max_length, Padding padding = Padding::Longest) const {
    check<ValueError>(b.empty() || b.size() == a.size(), "tokenizer: ", a.size(), " first texts but ", b.size(),
                      " second texts");
    std::vector<Encoding> encodings;
    encodings.reserve(a.size());
    Index longest = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      encodings.push_back(b.empty() ? encode(a[i], max_length) : encode(a[i], b[i], max_length));
      longest = std::max(longest, static_cast<Index>(encodings.back().input_ids.size()));
    }
    return pad(encodings, padding == Padding::Longest ? longest : max_length);
  }

  /// Stacks encodings into a (batch x seq_len) TokenBatch, padding with [PAD],
  /// token type 0 and attention mask 0.
  [[nodiscard]] TokenBatch pad(std::span<const Encoding> encodings, Index seq_len) const {
    TokenBatch out;
    out.batch = static_cast<Index>(encodings.size());
    out.seq_len = seq_len;
    const auto total = static_cast<std::size_t>(out.batch * seq_len);
    out.input_ids.assign(total, pad_id_);
    out.token_type_ids.assign(total, 0);
    out.attention_mask.assign(total, 0);
    for (std::size_t i = 0; i < encodings.size(); ++i) {
      const auto& e = encodings[i];
      check<ValueError>(static_cast<Index>(e.input_ids.size()) <= seq_len, "tokenizer: sequence ", i, " has ",
                        e.input_ids.size(), " tokens, more than the padded length ", seq_len);
      const auto row = i * static_cast<std::size_t>(seq_len);
      std::copy(e.input_ids.begin(), e.input_ids.end(), out.input_ids.begin() + std::ptrdiff_t(row));
      std::copy(e.token_type_ids.begin(), e.token_type_ids.end(), out.token_type_ids.begin() + std::ptrdiff_t(row));
      std::fill_n(out.attention_mask.begin() + std::ptrdiff_t(row), e.input_ids.size(), 1);
    }
    return out;
  }

 private:
  std::int32_t special_id(std::string_view piece, const std::filesystem::path& path) const {
    const int id = processor_->PieceToId(piece);
    check<IoError>(id != processor_->unk_id() || piece == "[UNK]", "tokenizer: SentencePiece model '", path.string(),
                   "' has no ", piece, " piece (not a DeBERTa-v2/v3 spm.model?)");
    return id;
  }

  Encoding assemble(std::span<const std::int32_t> a, std::span<const std::int32_t> b, bool pair) const {
    Encoding e;
    e.input_ids.push_back(cls_id_);
    e.input_ids.insert(e.input_ids.end(), a.begin(), a.end());
    e.input_ids.push_back(sep_id_);
    e.token_type_ids.assign(e.input_ids.size(), 0);
    if (pair) {
      e.input_ids.insert(e.input_ids.end(), b.begin(), b.end());
      e.input_ids.push_back(sep_id_);
      e.token_type_ids.resize(e.input_ids.size(), 1);
    }
    return e;
  }

  // Shared so the tokenizer is cheap to copy into batch sources; spm's Encode is const.
  std::shared_ptr<sentencepiece::SentencePieceProcessor> processor_;
  std::int32_t pad_id_ = 0;
  std::int32_t cls_id_ = 1;
  std::int32_t sep_id_ = 2;
  std::int32_t unk_id_ = 3;
};

}  // namespace plora
