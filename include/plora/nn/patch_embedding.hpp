#pragma once
// ViT's patch embedding: a conv with kernel = stride = patch, computed as one
// gather (im2col) and one GEMM. Each patch flattens in (channel, ky, kx) order,
// which is the conv weight [hidden, C, P, P] read row-major as (hidden x C P P);
// patches are numbered row-major (py * grid + px). Frozen: no backward, since
// nothing before it is trainable.
#include <cstdint>
#include <utility>
#include <vector>

#include "plora/backend/scratch.hpp"
#include "plora/backend/concepts.hpp"
#include "plora/core/error.hpp"
#include "plora/nn/patch_grid.hpp"

namespace plora {

/// @tparam B  backend
template <Backend B>
class PatchEmbedding {
 public:
  using Matrix = typename B::Matrix;
  using View = plora::View<typename B::Space>;
  using ConstView = plora::ConstView<typename B::Space>;

  PatchEmbedding() = default;
  /// @param weight (hidden x channels * patch * patch)  @param bias (1 x hidden)
  PatchEmbedding(Matrix weight, Matrix bias, Index channels, Index image_size, Index patch_size)
      : weight_(std::move(weight)), bias_(std::move(bias)), channels_(channels), image_size_(image_size),
        patch_size_(patch_size) {
    in_context<ValueError>("patch embedding", [&] { check_patch_grid(channels, image_size, patch_size); });
    require_shape(weight_.view(), weight_.view().rows, patch_features(), "patch embedding weight");
    require_shape(bias_.view(), 1, hidden(), "patch embedding bias");
    std::vector<std::int32_t> ids;
    ids.reserve(static_cast<std::size_t>(patches() * patch_features()));
    const Index grid = image_size / patch_size;
    for (Index py = 0; py < grid; ++py)
      for (Index px = 0; px < grid; ++px)
        for (Index c = 0; c < channels; ++c)
          for (Index ky = 0; ky < patch_size; ++ky)
            for (Index kx = 0; kx < patch_size; ++kx)
              ids.push_back(static_cast<std::int32_t>((c * image_size + py * patch_size + ky) * image_size +
                                                      px * patch_size + kx));
    im2col_ = B::make_indices(ids);
  }

  [[nodiscard]] Index hidden() const { return weight_.view().rows; }
  [[nodiscard]] Index patches() const { return (image_size_ / patch_size_) * (image_size_ / patch_size_); }
  [[nodiscard]] Index patch_features() const { return channels_ * patch_size_ * patch_size_; }
  [[nodiscard]] Index pixels_per_image() const { return channels_ * image_size_ * image_size_; }

  /// out (batch * patches, hidden) from pixels (batch, channels * size * size), channels first.
  void forward(View out, ConstView pixels) {
    check<ShapeError>(pixels.cols == pixels_per_image(), "patch embedding: expected ", pixels_per_image(),
                      " values per image (", channels_, " x ", image_size_, " x ", image_size_, "), got ",
                      pixels.cols);
    // (batch, patches * C P P) row-major is (batch * patches, C P P): one gather for all patches.
    const View flat = columns_.rows(pixels.rows, patches() * patch_features());
    B::gather_cols(flat, pixels, im2col_);
    const ConstView patch_rows{flat.data, pixels.rows * patches(), patch_features()};
    B::gemm(out, patch_rows, Op::N, weight_.view(), Op::T, 1.0f, 0.0f);
    B::add_row_vector(out, bias_.view());
  }

 private:
  Matrix weight_;
  Matrix bias_;
  Index channels_ = 0;
  Index image_size_ = 0;
  Index patch_size_ = 0;
  typename B::Indices im2col_;  // pixel column of every (patch, c, ky, kx)
  detail::Scratch<B> columns_;  // (batch, patches * C P P)
};

}  // namespace plora
