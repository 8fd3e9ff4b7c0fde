#pragma once
// The Adapter concept: a trainable change ΔW attached to one frozen linear
// site y = x W^T + b, with W (out x in). Activations are (tokens x features).
//
//   forward(y, x, saved)        y += x ΔW^T, keeping in `saved` what backward needs
//   backward(dx, dy, x, saved)  parameter grads += from dy; dx += dy ΔW (skipped if dx is empty)
//   parameters()                (name, value, grad) views for the optimizer
//   zero_grad()                 grads = 0
//   trainable_count()           number of trainable scalars
//   delta()                     dense ΔW (out x in) on the backend
//   merge_into(W) / unmerge_from(W)   W += ΔW / W -= ΔW
//   set_training(bool)          enables input dropout where the adapter has it
//
// `Saved` is owned by the caller (the layer), reused across steps, so one
// adapter can be applied at several places in a forward pass (DeBERTa applies
// query/key projections to content and to relative positions).
#include <concepts>
#include <memory>

#include "plora/backend/concepts.hpp"
#include "plora/core/parameter.hpp"

namespace plora {

template <class A>
concept Adapter = Backend<typename A::BackendType> && std::default_initializable<typename A::Saved> &&
                  requires(A& a, const A& ca, View<typename A::BackendType::Space> v,
                           ConstView<typename A::BackendType::Space> cv, typename A::Saved& saved, bool flag) {
                    a.forward(v, cv, saved);
                    a.backward(v, cv, cv, static_cast<const typename A::Saved&>(saved));
                    { a.parameters() } -> std::same_as<ParameterList<typename A::BackendType::Space>>;
                    a.zero_grad();
                    { ca.trainable_count() } -> std::convertible_to<Index>;
                    { ca.delta() } -> std::same_as<typename A::BackendType::Matrix>;
                    ca.merge_into(v);
                    ca.unmerge_from(v);
                    a.set_training(flag);
                    { ca.in_features() } -> std::convertible_to<Index>;
                    { ca.out_features() } -> std::convertible_to<Index>;
                  };

/// An adapter whose ΔW is a dense (out x in) matrix, which a site folds into
/// its own GEMMs: y = x (W + ΔW)^T and dx = dy (W + ΔW), one GEMM each instead
/// of the frozen one plus the adapter's.
///   fold_into(F, W)     F = W + ΔW (F is the site's buffer, W's shape)
///   backward(empty dx, dy, x, saved)   only the parameter grads
template <class A>
concept FoldableAdapter =
    Adapter<A> && requires(const A& ca, View<typename A::BackendType::Space> folded,
                           ConstView<typename A::BackendType::Space> w) { ca.fold_into(folded, w); };

/// An adapter with work buffers that no call's result depends on after the
/// call, which adapters running one at a time may share:
///   share_work_buffers(std::shared_ptr<WorkBuffers>)
template <class A>
concept WorkSharingAdapter = Adapter<A> && requires(A& a, std::shared_ptr<typename A::WorkBuffers> buffers) {
  a.share_work_buffers(buffers);
};

/// A low-rank adapter that `Partial` can restrict to kept output rows and input
/// columns: `restricted(rows, cols)` returns the compact adapter whose factors are
/// the kept rows of the up factor and kept columns of the down factor, initialised
/// exactly as the dense adapter's.
template <class A>
concept RestrictableAdapter = Adapter<A> && requires(const A& ca, const std::vector<std::int32_t>& ids) {
  { ca.restricted(ids, ids) } -> std::same_as<A>;
};

}  // namespace plora
