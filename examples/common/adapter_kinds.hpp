#pragma once
// The --adapter names mapped to adapter types (one template instantiation of
// the pipeline each), how each is built for a site, and how it is exported:
// PEFT's tensor names where PEFT has the method (LoRA, AdaLoRA; Partial-* as
// the zero-padded dense LoRA / AdaLoRA it equals), a plora name otherwise.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "plora/adapters/adapters.hpp"
#include "plora/core/error.hpp"
#include "plora/core/host_matrix.hpp"
#include "plora/core/rng.hpp"
#include "plora/io/safetensors.hpp"
#include "plora/sparsity/mask_plan.hpp"

namespace plora::runner {

/// What a site's adapter is built from.
struct AdapterSettings {
  LoraConfig lora;
  AdaLoraConfig adalora;
  RandomMaskingConfig random_masking;
  const MaskPlan* plan = nullptr;  ///< kept rows / columns per site (Partial-* only)
  std::uint64_t seed = 0;
};

namespace detail {
/// The planned mask of `site`; ValueError when the plan lacks it.
inline const RowColMask& planned_mask(const AdapterSettings& settings, const std::string& site) {
  check<ValueError>(settings.plan != nullptr, site, ": a partial adapter needs sparsity ratios");
  const auto found = settings.plan->find(site);
  check<ValueError>(found != settings.plan->end(), "the sparsity ratios have no entry for target site '", site, "'");
  return found->second.mask;
}

/// Host copy of `compact` with its columns placed at `cols` of a (rows x width) zero matrix.
template <Backend B>
HostMatrix padded_cols(ConstView<typename B::Space> compact, const std::vector<std::int32_t>& cols, Index width) {
  const HostMatrix source = to_host<B>(compact);
  HostMatrix out(source.rows(), width);
  for (Index r = 0; r < source.rows(); ++r)
    for (std::size_t c = 0; c < cols.size(); ++c) out(r, cols[c]) = source(r, static_cast<Index>(c));
  return out;
}

/// Host copy of `compact` with its rows placed at `rows` of a (height x cols) zero matrix.
template <Backend B>
HostMatrix padded_rows(ConstView<typename B::Space> compact, const std::vector<std::int32_t>& rows, Index height) {
  const HostMatrix source = to_host<B>(compact);
  HostMatrix out(height, source.cols());
  for (std::size_t r = 0; r < rows.size(); ++r)
    std::copy_n(source.data() + static_cast<Index>(r) * source.cols(), source.cols(),
                out.data() + rows[r] * out.cols());
  return out;
}

inline nlohmann::ordered_json lora_like_config(std::string_view peft_type, Index r, float alpha,
                                               const std::vector<std::string>& targets) {
  return {{"peft_type", peft_type},   {"task_type", nullptr},       {"r", r},
          {"lora_alpha", alpha},      {"lora_dropout", 0.0},        {"target_modules", targets},
          {"bias", "none"},           {"fan_in_fan_out", false},    {"use_rslora", false},
          {"init_lora_weights", true}, {"rank_pattern", nlohmann::ordered_json::object()},
          {"alpha_pattern", nlohmann::ordered_json::object()},       {"use_dora", false},
          {"inference_mode", true}};
}
}  // namespace detail

/// Per adapter type: its --adapter name, how a site's adapter is built, its
/// tensors under PEFT-style names and the sidecar config fields.
template <class A>
struct AdapterTraits {
  static_assert(sizeof(A) == 0, "AdapterTraits: no runner support for this adapter type");
};

template <Backend B>
struct AdapterTraits<Lora<B>> {
  static constexpr std::string_view name = "lora";
  static Lora<B> make(const AdapterSettings& s, const std::string& site, Index out, Index in) {
    return Lora<B>(out, in, s.lora, RandomStream(s.seed, stream_id(site)));
  }
  /// "<prefix>.lora_A.weight" (r, in), "<prefix>.lora_B.weight" (out, r), as PEFT saves them.
  static void add_tensors(io::SafetensorsWriter& writer, const std::string& prefix, const Lora<B>& a) {
    writer.add(prefix + ".lora_A.weight", to_host<B>(a.lora_A()));
    writer.add(prefix + ".lora_B.weight", to_host<B>(a.lora_B()));
  }
  static nlohmann::ordered_json config(const AdapterSettings& s, const std::vector<std::string>& targets) {
    return detail::lora_like_config("LORA", s.lora.rank, s.lora.alpha, targets);
  }
};

template <Backend B>
struct AdapterTraits<AdaLora<B>> {
  static constexpr std::string_view name = "adalora";
  static AdaLora<B> make(const AdapterSettings& s, const std::string& site, Index out, Index in) {
    return AdaLora<B>(out, in, s.adalora, RandomStream(s.seed, stream_id(site)));
  }
  /// "<prefix>.lora_A" / ".lora_E" / ".lora_B" (no ".weight", as PEFT saves AdaLoRA), at the
  /// full initial rank: masked triplets keep E = 0, so the file equals the trimmed one.
  static void add_tensors(io::SafetensorsWriter& writer, const std::string& prefix, const AdaLora<B>& a) {
    writer.add(prefix + ".lora_A", to_host<B>(a.lora_A()));
    writer.add(prefix + ".lora_E", to_host<B>(a.lora_E()));
    writer.add(prefix + ".lora_B", to_host<B>(a.lora_B()));
  }
  static nlohmann::ordered_json config(const AdapterSettings& s, const std::vector<std::string>& targets) {
    auto json = detail::lora_like_config("ADALORA", s.adalora.init_r, s.adalora.alpha, targets);
    json["init_r"] = s.adalora.init_r;
    json["target_r"] = s.adalora.target_r;
    json["tinit"] = s.adalora.tinit;
    json["tfinal"] = s.adalora.tfinal;
    json["deltaT"] = s.adalora.deltaT;
    json["beta1"] = s.adalora.beta1;
    json["beta2"] = s.adalora.beta2;
    json["orth_reg_weight"] = s.adalora.orth_reg_weight;
    json["total_step"] = s.adalora.total_step;
    return json;
  }
};

/// Partial-LoRA / Partial-AdaLoRA: exported as the dense adapter they equal,
/// masked rows of B and columns of A zero, so PEFT loads them unchanged.
template <RestrictableAdapter Inner>
struct AdapterTraits<Partial<Inner>> {
  static constexpr std::string_view name =
      AdapterTraits<Inner>::name == std::string_view("lora") ? "partial-lora" : "partial-adalora";
  static Partial<Inner> make(const AdapterSettings& s, const std::string& site, Index out, Index in) {
    const RowColMask& mask = detail::planned_mask(s, site);
    PartialConfig<Inner> config{inner_config(s), mask.rows, mask.cols};
    return Partial<Inner>(out, in, config, RandomStream(s.seed, stream_id(site)));
  }
  static void add_tensors(io::SafetensorsWriter& writer, const std::string& prefix, const Partial<Inner>& a) {
    using B = typename Inner::BackendType;
    const Inner& c = a.inner();
    // PEFT saves LoRA factors as ".lora_A.weight", AdaLoRA's as ".lora_A".
    const std::string suffix = requires { c.lora_E(); } ? "" : ".weight";
    writer.add(prefix + ".lora_A" + suffix, detail::padded_cols<B>(c.lora_A(), a.kept_cols(), a.in_features()));
    if constexpr (requires { c.lora_E(); }) writer.add(prefix + ".lora_E", to_host<B>(c.lora_E()));
    writer.add(prefix + ".lora_B" + suffix, detail::padded_rows<B>(c.lora_B(), a.kept_rows(), a.out_features()));
  }
  static nlohmann::ordered_json config(const AdapterSettings& s, const std::vector<std::string>& targets) {
    return AdapterTraits<Inner>::config(s, targets);
  }

