#pragma once
// Host-side batches the models consume; io/ produces them, models upload them.
#include <cstdint>
#include <vector>

#include "plora/core/host_matrix.hpp"

namespace plora {

/// Batches of at most `batch` examples that `size` examples fill: a ceiling
/// division that cannot overflow, whatever `batch` is.
inline Index batch_count(Index size, Index batch) { return size / batch + (size % batch != 0 ? 1 : 0); }

/// A batch of preprocessed images: pixels (batch x channels*height*width) in
/// channels-first order per image, and integer class labels.
struct ImageBatch {
  HostMatrix pixels;
  std::vector<std::int32_t> labels;
  [[nodiscard]] Index size() const { return pixels.rows(); }
};

/// A batch of tokenised sequences, each (batch x seq_len) row-major. Labels are
/// class ids for classification; `targets` holds regression targets (STS-B).
struct TokenBatch {
  Index batch = 0;
  Index seq_len = 0;
  std::vector<std::int32_t> input_ids;
  std::vector<std::int32_t> token_type_ids;
  std::vector<std::int32_t> attention_mask;  ///< 1 for real tokens, 0 for padding
  std::vector<std::int32_t> labels;
  std::vector<float> targets;
  [[nodiscard]] Index size() const { return batch; }
};

}  // namespace plora
