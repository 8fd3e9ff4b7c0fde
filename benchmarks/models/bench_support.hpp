#pragma once
// Helpers the model, sparsity and side-by-side benchmarks share, on either
// backend (nothing here includes one): random weights laid out like a freshly
// initialised Hugging Face model, random batches, the benchmarked model
// shapes, peak RSS, and the GEMM work of a ViT or DeBERTa step counted from
// its shapes.
#include <sys/resource.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "plora/core/host_matrix.hpp"
#include "plora/core/rng.hpp"
#include "plora/models/batches.hpp"
#include "plora/models/deberta_v2.hpp"
#include "plora/models/vit_config.hpp"

namespace plora::bench {

/// transformers' _init_weights for ViT / DeBERTa: LayerNorm weight 1 and bias
/// 0, other biases 0, every other tensor N(0, 0.02), each key from its own
/// stream so a tensor never depends on the order it is asked for.
inline HostMatrix hf_init(const std::string& key, Index rows, Index cols) {
  HostMatrix m(rows, cols);
  const bool norm = key.find("layernorm") != std::string::npos || key.find("LayerNorm") != std::string::npos;
  if (key.ends_with(".bias")) return m;
  if (norm) {
    std::fill(m.values().begin(), m.values().end(), 1.0f);
    return m;
  }
  RandomStream rng(0, stream_id(key));
  for (float& v : m.values()) v = 0.02f * rng.normal();
  return m;
}

/// Random images in [-1, 1] (the range of ViT's normalised pixels) and labels.
inline ImageBatch random_images(const ViTConfig& config, Index batch, std::uint64_t seed) {
  ImageBatch out{HostMatrix(batch, config.num_channels * config.image_size * config.image_size), {}};
  RandomStream rng(seed, 0);
  for (float& v : out.pixels.values()) v = rng.uniform(-1.0f, 1.0f);
  for (Index i = 0; i < batch; ++i)
    out.labels.push_back(static_cast<std::int32_t>(rng.below(static_cast<std::uint32_t>(config.num_labels))));
  return out;
}

/// ViT-B/16 (the paper's vision model) and ViT-S/16 (DeiT-S's shape: same
/// layout, half the width and heads).
inline ViTConfig vit_base_config(Index num_labels = 10) {
  ViTConfig c;
  c.num_labels = num_labels;
  return c;
}
inline ViTConfig vit_small_config(Index num_labels = 10) {
  ViTConfig c;
  c.hidden_size = 384;
  c.num_attention_heads = 6;
  c.intermediate_size = 1536;
  c.num_labels = num_labels;
  return c;
}

/// deberta-v3-base's config.json values (DebertaV2Config's defaults are v3's).
inline DebertaV2Config deberta_v3_base_config() {
  DebertaV2Config c;
  c.vocab_size = 128100;
  c.hidden_size = 768;
  c.num_hidden_layers = 12;
  c.num_attention_heads = 12;
  c.intermediate_size = 3072;
  c.position_buckets = 256;
  c.relative_attention = true;
  c.share_att_key = true;
  c.pos_att_type = {"p2c", "c2p"};
  c.norm_rel_ebd = "layer_norm";
  c.position_biased_input = false;
  c.num_labels = 2;
  return c;
}

/// `batch` sequences of `seq_len` real tokens: [CLS] then random ordinary
/// pieces (ids 4..vocab-1); random binary labels.
inline TokenBatch random_tokens(const DebertaV2Config& config, Index batch, Index seq_len) {
  TokenBatch b;
  b.batch = batch;
  b.seq_len = seq_len;
  RandomStream rng(3, 0);
  const auto pieces = static_cast<std::uint32_t>(config.vocab_size - 4);
  for (Index i = 0; i < batch * seq_len; ++i) {
    if (i % seq_len == 0)
      b.input_ids.push_back(1);
    else
      b.input_ids.push_back(static_cast<std::int32_t>(4 + rng.below(pieces)));
    b.attention_mask.push_back(1);
  }
  for (Index i = 0; i < batch; ++i) b.labels.push_back(static_cast<std::int32_t>(rng.below(2)));
  return b;
}

/// Peak resident set size of this process in MiB: VmHWM of /proc/self/status,
/// the high-water mark of this program's own address space. getrusage's
/// ru_maxrss (the fallback off Linux) also keeps, across exec, the peak of the
/// process it was forked from: started by tools/bench_vs_peft.py it reported
/// the Python orchestrator's ~700 MiB (torch loaded) for a 22 MiB driver.
inline double peak_rss_mib() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.starts_with("VmHWM:")) return std::stod(line.substr(6)) / 1024.0;  // "VmHWM:   1234 kB"
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

/// Resets the kernel's peak-RSS mark to the current RSS (Linux >= 4.0,
/// /proc/self/clear_refs "5"), so that peak_rss_mib() afterwards is the peak of
/// what follows. Returns false where the kernel does not allow it.
inline bool reset_peak_rss() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  return static_cast<bool>(clear);
}

/// Which adapters a training step carries, for counting its GEMM work.
enum class StepKind { Forward, LowRank, FullDelta };

/// Where rank-r adapters sit: kept output rows and input columns summed over
/// every adapted site, and the kept columns of layer 0's sites alone (whose
/// input gradient is skipped). Dense LoRA on q and v of 12 layers of width
/// 768: rows = cols = 24 * 768, layer0_cols = 2 * 768.
struct AdapterExtent {
  Index rank = 8;
  double rows = 0.0;
  double cols = 0.0;
  double layer0_cols = 0.0;
};

/// GEMM FLOPs of one model forward (eval) or training step.
struct StepWork {
  double forward = 0.0;  ///< of the forward
  double step = 0.0;     ///< of forward + backward
};

