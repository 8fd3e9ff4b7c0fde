// ratios.json (deterministic bytes, round trip, validation) and the mask plans
// built on a report.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <unistd.h>

#include "plora/io/ratios_json.hpp"
#include "plora/sparsity/sparsity.hpp"
#include "sparsity/fixtures.hpp"
#include "support/reports.hpp"

using namespace plora;
using plora::test::make_batches;
using plora::test::RankProblem;
using plora::test::TinyModel;

namespace {

RatioReport extract_two_sites(std::uint64_t seed) {
  const RankProblem problem;
  TinyModel model = problem.two_site_model();
  const auto [x, labels] = problem.data(96, 7);
  ExtractionConfig config;
  config.seed = seed;
  return extract_ratios(Svd{}, model, make_batches(x, labels, 32), config);
}

std::string read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

/// A fresh scratch directory per test process.
std::filesystem::path scratch_dir() {
  const auto dir = std::filesystem::temp_directory_path() / ("plora_test_sparsity_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return dir;
}

/// The sites of the model extract_two_sites extracts from, with their shapes.
std::vector<SiteShape> two_sites() {
  TinyModel model = RankProblem{}.two_site_model();
  return site_shapes(model);
}

}  // namespace

TEST_CASE("same seed, same ratios.json bytes; the file round-trips exactly") {
  const auto dir = scratch_dir();
  const RatioReport report = extract_two_sites(3);
  io::save_ratios(dir / "a.json", report);
  io::save_ratios(dir / "b.json", extract_two_sites(3));
  const std::string bytes = read_bytes(dir / "a.json");
  CHECK(bytes == read_bytes(dir / "b.json"));
  CHECK(bytes.find("\"format\": \"plora.ratios\"") != std::string::npos);
  CHECK(bytes.find("seconds") == std::string::npos);  // wall time would break byte identity

  const RatioReport loaded = io::load_ratios(dir / "a.json", two_sites());
  CHECK(loaded.extractor == report.extractor);
  CHECK(loaded.metric == report.metric);
  CHECK(loaded.tau == report.tau);
  CHECK(loaded.resolution == report.resolution);
  CHECK(loaded.reference_metric == report.reference_metric);
  CHECK(loaded.seed == 3);
  plora::test::check_same_sites(loaded, report);  // floats bit-exact
  CHECK(io::ratios_to_json(loaded) == bytes);
  std::filesystem::remove_all(dir);
}

TEST_CASE("scores are written in their shortest float form") {
  RatioReport report;
  report.extractor = "svd";
  report.sites.push_back({"s", 1, 2, 0.5, SearchOutcome::Found, 1, {{0.5, 0.5, 1.0}}, {0.1f}, {0.3f, 1e-20f}, {0}, {1}});
  const std::string text = io::ratios_to_json(report);
  CHECK(text.find("\"row_scores\":[0.1]") != std::string::npos);
  CHECK(text.find("0.10000000149011612") == std::string::npos);
  const RatioReport back = io::ratios_from_json(text, "text");
  CHECK(back.sites[0].row_scores[0] == 0.1f);
  CHECK(back.sites[0].col_scores[1] == 1e-20f);
}

TEST_CASE("loading rejects unknown sites, bad ratios and malformed files") {
  const auto dir = scratch_dir();
  const RatioReport report = extract_two_sites(0);
  io::save_ratios(dir / "ratios.json", report);
  std::vector<SiteShape> other_sites = two_sites();
  other_sites[1].name = "layer.0.key";
  CHECK_THROWS_WITH_AS(io::load_ratios(dir / "ratios.json", other_sites),
                       doctest::Contains("'layer.0.value' is not an adaptable site"), ValueError);
  // The same names on weights of another size: the masks would index rows the model lacks, or miss rows it has.
  const SiteShape value = two_sites()[1];
  std::vector<SiteShape> wider = two_sites();
  wider[1].out_features *= 2;
  const std::string expected = "site 'layer.0.value' is " + std::to_string(value.out_features) + " x " +
                               std::to_string(value.in_features) + " in the file but " +
                               std::to_string(wider[1].out_features) + " x " + std::to_string(wider[1].in_features);
  CHECK_THROWS_WITH_AS(io::load_ratios(dir / "ratios.json", wider), doctest::Contains(expected.c_str()), ValueError);

  for (const double bad : {0.0, 1.5, -0.25}) {
    RatioReport broken = report;
    broken.sites[1].ratio = bad;
    io::save_ratios(dir / "bad.json", broken);
    CHECK_THROWS_WITH_AS(io::load_ratios(dir / "bad.json", two_sites()), doctest::Contains("outside (0, 1]"), ValueError);
  }
  RatioReport bad_tau = report;
  bad_tau.tau = 0.0;
  CHECK_THROWS_AS(io::ratios_from_json(io::ratios_to_json(bad_tau), "x"), ValueError);

  CHECK_THROWS_AS(io::load_ratios(dir / "missing.json", two_sites()), IoError);
  CHECK_THROWS_WITH_AS(io::ratios_from_json("{", "broken.json"), doctest::Contains("broken.json"), IoError);
  CHECK_THROWS_AS(io::ratios_from_json("{\"format\": \"other\"}", "x"), IoError);
  std::string text = io::ratios_to_json(report);
  const auto version = text.find("\"version\": 1");
  REQUIRE(version != std::string::npos);
  CHECK_THROWS_WITH_AS(io::ratios_from_json(std::string(text).replace(version, 12, "\"version\": 9"), "x"),
                       doctest::Contains("version 9"), IoError);
  const auto outcome = text.find("\"outcome\":\"found\"");
  REQUIRE(outcome != std::string::npos);
  CHECK_THROWS_WITH_AS(io::ratios_from_json(std::string(text).replace(outcome, 17, "\"outcome\":\"maybe\""), "x"),
                       doctest::Contains("'maybe'"), IoError);
  RatioReport short_scores = report;
  short_scores.sites[0].row_scores.pop_back();
  CHECK_THROWS_WITH_AS(io::ratios_from_json(io::ratios_to_json(short_scores), "x"),
                       doctest::Contains("row and"), IoError);
  RatioReport twice = report;
  twice.sites[1].name = twice.sites[0].name;
  CHECK_THROWS_WITH_AS(io::ratios_from_json(io::ratios_to_json(twice), "x"), doctest::Contains("twice"), IoError);

  // The descriptive fields a report.json copies: what an extraction can have written.
  const auto edited = [&](const auto& edit) {
    nlohmann::json j = nlohmann::json::parse(io::ratios_to_json(report));
    edit(j);
    return j.dump();
  };
  const auto refused = [&](const auto& edit, const char* message) {
    CHECK_THROWS_WITH_AS(io::ratios_from_json(edited(edit), "x"), doctest::Contains(message), Error);
  };
  refused([](auto& j) { j["extractor"] = "bogus"; }, "extractor 'bogus' is not svd, snip or imp");
  refused([](auto& j) { j["resolution"] = 0.0; }, "x: search resolution 0 is outside");
  refused([](auto& j) { j["seed"] = -1; }, "seed -1 is not a non-negative integer");
  refused([](auto& j) { j["sites"][0]["evaluations"] = -7; }, "evaluations -7 but");
  refused([](auto& j) { j["sites"][0]["probes"][0]["q"] = 5.0; }, "is not (q in (0, 1]");
  refused([](auto& j) { j["sites"][0]["probes"][0]["density"] = -1.0; }, "is not (q in (0, 1]");
  CHECK(io::ratios_from_json(edited([](auto&) {}), "x").sites.size() == 2);
  std::filesystem::remove_all(dir);
}

TEST_CASE("mask plans: partial, targeted, stochastic and uniform") {
  const RatioReport report = extract_two_sites(0);
  const MaskPlan partial = plan_masks(report, PartialMask{}, 11);
  REQUIRE(partial.size() == 2);
  for (const auto& site : report.sites) {
    CAPTURE(site.name);
    const PlannedMask& planned = partial.at(site.name);
    CHECK(planned.ratio == site.ratio);
    // Wired as a direct Bernoulli sample of (seed, stream of the site name).
    MaskRequest request{site.out_features, site.in_features, site.ratio, {}, {}, 11, stream_id(site.name), {}};
    const RowColMask direct = PartialMask{}.sample(request);
    CHECK(planned.mask.rows == direct.rows);
    CHECK(planned.mask.cols == direct.cols);
  }
  // Same seed, same masks; another seed, other masks.
  const MaskPlan again = plan_masks(report, PartialMask{}, 11);
  const MaskPlan other = plan_masks(report, PartialMask{}, 12);
  bool any_difference = false;
  for (const auto& [name, planned] : partial) {
    CHECK(again.at(name).mask.rows == planned.mask.rows);
    CHECK(again.at(name).mask.cols == planned.mask.cols);
    any_difference |= other.at(name).mask.rows != planned.mask.rows || other.at(name).mask.cols != planned.mask.cols;
  }
  CHECK(any_difference);

  // Targeted = the report's extracted subnetwork.
  const MaskPlan targeted = plan_masks(report, TargetedMask{}, 11);
  for (const auto& site : report.sites) {
    CHECK(targeted.at(site.name).mask.rows == site.top_rows);
    CHECK(targeted.at(site.name).mask.cols == site.top_cols);
  }
  // Stochastic-targeted keeps the same counts.
  const MaskPlan stochastic = plan_masks(report, StochasticTargetedMask{}, 11);
  for (const auto& site : report.sites) {
    CHECK(stochastic.at(site.name).mask.rows.size() == site.top_rows.size());
    CHECK(stochastic.at(site.name).mask.cols.size() == site.top_cols.size());
  }

  // Uniform: the mean ratio, or a given one, for every site.
  const double mean = (report.sites[0].ratio + report.sites[1].ratio) / 2.0;
  for (const auto& [name, planned] : plan_masks(report, PartialMask{}, 11, uniform_ratios(report.ratios())))
    CHECK(planned.ratio == doctest::Approx(mean).epsilon(1e-15));
  for (const auto& [name, planned] : plan_masks(report, PartialMask{}, 11, uniform_ratios(report.ratios(), 0.5)))
    CHECK(planned.ratio == 0.5);

  auto ratios = report.ratios();
  ratios["layer.9.key"] = 0.5;
  CHECK_THROWS_WITH_AS(plan_masks(report, PartialMask{}, 11, ratios), doctest::Contains("'layer.9.key'"), ValueError);
  ratios = report.ratios();
  ratios.erase("layer.0.value");
  CHECK_THROWS_WITH_AS(plan_masks(report, PartialMask{}, 11, ratios), doctest::Contains("'layer.0.value'"),
                       ValueError);
}