 private:
  static typename Inner::Config inner_config(const AdapterSettings& s) {
    if constexpr (std::same_as<typename Inner::Config, LoraConfig>) {
      return s.lora;
    } else {
      return s.adalora;
    }
  }
};

template <Backend B>
struct AdapterTraits<FullDelta<B>> {
  static constexpr std::string_view name = "full";
  static FullDelta<B> make(const AdapterSettings& s, const std::string& site, Index out, Index in) {
    return FullDelta<B>(out, in, {}, RandomStream(s.seed, stream_id(site)));
  }
  /// "<prefix>.delta_weight" (out, in): add it to the base weight.
  static void add_tensors(io::SafetensorsWriter& writer, const std::string& prefix, const FullDelta<B>& a) {
    writer.add(prefix + ".delta_weight", to_host<B>(a.delta_W()));
  }
  static nlohmann::ordered_json config(const AdapterSettings&, const std::vector<std::string>& targets) {
    return {{"peft_type", nullptr}, {"plora_type", "FULL_DELTA"}, {"target_modules", targets}};
  }
};

template <Backend B>
struct AdapterTraits<RandomMasking<B>> {
  static constexpr std::string_view name = "random-masking";
  static RandomMasking<B> make(const AdapterSettings& s, const std::string& site, Index out, Index in) {
    return RandomMasking<B>(out, in, s.random_masking, RandomStream(s.seed, stream_id(site)));
  }
  /// "<prefix>.delta_weight" (out, in), zero off the trained support.
  static void add_tensors(io::SafetensorsWriter& writer, const std::string& prefix, const RandomMasking<B>& a) {
    writer.add(prefix + ".delta_weight", to_host<B>(a.delta_W()));
  }
  static nlohmann::ordered_json config(const AdapterSettings& s, const std::vector<std::string>& targets) {
    return {{"peft_type", nullptr},
            {"plora_type", "RANDOM_MASKING"},
            {"density", s.random_masking.density},
            {"target_modules", targets}};
  }
};

/// Calls `f.template operator()<A>()` with the adapter type named `name`
/// (one of kAdapterNames) on backend B and returns its result.
template <Backend B, class F>
decltype(auto) with_adapter_type(std::string_view name, F&& f) {
  if (name == "lora") return f.template operator()<Lora<B>>();
  if (name == "adalora") return f.template operator()<AdaLora<B>>();
  if (name == "partial-lora") return f.template operator()<PartialLora<B>>();
  if (name == "partial-adalora") return f.template operator()<PartialAdaLora<B>>();
  if (name == "full") return f.template operator()<FullDelta<B>>();
  check<ValueError>(name == "random-masking", "unknown adapter '", name,
                    "'; expected lora, adalora, partial-lora, partial-adalora, full or random-masking");
  return f.template operator()<RandomMasking<B>>();
}

}  // namespace plora::runner