/// The GEMM work of an encoder classifier whose `layers` layers of width d and
/// MLP width f run over `rows` tokens, the last on token 0 of its `n`
/// examples alone, as plora runs it (frozen-weight gradients skipped):
///   forward : per layer k, v on every token (2 · 2 rows d²), q, o and the MLP
///             (2 · 2R'd², 2 · 2R'df) on R' query rows (R' = rows, or n in the
///             last layer), `attention(R')`; `stem` (work below or beside the
///             layers that needs no gradient); `head`; adapters (LoRA:
///             2 rows r (kept rows + cols) per site, at every token: the last
///             query adapter's one token per example is below 0.03 % of a step).
///   backward: input gradients of every frozen linear except layer 0's q, k, v
///             (nothing below them needs a gradient), twice `attention` (two
///             gradients per product), twice `head` (trained: dW and dx),
///             adapter gradients (dB and d(down) on the kept rows, dA and dx on
///             the kept columns). FullDelta (full fine-tuning on every linear
///             site, folded by the site) adds dΔW per site: 3 GEMMs per site.
template <class Attention>
StepWork encoder_work(double rows, double n, double d, double f, double layers, Attention attention, double stem,
                      double head, StepKind kind, const AdapterExtent& adapters) {
  const auto linear = [&](double query_rows) {
    return 2.0 * 2.0 * rows * d * d + 2.0 * 2.0 * query_rows * d * d + 2.0 * 2.0 * query_rows * d * f;
  };
  const double all_linear = layers < 1.0 ? 0.0 : (layers - 1.0) * linear(rows) + linear(n);
  const double all_attention = layers < 1.0 ? 0.0 : (layers - 1.0) * attention(rows) + attention(n);
  const double layer0_qkv = layers < 1.0 ? 0.0 : 2.0 * 2.0 * rows * d * d + 2.0 * (layers < 2.0 ? n : rows) * d * d;
  const double r = static_cast<double>(adapters.rank);
  StepWork w;
  w.forward = stem + all_linear + all_attention + head;
  if (kind == StepKind::Forward) return w;
  double backward = all_linear + 2.0 * all_attention - layer0_qkv + 2.0 * head;
  if (kind == StepKind::LowRank) {
    w.forward += 2.0 * rows * r * (adapters.rows + adapters.cols);
    backward += 2.0 * rows * r * (2.0 * adapters.rows + 2.0 * adapters.cols - adapters.layer0_cols);
  } else {
    backward += all_linear;  // dΔW of every site
  }
  w.step = w.forward + backward;
  return w;
}

/// A ViT's (encoder_work): attention Q K^T and P V (2 · 2R'td); the patch
/// embedding as the stem; the classifier as the head.
inline StepWork vit_work(const ViTConfig& c, Index batch, StepKind kind, const AdapterExtent& adapters = {}) {
  const double n = static_cast<double>(batch), d = static_cast<double>(c.hidden_size);
  const double patches = static_cast<double>((c.image_size / c.patch_size) * (c.image_size / c.patch_size));
  const double t = patches + 1.0;
  const double patch_features = static_cast<double>(c.num_channels * c.patch_size * c.patch_size);
  const auto attention = [&](double query_rows) { return 2.0 * 2.0 * query_rows * t * d; };
  return encoder_work(n * t, n, d, static_cast<double>(c.intermediate_size), static_cast<double>(c.num_hidden_layers),
                      attention, 2.0 * n * patches * patch_features * d,
                      2.0 * n * d * static_cast<double>(c.num_labels), kind, adapters);
}

/// A DeBERTa-v2's (encoder_work) with n sequences of t tokens and the
/// disentangled attention's terms (R relative rows: those t tokens reach,
/// 255 of 2 · 256 for t = 128; shared keys): attention Q K^T and P V
/// (2 · 2R'td), c2p Q Kr^T (2R'Rd), p2c K Qr^T (2 rows R d); the relative keys
/// and queries of every layer (2 · 2Rd² each) as the stem; pooler and
/// classifier as the head. Left out: the query adapter's pass over the R
/// relative rows (below 0.1 % of the step).
inline StepWork deberta_work(const DebertaV2Config& c, Index batch, Index seq_len, StepKind kind,
                             const AdapterExtent& adapters = {}) {
  const double n = static_cast<double>(batch), t = static_cast<double>(seq_len), rows = n * t;
  const double d = static_cast<double>(c.hidden_size), layers = static_cast<double>(c.num_hidden_layers);
  const bool c2p = std::ranges::find(c.pos_att_type, "c2p") != c.pos_att_type.end() && c.relative_attention;
  const bool p2c = std::ranges::find(c.pos_att_type, "p2c") != c.pos_att_type.end() && c.relative_attention;
  const double rel = static_cast<double>(reached_relative_rows(disentangled_options(c), seq_len).count);
  const auto attention = [&](double query_rows) {
    return 2.0 * 2.0 * query_rows * t * d + (c2p ? 2.0 * query_rows * rel * d : 0.0) +
           (p2c ? 2.0 * rows * rel * d : 0.0);
  };
  const double relative_projections = ((c2p ? 1.0 : 0.0) + (p2c ? 1.0 : 0.0)) * 2.0 * rel * d * d;
  const double head = 2.0 * n * d * d + 2.0 * n * d * static_cast<double>(c.num_labels);
  return encoder_work(rows, n, d, static_cast<double>(c.intermediate_size), layers, attention,
                      layers * relative_projections, head, kind, adapters);
}

/// Median of a list of seconds.
inline double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n == 0 ? 0.0 : (n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]));
}

}  // namespace plora::bench
