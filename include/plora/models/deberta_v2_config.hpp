#pragma once
// transformers' DebertaV2Config, every field that changes the model (see
// REFERENCE.md §2: the class defaults differ from v3's published values).
#include <string>
#include <vector>

#include "plora/core/view.hpp"

namespace plora {

struct DebertaV2Config {
  Index vocab_size = 128100;
  Index hidden_size = 768;
  Index num_hidden_layers = 12;
  Index num_attention_heads = 12;
  Index intermediate_size = 3072;
  std::string hidden_act = "gelu";
  float hidden_dropout_prob = 0.1f;
  float attention_probs_dropout_prob = 0.1f;
  Index max_position_embeddings = 512;
  Index type_vocab_size = 0;
  float layer_norm_eps = 1e-7f;
  bool relative_attention = true;
  Index max_relative_positions = -1;  ///< < 1 means max_position_embeddings
  Index position_buckets = 256;
  bool share_att_key = true;
  std::vector<std::string> pos_att_type = {"p2c", "c2p"};
  std::string norm_rel_ebd = "layer_norm";
  bool position_biased_input = false;
  Index embedding_size = -1;  ///< < 1 means hidden_size
  Index pad_token_id = 0;
  Index pooler_hidden_size = -1;  ///< < 1 means hidden_size
  std::string pooler_hidden_act = "gelu";
  float pooler_dropout = 0.0f;
  float cls_dropout = -1.0f;  ///< < 0 means hidden_dropout_prob
  Index num_labels = 2;
  std::string problem_type;  ///< "regression" for STS-B-like single-output heads
};

}  // namespace plora
