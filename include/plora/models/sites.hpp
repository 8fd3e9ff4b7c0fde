#pragma once
// Choosing sites the way PEFT chooses target_modules, attaching adapters to
// them, and counting what is trained. Works for any plora::Model.
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "plora/adapters/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/models/concepts.hpp"

namespace plora {

/// PEFT's rule for a target_modules entry: the site's full name equals it or
/// ends with "." + target ("query" matches "vit.encoder.layer.0.attention.attention.query";
/// "output.dense" matches both "...attention.output.dense" and "...layer.0.output.dense").
inline bool matches_target(std::string_view site_name, std::string_view target) {
  if (target.empty()) return false;
  if (site_name == target) return true;
  return site_name.size() > target.size() && site_name.ends_with(target) &&
         site_name[site_name.size() - target.size() - 1] == '.';
}

/// Whether any of `targets` matches.
inline bool matches_target(std::string_view site_name, std::span<const std::string> targets) {
  for (const auto& t : targets)
    if (matches_target(site_name, t)) return true;
  return false;
}

/// The model's sites matched by `targets`, in site_names() order. Throws
/// ValueError naming a target that matches no site (a typo would otherwise
/// silently train nothing there).
template <Model M>
std::vector<std::string> matched_sites(M& model, std::span<const std::string> targets) {
  check<ValueError>(!targets.empty(), "target modules: the list is empty");
  const std::vector<std::string> names = model.site_names();
  for (const auto& t : targets) {
    bool found = false;
    for (const auto& n : names) found = found || matches_target(n, t);
    check<ValueError>(found, "target module '", t, "' matches none of the model's ", names.size(),
                      " sites (e.g. '", names.empty() ? std::string() : names.front(), "')");
  }
  std::vector<std::string> out;
  for (const auto& n : names)
    if (matches_target(n, targets)) out.push_back(n);
  return out;
}

/// A site's name and its weight's shape (out_features x in_features).
struct SiteShape {
  std::string name;
  Index out_features = 0;
  Index in_features = 0;
};

/// Every site of the model with its shape, in site_names() order: what a file
/// of per-site data (ratios.json) is checked against.
template <Model M>
std::vector<SiteShape> site_shapes(M& model) {
  std::vector<SiteShape> out;
  for (const auto& name : model.site_names()) {
    const auto& site = model.site(name);
    out.push_back({name, site.out_features(), site.in_features()});
  }
  return out;
}

/// Attaches `factory(site_name, out_features, in_features)` to every site
/// matched by `targets` (replacing any adapter there); returns their names.
/// The attached sites share one fold buffer (where folding adapters, full
/// fine-tuning's, form W + ΔW) and their adapters one set of work buffers
/// (Partial's compact copies), so the model must run them one at a time, as
/// its forward and backward do.
template <Model M, class Factory>
std::vector<std::string> attach_adapters(M& model, std::span<const std::string> targets, Factory&& factory) {
  std::vector<std::string> names = matched_sites(model, targets);
  using Site = std::remove_reference_t<decltype(model.site(names.front()))>;
  const auto fold_buffer = std::make_shared<typename Site::FoldBuffer>();
  for (const auto& n : names) {
    auto& site = model.site(n);
    site.attach(factory(n, site.out_features(), site.in_features()));
    site.share_fold_buffer(fold_buffer);
  }
  using Attached = std::remove_reference_t<decltype(model.site(names.front()).adapter())>;
  if constexpr (WorkSharingAdapter<Attached>) {
    const auto work_buffers = std::make_shared<typename Attached::WorkBuffers>();
    for (const auto& n : names) model.site(n).adapter().share_work_buffers(work_buffers);
  }
  return names;
}

/// Trainable scalars by group: adapters (on sites) and everything else the
/// model trains (the classification head).
struct TrainableCount {
  Index adapters = 0;
  Index head = 0;
  [[nodiscard]] Index total() const { return adapters + head; }
};

/// Adapters count their trainable scalars (Random Masking: its support only,
/// though its parameter tensor is dense); the head is every other parameter.
template <Model M>
TrainableCount trainable_count(M& model) {
  TrainableCount count;
  Index all = 0, adapter_storage = 0;
  for (const auto& p : model.parameters()) all += p.value.size();
  for (const auto& n : model.site_names()) {
    auto& site = model.site(n);
    if (!site.has_adapter()) continue;
    count.adapters += site.adapter().trainable_count();
    for (const auto& p : site.adapter().parameters()) adapter_storage += p.value.size();
  }
  count.head = all - adapter_storage;
  return count;
}

}  // namespace plora
