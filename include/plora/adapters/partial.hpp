#pragma once
// Partial<A>: a low-rank adapter restricted to kept output rows R and input
// columns C (METHOD.md §1). Only the compact factors (B_R, A_C) are stored,
// computed and updated:
//   forward : y[:, R] += compact(x[:, C])
//   backward: g = dy[:, R]; compact backward on (g, x[:, C]); dx[:, C] += its input grad
// The result equals the dense adapter whose masked rows of B and columns of A
// are zero, so delta() is that dense ΔW, zero-padded, and merges like it.
//
// Tiles: on the host the tokens go through gather -> compact adapter -> scatter
// a tile of rows at a time, so the compact copies of y, dy and dx stay in cache
// and only the activations (and the saved x[:, C]) travel to memory. The ops
// inside a tile split its rows over the backend's threads, so a tile holds a
// cache-sized share of rows per thread: with fewer rows each op's share is
// too small to pay for waking the threads (and, with a BLAS, the compact
// products fall below the rank kernels' threshold). Random
// kept columns touch every cache line of x, y, dy and dx, so the gathers and
// scatters are memory-bound. Each tile is one application of the compact
// adapter with its own Saved. That equals one pass over all tokens
// because tokens are independent rows, parameter grads accumulate (+=) over the
// tiles' backward calls, and the dropout stream advances by tokens x |C| per
// application, so the tiles draw the one-pass mask row by row. A device
// backend runs all tokens as one tile: more would only add kernel launches.
#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include "plora/adapters/adalora.hpp"
#include "plora/adapters/concepts.hpp"
#include "plora/adapters/detail/checks.hpp"
#include "plora/backend/scratch.hpp"
#include "plora/adapters/lora.hpp"
#include "plora/core/rng.hpp"

namespace plora {

namespace detail {
/// Host tiles: each thread's share of the widest compact copy of a tile
/// (rows x max(|R|, |C|) floats) is kept near this size, within
/// [kPartialMinTile, kPartialMaxTile] tokens per thread. bench_adapters
/// (ViT-B shapes, densities 1-.13): with 1 thread flat within noise for 32-128
/// tokens, slower at 256-512 (L2 spills) and for some shapes at 16 (per-GEMM
/// overhead), one pass over all tokens 15-20 % slower. Against 256 KiB per
/// tile, 1 MiB per thread was 13-45 % faster with 2 threads at every shape and
/// density, and -12 to +6 % with 1 thread where the tiles differ
/// (docs/benchmarks.md §10, session 23).
inline constexpr Index kPartialTileBytes = 1024 * 1024;
inline constexpr Index kPartialMinTile = 16;
inline constexpr Index kPartialMaxTile = 128;
}  // namespace detail

/// The dense adapter's config plus the kept rows (of out) and columns (of in),
/// each sorted ascending, unique, in range and non-empty.
/// @tparam A  the restrictable adapter (Lora<B>, AdaLora<B>)
template <RestrictableAdapter A>
struct PartialConfig {
  typename A::Config inner{};
  std::vector<std::int32_t> kept_rows;
  std::vector<std::int32_t> kept_cols;
};

/// @tparam A  the restrictable adapter whose compact form is trained
template <RestrictableAdapter A>
class Partial {
 public:
  using BackendType = typename A::BackendType;
  using Config = PartialConfig<A>;
  using Matrix = typename BackendType::Matrix;
  using View = plora::View<typename BackendType::Space>;
  using ConstView = plora::ConstView<typename BackendType::Space>;

  /// One application's state: x[:, C] and the compact adapter's Saved per tile.
  struct Saved {
    // x[:, C] (T, |C|) from the forward. Gathering it again in backward would
    // save these T x |C| floats of activation memory (PyTorch's autograd keeps
    // the same copy) but read all of x once more: random kept columns hit
    // every cache line of it. Keeping it measured 10 % faster at 768 x 768,
    // density .13 (bench_adapters, 1 thread), no different at 3072 x 768.
    detail::Scratch<BackendType> x_kept;
    std::vector<typename A::Saved> tiles;  // grows to the most tiles seen
    Index tokens = -1;
    Index tile = 0;  // tokens per tile in the forward: the backward walks the same tiles
  };

