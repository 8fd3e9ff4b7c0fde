#pragma once
// Mask policies on top of extracted ratios (METHOD.md §3): one RowColMask per
// site for the Partial<A> adapters, sampled by any Mask policy from the
// site's ratio, shape and scores in the report.
//
//   Partial (the method)   plan_masks(report, PartialMask{}, seed)
//   Targeted               plan_masks(report, TargetedMask{}, seed)
//   Stochastic-targeted    plan_masks(report, StochasticTargetedMask{}, seed)
//   Uniform                plan_masks(report, PartialMask{}, seed, uniform_ratios(report.ratios()))
//                          (or uniform_ratios(report.ratios(), value) for a given value)
#include <algorithm>
#include <cstdint>
#include <map>
#include <string>

#include "plora/core/error.hpp"
#include "plora/core/rng.hpp"
#include "plora/masks/masks.hpp"
#include "plora/sparsity/report.hpp"

namespace plora {

/// The mask of one site and the ratio it was sampled at.
struct PlannedMask {
  double ratio = 1.0;
  RowColMask mask;
};

/// Site name -> mask, for every site of a report.
using MaskPlan = std::map<std::string, PlannedMask>;

/// Masks every site of `report` with `policy` at the ratio `ratios` gives it,
/// with the site's row and column scores; site s uses stream stream_id(s) of
/// `seed`, so the plan depends only on (report, policy, seed, ratios). Throws
/// ValueError when `ratios` lacks a site of the report or names one it lacks.
/// @tparam P  a Mask policy (PartialMask, TargetedMask, StochasticTargetedMask, ...)
template <Mask P>
MaskPlan plan_masks(const RatioReport& report, const P& policy, std::uint64_t seed,
                    const std::map<std::string, double>& ratios) {
  for (const auto& [name, ratio] : ratios)
    check<ValueError>(std::any_of(report.sites.begin(), report.sites.end(),
                                  [&](const SiteRatio& s) { return s.name == name; }),
                      "mask plan: ratio given for '", name, "', which the ", report.extractor,
                      " ratio report does not contain");
  MaskPlan plan;
  for (const auto& site : report.sites) {
    const auto found = ratios.find(site.name);
    check<ValueError>(found != ratios.end(), "mask plan: no ratio given for site '", site.name, "'");
    MaskRequest request;
    request.out = site.out_features;
    request.in = site.in_features;
    request.ratio = found->second;
    request.row_scores = site.row_scores;
    request.col_scores = site.col_scores;
    request.seed = seed;
    request.stream = stream_id(site.name);
    request.site = site.name;
    plan.emplace(site.name, PlannedMask{found->second, policy.sample(request)});
  }
  return plan;
}

/// Masks every site of `report` with `policy` at its extracted ratio.
template <Mask P>
MaskPlan plan_masks(const RatioReport& report, const P& policy, std::uint64_t seed) {
  return plan_masks(report, policy, seed, report.ratios());
}

}  // namespace plora
