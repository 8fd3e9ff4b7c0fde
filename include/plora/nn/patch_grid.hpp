#pragma once
// The image geometry a patch embedding can index: shared by PatchEmbedding and
// the ViT config.json parser, which names the file it came from.
#include <cstdint>

#include "plora/core/error.hpp"
#include "plora/core/view.hpp"

namespace plora {

/// Throws ValueError unless `channels` x `image_size`^2 images cut into whole
/// `patch_size` patches and hold at most INT32_MAX values (the patch
/// embedding's gather indices are int32). Checked by division, so the test
/// cannot wrap; patches and patch features are at most the pixel count, so
/// none of their products wraps once it holds.
inline void check_patch_grid(Index channels, Index image_size, Index patch_size) {
  check<ValueError>(channels > 0 && patch_size > 0 && image_size > 0, "num_channels ", channels, ", image_size ",
                    image_size, " and patch_size ", patch_size, " must be positive");
  check<ValueError>(image_size % patch_size == 0, "image_size ", image_size, " is not a multiple of patch_size ",
                    patch_size);
  check<ValueError>(image_size <= INT32_MAX / image_size && channels <= INT32_MAX / (image_size * image_size),
                    "'image_size' ", image_size, " with num_channels ", channels, " gives more than ", INT32_MAX,
                    " values per image (the int32 index range of the patch embedding)");
}

}  // namespace plora