  /// Builds the dense A from `init` (so initial values are exactly the dense
  /// adapter's), then keeps its restriction to (kept_rows, kept_cols).
  Partial(Index out, Index in, const Config& config, RandomStream init)
      : out_(out), in_(in), kept_rows_(checked(config.kept_rows, out, "kept_rows")),
        kept_cols_(checked(config.kept_cols, in, "kept_cols")), rows_(indices(kept_rows_)),
        cols_(indices(kept_cols_)), inner_(A(out, in, config.inner, init).restricted(kept_rows_, kept_cols_)) {}

  /// y (T, out)[:, R] += compact(x (T, in)[:, C])
  void forward(View y, ConstView x, Saved& saved) {
    detail::check_forward("Partial", y, x, out_, in_);
    const Index tile_rows = tile_of(x.rows);
    const auto tiles = static_cast<std::size_t>(tiles_in(x.rows, tile_rows));
    if (saved.tiles.size() < tiles) saved.tiles.resize(tiles);
    const View x_kept = saved.x_kept.rows(x.rows, kept_in());
    saved.tokens = x.rows;
    saved.tile = tile_rows;
    WorkBuffers& work = work_.get();
    for_each_tile(x.rows, tile_rows, [&](std::size_t tile, Index first, Index count) {
      const View x_tile = x_kept.row_block(first, count);
      BackendType::gather_cols(x_tile, x.row_block(first, count), cols_);
      const View y_kept = work.y_kept.rows(count, kept_out());
      BackendType::fill(y_kept, 0.0f);  // the compact forward adds into it
      inner_.forward(y_kept, x_tile, saved.tiles[tile]);
      BackendType::scatter_add_cols(y.row_block(first, count), y_kept, rows_, 1.0f);
    });
  }

  /// Compact grads accumulate; dx[:, C] += compact input grad (unless dx is empty).
  /// x must be the forward's input: its kept columns come from `saved`.
  void backward(View dx, ConstView dy, ConstView x, const Saved& saved) {
    detail::check_backward("Partial", dx, dy, x, out_, in_);
    detail::check_saved_tokens("Partial", saved.tokens, x.rows);
    const ConstView x_kept = saved.x_kept.rows(x.rows);
    WorkBuffers& work = work_.get();
    for_each_tile(x.rows, saved.tile, [&](std::size_t tile, Index first, Index count) {
      const ConstView x_tile = x_kept.row_block(first, count);
      const View dy_kept = work.y_kept.rows(count, kept_out());
      BackendType::gather_cols(dy_kept, dy.row_block(first, count), rows_);
      if (dx.empty()) {
        inner_.backward(View{}, dy_kept, x_tile, saved.tiles[tile]);
        return;
      }
      const View dx_kept = work.dx_kept.rows(count, kept_in());
      BackendType::fill(dx_kept, 0.0f);  // the compact backward adds into it
      inner_.backward(dx_kept, dy_kept, x_tile, saved.tiles[tile]);
      BackendType::scatter_add_cols(dx.row_block(first, count), dx_kept, cols_, 1.0f);
    });
  }

  /// One call's work buffers: nothing in them outlives a forward or backward
  /// call, so adapters that run one at a time, as a model's sites do, may
  /// share one set (attach_adapters shares it). On a device backend, where a
  /// tile is every token, that saves two activation-sized matrices per site.
  struct WorkBuffers {
    detail::Scratch<BackendType> y_kept;   // (tile, |R|): compact output, then dy[:, R]
    detail::Scratch<BackendType> dx_kept;  // (tile, |C|)
  };
  void share_work_buffers(std::shared_ptr<WorkBuffers> buffers) { work_.share(std::move(buffers)); }
  /// The work buffers in use; null before they are shared or first needed.
  [[nodiscard]] const WorkBuffers* work_buffers() const { return work_.peek(); }

  /// Tokens per tile; 0 runs all tokens as one tile. Unset, it comes from
  /// the backend's memory space and, on the host, its thread count at each
  /// forward (see the top of this file).
  void set_tile_tokens(Index tokens) {
    check<ValueError>(tokens >= 0, "Partial: tile_tokens = ", tokens, " must be >= 0 (0: all tokens in one tile)");
    tile_tokens_ = tokens;
  }
  /// The tokens per tile a forward would use now (0: all tokens in one tile).
  [[nodiscard]] Index tile_tokens() const { return tile_tokens_.value_or(default_tile_tokens()); }
  /// Tiles one application over `tokens` rows would run in now.
  [[nodiscard]] Index tile_count(Index tokens) const { return tiles_in(tokens, tile_of(tokens)); }

