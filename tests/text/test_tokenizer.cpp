// DebertaV2Tokenizer against transformers' DebertaV2Tokenizer ids
// (tests/data/spm_tiny_tokens.json, written by tools/make_deberta_fixtures.py).
#include <doctest/doctest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "io/io_support.hpp"
#include "plora/io/tokenizer.hpp"

using namespace plora;
using Ids = std::vector<std::int32_t>;

namespace {
const std::string kData = PLORA_TEST_DATA_DIR;

nlohmann::json load_fixture() {
  std::ifstream in(kData + "/spm_tiny_tokens.json");
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}
}  // namespace

TEST_CASE("tokenizer special ids follow the spm model and DeBERTa-v3's convention") {
  const DebertaV2Tokenizer tok(kData + "/spm_tiny.model");
  const auto fixture = load_fixture();
  CHECK(tok.vocab_size() == fixture["vocab_size"].get<Index>());
  CHECK(tok.pad_id() == 0);
  CHECK(tok.cls_id() == 1);
  CHECK(tok.sep_id() == 2);
  CHECK(tok.unk_id() == 3);
  CHECK(tok.cls_id() == fixture["cls"].get<int>());
  CHECK(tok.sep_id() == fixture["sep"].get<int>());
  CHECK(tok.pad_id() == fixture["pad"].get<int>());
  CHECK(tok.unk_id() == fixture["unk"].get<int>());
}

TEST_CASE("single texts and pairs, with truncation, equal transformers' ids exactly") {
  const DebertaV2Tokenizer tok(kData + "/spm_tiny.model");
  const auto fixture = load_fixture();
  REQUIRE(fixture["cases"].size() > 40);
  for (const auto& c : fixture["cases"]) {
    const auto a = c["a"].get<std::string>();
    const auto max_length = c["max_length"].get<Index>();
    const Encoding e = c.contains("b") ? tok.encode(a, c["b"].get<std::string>(), max_length) : tok.encode(a, max_length);
    INFO("a = '", a, "', b = '", c.value("b", std::string("<none>")), "', max_length ", max_length);
    CHECK(e.input_ids == c["input_ids"].get<Ids>());
    CHECK(e.token_type_ids == c["token_type_ids"].get<Ids>());
  }
}

TEST_CASE("a padded batch equals transformers' padding='longest' batch") {
  const DebertaV2Tokenizer tok(kData + "/spm_tiny.model");
  const auto fixture = load_fixture();
  std::vector<std::string> a, b;
  for (const auto& c : fixture["cases"])
    if (c.contains("b") && c["max_length"].get<Index>() == 64) {
      a.push_back(c["a"].get<std::string>());
      b.push_back(c["b"].get<std::string>());
    }
  const auto& expected = fixture["batch"];
  const TokenBatch batch = tok.encode_batch(a, b, expected["max_length"].get<Index>());
  const auto rows = expected["input_ids"].get<std::vector<Ids>>();
  REQUIRE(batch.batch == static_cast<Index>(rows.size()));
  REQUIRE(batch.seq_len == static_cast<Index>(rows[0].size()));
  auto flat = [](const std::vector<Ids>& m) {
    Ids out;
    for (const auto& r : m) out.insert(out.end(), r.begin(), r.end());
    return out;
  };
  CHECK(batch.input_ids == flat(rows));
  CHECK(batch.token_type_ids == flat(expected["token_type_ids"].get<std::vector<Ids>>()));
  CHECK(batch.attention_mask == flat(expected["attention_mask"].get<std::vector<Ids>>()));

  const TokenBatch fixed = tok.encode_batch(a, {}, 20, Padding::MaxLength);
  CHECK(fixed.seq_len == 20);
  CHECK(fixed.input_ids.size() == a.size() * 20);
}

TEST_CASE("tokenizer errors name the file or the limit at fault") {
  CHECK_THROWS_WITH_AS(DebertaV2Tokenizer(kData + "/no_such_dir/spm.model"), doctest::Contains("no_such_dir/spm.model"),
                       IoError);
  // A file that is not a SentencePiece model.
  CHECK_THROWS_AS(DebertaV2Tokenizer(kData + "/spm_corpus.txt"), IoError);
  CHECK_THROWS_AS(DebertaV2Tokenizer::from_pretrained(kData + "/missing"), IoError);
  const DebertaV2Tokenizer tok(kData + "/spm_tiny.model");
  CHECK_THROWS_AS((void)tok.encode("text", 2), ValueError);
  CHECK_THROWS_AS((void)tok.encode("text", "pair", 4), ValueError);
  const std::vector<std::string> a{"one", "two"}, b{"only one"};
  CHECK_THROWS_AS((void)tok.encode_batch(a, b, 16), ValueError);
}

TEST_CASE("SentencePiece models that libsentencepiece would crash on are refused, naming the fault") {
  // Found by the tokenizer_models fuzz target (docs/fuzzing.md); on Debian 12's
  // libsentencepiece the first terminates the process and the others read out
  // of bounds while encoding. The same bytes with the fault mended load.
  const std::string models = kData + "/fuzz/tokenizer_models/";
  CHECK_NOTHROW(DebertaV2Tokenizer(models + "unigram_rule.model").tokenize("A rule maps A to a"));
  CHECK_THROWS_WITH_AS(DebertaV2Tokenizer(models + "nul_in_piece.model"),
                       doctest::Contains("nul_in_piece.model': piece 32 holds a NUL byte"), IoError);
  CHECK_THROWS_WITH_AS(DebertaV2Tokenizer(models + "charsmap_child_past_trie.model"),
                       doctest::Contains("sends unit 1 to children past its 256 units"), IoError);
  CHECK_THROWS_WITH_AS(DebertaV2Tokenizer(models + "charsmap_value_past_strings.model"),
                       doctest::Contains("points unit 2 at byte 100000 of 2 bytes of strings"), IoError);
  // Cut inside a field: refused by the check's own wire-format reading.
  const std::string whole = plora::test::read_bytes(models + "unigram_rule.model");
  const plora::test::TempDir dir;
  plora::test::write_bytes(dir / "cut.model", std::string_view(whole).substr(0, whole.size() / 2));
  CHECK_THROWS_WITH_AS(DebertaV2Tokenizer{dir / "cut.model"}, doctest::Contains("is malformed at byte"), IoError);
}
