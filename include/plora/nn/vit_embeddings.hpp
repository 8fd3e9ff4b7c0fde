#pragma once
// ViT's token embeddings: [CLS; patch embeddings] + position embeddings, one
// sequence of 1 + patches tokens per image (transformers' ViTEmbeddings without
// position interpolation, i.e. at the configured image size). Frozen.
#include <utility>

#include "plora/backend/scratch.hpp"
#include "plora/backend/concepts.hpp"
#include "plora/nn/patch_embedding.hpp"

namespace plora {

/// @tparam B  backend
template <Backend B>
class VitEmbeddings {
 public:
  using Matrix = typename B::Matrix;
  using View = plora::View<typename B::Space>;
  using ConstView = plora::ConstView<typename B::Space>;

  VitEmbeddings() = default;
  /// @param cls_token (1 x hidden)  @param positions (1 + patches x hidden)
  VitEmbeddings(PatchEmbedding<B> patch, Matrix cls_token, Matrix positions)
      : patch_(std::move(patch)), base_(std::move(positions)) {
    require_shape(cls_token.view(), 1, patch_.hidden(), "ViT cls_token");
    require_shape(base_.view(), tokens(), patch_.hidden(), "ViT position_embeddings");
    B::axpy(base_.view().row_block(0, 1), 1.0f, cls_token.view());  // row 0: cls + position 0
  }

  [[nodiscard]] Index tokens() const { return 1 + patch_.patches(); }
  [[nodiscard]] Index hidden() const { return patch_.hidden(); }

  /// tokens (batch * (1 + patches), hidden) from pixels (batch, channels * size * size).
  void forward(View out, ConstView pixels) {
    const Index n_tokens = tokens(), n_patches = patch_.patches();
    const View patches = patches_.rows(pixels.rows * n_patches, hidden());
    patch_.forward(patches, pixels);
    for (Index n = 0; n < pixels.rows; ++n) {
      B::copy(out.row_block(n * n_tokens, n_tokens), base_.view());
      B::axpy(out.row_block(n * n_tokens + 1, n_patches), 1.0f, patches.row_block(n * n_patches, n_patches));
    }
  }

 private:
  PatchEmbedding<B> patch_;
  Matrix base_;                 // (tokens, hidden): row 0 cls + pos 0, row 1 + p pos 1 + p
  detail::Scratch<B> patches_;  // (batch * patches, hidden)
};

}  // namespace plora