  [[nodiscard]] ParameterList<typename BackendType::Space> parameters() { return inner_.parameters(); }
  void zero_grad() { inner_.zero_grad(); }
  [[nodiscard]] Index trainable_count() const { return inner_.trainable_count(); }

  /// Dense ΔW (out x in): the compact ΔW at (R, C), zeros elsewhere.
  [[nodiscard]] Matrix delta() const {
    Matrix out(out_, in_);
    add_padded(out.view(), 1.0f);
    return out;
  }
  void merge_into(View weight) const {
    require_shape(weight, out_, in_, "Partial::merge_into weight");
    add_padded(weight, 1.0f);
  }
  void unmerge_from(View weight) const {
    require_shape(weight, out_, in_, "Partial::unmerge_from weight");
    add_padded(weight, -1.0f);
  }

  void set_training(bool training) { inner_.set_training(training); }
  [[nodiscard]] Index in_features() const { return in_; }
  [[nodiscard]] Index out_features() const { return out_; }

  /// The compact adapter (|R| x |C|): its parameters are the trained ones.
  [[nodiscard]] A& inner() { return inner_; }
  [[nodiscard]] const A& inner() const { return inner_; }
  [[nodiscard]] const std::vector<std::int32_t>& kept_rows() const { return kept_rows_; }
  [[nodiscard]] const std::vector<std::int32_t>& kept_cols() const { return kept_cols_; }

 private:
  static std::vector<std::int32_t> checked(const std::vector<std::int32_t>& ids, Index bound, const char* what) {
    detail::check_kept("Partial", what, ids, bound);
    return ids;
  }
  static typename BackendType::Indices indices(const std::vector<std::int32_t>& ids) {
    return BackendType::make_indices(std::span<const std::int32_t>(ids));
  }
  [[nodiscard]] Index kept_out() const { return static_cast<Index>(kept_rows_.size()); }
  [[nodiscard]] Index kept_in() const { return static_cast<Index>(kept_cols_.size()); }

  /// Host: about kPartialTileBytes of the widest compact copy per thread;
  /// device: one tile.
  [[nodiscard]] Index default_tile_tokens() const {
    if constexpr (std::is_same_v<typename BackendType::Space, Host>) {
      const Index row_bytes = static_cast<Index>(sizeof(float)) * std::max(kept_in(), kept_out());
      const Index per_thread =
          std::clamp(detail::kPartialTileBytes / row_bytes, detail::kPartialMinTile, detail::kPartialMaxTile);
      return per_thread * std::max<Index>(BackendType::threads(), 1);
    } else {
      return 0;
    }
  }
  [[nodiscard]] Index tile_of(Index tokens) const {
    const Index tile = tile_tokens();
    return tile == 0 ? std::max<Index>(tokens, 1) : tile;
  }
  static Index tiles_in(Index tokens, Index tile) { return (tokens + tile - 1) / tile; }
  /// body(tile, first row, rows) for each tile of `tile` rows of `tokens`, in order.
  template <class F>
  static void for_each_tile(Index tokens, Index tile, F&& body) {
    std::size_t index = 0;
    for (Index first = 0; first < tokens; first += tile) body(index++, first, std::min(tile, tokens - first));
  }

  /// target (out, in)[R, C] += sign · compact ΔW (|R|, |C|)
  void add_padded(View target, float sign) const {
    const Matrix compact = inner_.delta();
    Matrix kept_rows_full(kept_out(), in_);  // (|R|, in)
    BackendType::scatter_add_cols(kept_rows_full.view(), compact.view(), cols_, 1.0f);
    BackendType::scatter_add_rows(target, kept_rows_full.view(), rows_, sign);
  }

  Index out_ = 0;
  Index in_ = 0;
  std::vector<std::int32_t> kept_rows_;
  std::vector<std::int32_t> kept_cols_;
  typename BackendType::Indices rows_;
  typename BackendType::Indices cols_;
  A inner_;
  std::optional<Index> tile_tokens_;  // unset: default_tile_tokens()
  detail::SharedBuffer<WorkBuffers> work_;
};

/// Partial-LoRA (the method) and Partial-AdaLoRA.
template <Backend B>
using PartialLora = Partial<Lora<B>>;
template <Backend B>
using PartialAdaLora = Partial<AdaLora<B>>;

}  // namespace plora
