// GLUE / SuperGLUE readers on small files in the original layouts, and the
// TokenBatches BatchSource.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <string>

#include "plora/io/glue.hpp"
#include "plora/train/concepts.hpp"

using namespace plora;
namespace fs = std::filesystem;

namespace {
const std::string kData = PLORA_TEST_DATA_DIR;

// A fresh directory per test case under the system temp dir.
fs::path scratch(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("plora_test_glue_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

fs::path write(const fs::path& dir, const std::string& file, const std::string& text) {
  std::ofstream(dir / file, std::ios::binary) << text;
  return dir / file;
}
}  // namespace

static_assert(BatchSource<TokenBatches>);

TEST_CASE("task names, label sets and metrics") {
  CHECK(parse_glue_task("SST-2") == GlueTask::Sst2);
  CHECK(parse_glue_task("sts-b") == GlueTask::Stsb);
  CHECK(parse_glue_task("mnli") == GlueTask::MnliMatched);
  CHECK(parse_glue_task("mnli_mismatched") == GlueTask::MnliMismatched);
  CHECK(parse_glue_task("copa") == GlueTask::Copa);
  CHECK_THROWS_WITH_AS(parse_glue_task("squad"), doctest::Contains("squad"), ValueError);
  CHECK(task_info(GlueTask::Cola).metrics.front() == metrics::Metric::Mcc);
  CHECK(task_info(GlueTask::Mrpc).metrics == std::vector{metrics::Metric::BinaryF1, metrics::Metric::Accuracy});
  CHECK(task_info(GlueTask::Stsb).regression());
  CHECK(task_info(GlueTask::Stsb).num_labels() == 1);
  CHECK(task_info(GlueTask::MnliMatched).num_labels() == 3);
  CHECK(glue_split_file(GlueTask::MnliMismatched, "d", "dev") == fs::path("d/dev_mismatched.tsv"));
  CHECK(glue_split_file(GlueTask::Wsc, "d", "dev") == fs::path("d/val.jsonl"));
  CHECK(glue_split_file(GlueTask::Rte, "d", "train") == fs::path("d/train.tsv"));
  CHECK_THROWS_AS((void)glue_split_file(GlueTask::Rte, "d", "test"), ValueError);
}

TEST_CASE("GLUE TSV layouts: header, columns, label mapping") {
  const fs::path dir = scratch("tsv");
  auto sst = read_glue(GlueTask::Sst2, write(dir, "sst.tsv", "sentence\tlabel\nit 's a charming journey . \t1\n"
                                                             "dull \t0\r\n"));
  REQUIRE(sst.size() == 2);
  CHECK(sst[0].a == "it 's a charming journey . ");
  CHECK(sst[0].label == 1);
  CHECK(sst[1].a == "dull ");  // CRLF stripped, text otherwise untouched
  CHECK(sst[1].label == 0);

  // CoLA has no header: source, label, original mark, sentence.
  auto cola = read_glue(GlueTask::Cola, write(dir, "cola.tsv", "gj04\t1\t\tOur friends won't buy this analysis.\n"
                                                               "gj04\t0\t*\tThey drank the pub.\n"));
  REQUIRE(cola.size() == 2);
  CHECK(cola[1].a == "They drank the pub.");
  CHECK(cola[1].label == 0);

  auto mrpc = read_glue(GlueTask::Mrpc, write(dir, "mrpc.tsv", "\xEF\xBB\xBFQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                                                               "1\t702876\t702977\tAmrozi accused.\tReferring to him.\n"));
  REQUIRE(mrpc.size() == 1);
  CHECK(mrpc[0].a == "Amrozi accused.");
  CHECK(mrpc[0].b == "Referring to him.");
  CHECK(mrpc[0].label == 1);

  auto stsb = read_glue(GlueTask::Stsb, write(dir, "stsb.tsv", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\t"
                                                               "sentence1\tsentence2\tscore\n"
                                                               "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\t"
                                                               "A plane is taking off.\tAn air plane is taking off.\t5.000\n"));
  REQUIRE(stsb.size() == 1);
  CHECK(stsb[0].b == "An air plane is taking off.");
  CHECK(stsb[0].target == 5.0f);

  auto qqp = read_glue(GlueTask::Qqp, write(dir, "qqp.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                                                            "1\t3\t4\tWhy?\tHow?\t0\n"));
  REQUIRE(qqp.size() == 1);
  CHECK(qqp[0].a == "Why?");
  CHECK(qqp[0].b == "How?");

  // MNLI: sentence1 / sentence2 are columns 8 and 9, gold_label the last of a variable count.
  const std::string mnli_header =
      "index\tpromptID\tpairID\tgenre\ts1b\ts2b\ts1p\ts2p\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tgold_label\n";
  auto mnli = read_glue(GlueTask::MnliMatched, write(dir, "mnli.tsv", mnli_header +
                                                                          "0\t1\t2\tgov\tx\tx\tx\tx\tP one.\tH one.\tneutral\tneutral\tcontradiction\tcontradiction\n"
                                                                          "1\t1\t2\tgov\tx\tx\tx\tx\tP two.\tH two.\tneutral\tneutral\n"));
  REQUIRE(mnli.size() == 2);
  CHECK(mnli[0].a == "P one.");
  CHECK(mnli[0].label == 2);  // contradiction, the gold label
  CHECK(mnli[1].label == 1);  // neutral

  auto rte = read_glue(GlueTask::Rte, write(dir, "rte.tsv", "index\tsentence1\tsentence2\tlabel\n"
                                                            "0\tA.\tB.\tnot_entailment\n1\tC.\tD.\tentailment\n"));
  REQUIRE(rte.size() == 2);
  CHECK(rte[0].label == 1);
  CHECK(rte[1].label == 0);
  auto qnli = read_glue(GlueTask::Qnli, write(dir, "qnli.tsv", "index\tquestion\tsentence\tlabel\n0\tQ?\tS.\tentailment\n"));
  CHECK(qnli.at(0).b == "S.");
}

TEST_CASE("SuperGLUE COPA and WSC as sequence pairs") {
  const fs::path dir = scratch("jsonl");
  auto copa = read_glue(GlueTask::Copa, write(dir, "copa.jsonl",
                                              R"({"premise": "My body cast a shadow.", "choice1": "The sun was rising.", )"
                                              R"("choice2": "The grass was cut.", "question": "cause", "idx": 0, "label": 0})"
                                              "\n\n"
                                              R"({"premise": "P.", "choice1": "A.", "choice2": "B.", "question": "effect", "label": 1})"
                                              "\n"));
  REQUIRE(copa.size() == 2);
  CHECK(copa[0].a == "My body cast a shadow. What was the cause?");
  CHECK(copa[0].b == "The sun was rising. | The grass was cut.");
  CHECK(copa[0].label == 0);
  CHECK(copa[1].a == "P. What happened as a result?");
  CHECK(copa[1].label == 1);
  auto wsc = read_glue(GlueTask::Wsc, write(dir, "wsc.jsonl",
                                            R"({"text": "Mark told Pete he was late.", "target": {"span1_text": "Pete", )"
                                            R"("span2_text": "he", "span1_index": 3, "span2_index": 4}, "label": true})"
                                            "\n"));
  REQUIRE(wsc.size() == 1);
  CHECK(wsc[0].b == "he refers to Pete");
  CHECK(wsc[0].label == 1);
}

TEST_CASE("malformed lines and unknown labels name the file and line") {
  const fs::path dir = scratch("bad");
  const auto rte = write(dir, "rte.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tentailment\n1\tonly two\n");
  CHECK_THROWS_WITH_AS(read_glue(GlueTask::Rte, rte), doctest::Contains("rte.tsv:3"), IoError);
  const auto labels = write(dir, "rte2.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA.\tB.\tmaybe\n");
  CHECK_THROWS_WITH_AS(read_glue(GlueTask::Rte, labels), doctest::Contains("rte2.tsv:2: label 'maybe'"), IoError);
  const auto sst = write(dir, "sst.tsv", "sentence\tlabel\nok\t2\n");
  CHECK_THROWS_AS(read_glue(GlueTask::Sst2, sst), IoError);
  const auto stsb = write(dir, "stsb.tsv", "h\n0\tg\tf\ty\to\ts\ts\ta\tb\tfive\n");
  CHECK_THROWS_WITH_AS(read_glue(GlueTask::Stsb, stsb), doctest::Contains("stsb.tsv:2"), IoError);
  const auto copa = write(dir, "copa.jsonl", R"({"premise": "P.", "choice1": "A."})" "\n");
  CHECK_THROWS_WITH_AS(read_glue(GlueTask::Copa, copa), doctest::Contains("copa.jsonl:1"), IoError);
  const auto copa_label = write(dir, "copa2.jsonl",
                                R"({"premise": "P.", "choice1": "A.", "choice2": "B.", "question": "effect", "label": 2})"
                                "\n");
  CHECK_THROWS_WITH_AS(read_glue(GlueTask::Copa, copa_label), doctest::Contains("copa2.jsonl:1"), IoError);
  // Labels are read as written: 2^32 + 1, 1.7 and true are not truncated into 1.
  const std::pair<const char*, const char*> bad_labels[] = {{"4294967297", "label '4294967297' is not one of copa's"},
                                                            {"1.7", "label 1.7 is not an integer"},
                                                            {"true", "label true is not an integer"}};
  for (const auto& [label, expected] : bad_labels) {
    const auto record =
        write(dir, "copa3.jsonl",
              std::string(R"({"premise": "P.", "choice1": "A.", "choice2": "B.", "question": "effect", "label": )") +
                  label + "}\n");
    CHECK_THROWS_WITH_AS(read_glue(GlueTask::Copa, record), doctest::Contains(expected), IoError);
  }
  CHECK_THROWS_WITH_AS(read_glue(GlueTask::Rte, dir / "missing.tsv"),
                       doctest::Contains("missing.tsv': it does not exist"), IoError);
  // Scores outside STS-B's 0-5 scale, NaN and Inf included (stof reads both).
  for (const char* score : {"nan", "inf", "-7", "5.5"}) {
    const auto bad_score = write(dir, "stsb_score.tsv", std::string("h\n0\tg\tf\ty\to\ts\ts\ta\tb\t") + score + "\n");
    const std::string expected = std::string("stsb_score.tsv:2: similarity score '") + score + "' is outside";
    CHECK_THROWS_WITH_AS(read_glue(GlueTask::Stsb, bad_score), doctest::Contains(expected.c_str()), IoError);
  }
  // A split with a header only, and a directory where a split should be.
  const auto header_only = write(dir, "rte_empty.tsv", "index\tsentence1\tsentence2\tlabel\n");
  CHECK_THROWS_WITH_AS(read_glue(GlueTask::Rte, header_only), doctest::Contains("rte_empty.tsv' holds no examples"),
                       IoError);
  fs::create_directories(dir / "dev.tsv");
  CHECK_THROWS_WITH_AS(read_glue(GlueTask::Rte, dir / "dev.tsv"),
                       doctest::Contains("dev.tsv': it is not a regular file but a directory"), IoError);
}

TEST_CASE("TokenBatches: padded batches, labels, order a pure function of (seed, epoch)") {
  const DebertaV2Tokenizer tok(kData + "/spm_tiny.model");
  std::vector<TextExample> examples;
  for (int i = 0; i < 10; ++i) examples.push_back({"The cat sat " + std::string(std::size_t(i), 'a'), "on the mat.", i, 0.5f * float(i)});
  const TokenBatches source(tok, examples, true, 4, 16, true, 7);
  CHECK(source.batches_per_epoch() == 3);
  const TokenBatch last = source.batch(0, 2);
  CHECK(last.batch == 2);  // 10 = 4 + 4 + 2

  // Every example appears exactly once per epoch, and its tokens match encode().
  std::multiset<std::int32_t> seen;
  for (Index i = 0; i < source.batches_per_epoch(); ++i) {
    const TokenBatch b = source.batch(1, i);
    REQUIRE(b.labels.size() == static_cast<std::size_t>(b.batch));
    for (Index r = 0; r < b.batch; ++r) {
      const auto& ex = examples[static_cast<std::size_t>(b.labels[std::size_t(r)])];
      CHECK(b.targets[std::size_t(r)] == ex.target);
      const Encoding e = tok.encode(ex.a, ex.b, 16);
      const auto row = b.input_ids.begin() + r * b.seq_len;
      CHECK(std::equal(e.input_ids.begin(), e.input_ids.end(), row));
      seen.insert(b.labels[std::size_t(r)]);
    }
  }
  CHECK(seen == std::multiset<std::int32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});

  // Same (seed, epoch) -> same batch regardless of access order; another epoch reorders.
  const TokenBatches twin(tok, examples, true, 4, 16, true, 7);
  const auto first_e3 = twin.batch(3, 1).labels;
  (void)source.batch(5, 0);
  CHECK(source.batch(3, 1).labels == first_e3);
  bool differs = false;
  for (Index e = 0; e < 4; ++e) differs = differs || source.batch(e, 0).labels != source.batch(e + 1, 0).labels;
  CHECK(differs);
  const TokenBatches ordered(tok, examples, true, 4, 16, false);
  CHECK(ordered.batch(9, 0).labels == std::vector<std::int32_t>{0, 1, 2, 3});
  CHECK_THROWS_AS((void)source.batch(0, 3), ValueError);
  CHECK_THROWS_AS(TokenBatches(tok, {}, true, 4, 16, false), ValueError);

  // A batch larger than the data is one (partial) batch; size + batch - 1 would overflow here.
  const TokenBatches whole(tok, examples, true, std::numeric_limits<Index>::max(), 16, true, 7);
  CHECK(whole.batches_per_epoch() == 1);
  CHECK(whole.batch(0, 0).batch == 10);
}

TEST_CASE("text example digests: equal for equal examples, changed by a text, a label or a target") {
  const std::vector<TextExample> base = {{"a film", "", 1, 0.0f}, {"a play", "a book", 0, 2.5f}};
  const auto digest = [](const std::vector<TextExample>& examples) {
    Digest digest;
    return add_to(digest, examples).value();
  };
  CHECK(digest(std::vector<TextExample>(base)) == digest(base));
  std::vector<TextExample> text = base, label = base, target = base, split = base;
  text[1].b = "a boot";
  label[0].label = 0;
  target[1].target = 2.25f;
  split[1].a = "a playa";  // the same characters split otherwise between a and b
  split[1].b = " book";
  for (const auto* changed : {&text, &label, &target, &split}) CHECK(digest(*changed) != digest(base));
}
