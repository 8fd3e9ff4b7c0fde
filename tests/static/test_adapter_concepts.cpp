// Compile-only conformance: every adapter satisfies the Adapter concept, the
// low-rank ones are restrictable, all share the uniform construction signature,
// and each can be attached to a LinearSite.
#include <concepts>

#include "plora/adapters/adapters.hpp"
#include "plora/backend/cpu/cpu.hpp"
#include "plora/nn/linear_site.hpp"

namespace {
using namespace plora;

template <class A>
concept UniformlyConstructible = std::constructible_from<A, Index, Index, const typename A::Config&, RandomStream>;

template <class A>
constexpr bool conforms = Adapter<A> && UniformlyConstructible<A> && std::is_same_v<typename A::BackendType, cpu> &&
                          std::is_default_constructible_v<LinearSite<cpu, A>>;

static_assert(conforms<Lora<cpu>>, "Lora<cpu> must be an Adapter built as A(out, in, config, stream)");
static_assert(conforms<AdaLora<cpu>>, "AdaLora<cpu> must be an Adapter built as A(out, in, config, stream)");
static_assert(conforms<PartialLora<cpu>>, "PartialLora<cpu> must be an Adapter built as A(out, in, config, stream)");
static_assert(conforms<PartialAdaLora<cpu>>,
              "PartialAdaLora<cpu> must be an Adapter built as A(out, in, config, stream)");
static_assert(conforms<FullDelta<cpu>>, "FullDelta<cpu> must be an Adapter built as A(out, in, config, stream)");
static_assert(conforms<RandomMasking<cpu>>,
              "RandomMasking<cpu> must be an Adapter built as A(out, in, config, stream)");

static_assert(RestrictableAdapter<Lora<cpu>>, "Lora<cpu> must provide restricted(rows, cols)");
static_assert(RestrictableAdapter<AdaLora<cpu>>, "AdaLora<cpu> must provide restricted(rows, cols)");
static_assert(WorkSharingAdapter<PartialLora<cpu>> && WorkSharingAdapter<PartialAdaLora<cpu>>,
              "Partial adapters' work buffers must be shareable across a model's sites");
static_assert(!WorkSharingAdapter<Lora<cpu>>, "Lora keeps no work buffers to share");
static_assert(std::is_same_v<PartialConfig<Lora<cpu>>, PartialLora<cpu>::Config>);
static_assert(std::is_same_v<PartialLora<cpu>::BackendType, cpu>);
}  // namespace

// A site's forward and backward must instantiate with each adapter.
template class plora::LinearSite<plora::cpu, plora::Lora<plora::cpu>>;
template class plora::LinearSite<plora::cpu, plora::AdaLora<plora::cpu>>;
template class plora::LinearSite<plora::cpu, plora::PartialLora<plora::cpu>>;
template class plora::LinearSite<plora::cpu, plora::PartialAdaLora<plora::cpu>>;
template class plora::LinearSite<plora::cpu, plora::FullDelta<plora::cpu>>;
template class plora::LinearSite<plora::cpu, plora::RandomMasking<plora::cpu>>;
