#pragma once
// transformers' ViTConfig fields plora uses (io/hf_config.hpp parses config.json into it).
#include <string>
#include <vector>

#include "plora/core/view.hpp"

namespace plora {

struct ViTConfig {
  Index hidden_size = 768;
  Index num_hidden_layers = 12;
  Index num_attention_heads = 12;
  Index intermediate_size = 3072;
  std::string hidden_act = "gelu";
  float layer_norm_eps = 1e-12f;
  Index image_size = 224;
  Index patch_size = 16;
  Index num_channels = 3;
  bool qkv_bias = true;
  float hidden_dropout_prob = 0.0f;           ///< embeddings and both residual branches, in training
  float attention_probs_dropout_prob = 0.0f;  ///< attention probabilities, in training
  Index num_labels = 2;
  std::vector<std::string> id2label;  ///< empty if config.json has none
};

}  // namespace plora
