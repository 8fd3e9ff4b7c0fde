#pragma once
// safetensors (https://github.com/huggingface/safetensors, REFERENCE.md §5):
// reading a memory-mapped file that is validated completely on open, and
// writing files the Python library loads, byte for byte in its layout.
//
// File layout: u64 little-endian header length N, N bytes of JSON
// {"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets": [b, e)}},
// then the data buffer; offsets are relative to the buffer, tensors are
// C-contiguous little-endian and tile the buffer without holes or overlaps.
#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "plora/core/digest.hpp"
#include "plora/core/error.hpp"
#include "plora/core/finite.hpp"
#include "plora/core/host_matrix.hpp"
#include "plora/io/atomic_file.hpp"
#include "plora/io/detail/bytes.hpp"
#include "plora/io/detail/half.hpp"
#include "plora/io/detail/mapped_file.hpp"

namespace plora::io {

static_assert(std::endian::native == std::endian::little, "plora's safetensors reader assumes a little-endian host");

/// The dtype and shape of one stored tensor.
struct TensorInfo {
  std::string dtype;          ///< safetensors name: "F32", "BF16", "I64", ...
  std::vector<Index> shape;   ///< empty for a 0-d (scalar) tensor
  [[nodiscard]] Index numel() const {
    Index n = 1;
    for (const Index d : shape) n *= d;
    return n;
  }
};

namespace detail {

/// The dtypes safetensors defines for whole bytes, in the order of its Rust
/// `Dtype` enum, which its writer uses to sort tensors (largest first).
enum class Dtype { BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64 };

struct DtypeSpec {
  Dtype dtype;
  std::string_view name;
  std::size_t size;
};

inline constexpr std::array<DtypeSpec, 15> kDtypes = {{{Dtype::BOOL, "BOOL", 1},
                                                       {Dtype::U8, "U8", 1},
                                                       {Dtype::I8, "I8", 1},
                                                       {Dtype::F8_E5M2, "F8_E5M2", 1},
                                                       {Dtype::F8_E4M3, "F8_E4M3", 1},
                                                       {Dtype::I16, "I16", 2},
                                                       {Dtype::U16, "U16", 2},
                                                       {Dtype::F16, "F16", 2},
                                                       {Dtype::BF16, "BF16", 2},
                                                       {Dtype::I32, "I32", 4},
                                                       {Dtype::U32, "U32", 4},
                                                       {Dtype::F32, "F32", 4},
                                                       {Dtype::F64, "F64", 8},
                                                       {Dtype::I64, "I64", 8},
                                                       {Dtype::U64, "U64", 8}}};

inline std::optional<DtypeSpec> find_dtype(std::string_view name) {
  for (const DtypeSpec& spec : kDtypes)
    if (spec.name == name) return spec;
  return std::nullopt;
}
inline const DtypeSpec& dtype_spec(Dtype dtype) { return kDtypes[static_cast<std::size_t>(dtype)]; }

/// "[2, 3, 4]" (or "[] (scalar)") for error messages.
inline std::string shape_string(std::span<const Index> shape) {
  if (shape.empty()) return "[] (scalar)";
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

}  // namespace detail

/// A validated, memory-mapped safetensors file. Tensors are converted to fp32
/// (or int64) only when loaded. Move-only; loaded matrices own their data, and
/// a loaded tensor's file pages are released (MappedFile::release).
class SafetensorsFile {
 public:
  /// Maps and fully validates `path`. Throws IoError naming the file (and the
  /// tensor, where one is at fault) on any malformation.
  static SafetensorsFile open(const std::filesystem::path& path) { return SafetensorsFile(path); }

  [[nodiscard]] const std::filesystem::path& path() const { return path_; }
  /// Tensor names, sorted.
  [[nodiscard]] std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(entries_.size());
    for (const auto& [name, entry] : entries_) out.push_back(name);
    return out;
  }
  [[nodiscard]] bool contains(std::string_view name) const { return entries_.find(name) != entries_.end(); }
  [[nodiscard]] std::size_t size() const { return entries_.size(); }
  [[nodiscard]] const TensorInfo& info(std::string_view name) const { return entry(name).info; }
  /// The `__metadata__` map (empty when the file has none).
  [[nodiscard]] const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// A Digest of every tensor's name, dtype, shape and stored bytes, in name
  /// order: files that hold the same tensors digest alike, whatever their
  /// header's order or metadata.
  [[nodiscard]] std::string content_digest() const {
    Digest digest;
    for (const auto& [name, e] : entries_) {
      digest.add(name).add(e.info.dtype).add(e.info.shape.size());
      for (const Index extent : e.info.shape) digest.add(extent);
      digest.add(bytes_of(e));
    }
    return digest.hex();
  }

  /// An F32 / F16 / BF16 / F64 tensor as fp32, shape [d0, ..., dk] viewed as
  /// (d0 * ... * d(k-1)) x dk; 1-D tensors are 1 x n, 0-d tensors 1 x 1.
  [[nodiscard]] HostMatrix load(std::string_view name) const {
    const Entry& e = entry(name);
    const auto& shape = e.info.shape;
    if (shape.empty()) return load_as(e, name, 1, 1);
    Index rows = 1;
    for (std::size_t i = 0; i + 1 < shape.size(); ++i) rows *= shape[i];
    return load_as(e, name, rows, shape.back());
  }

  /// Like load(name), as a (rows x cols) matrix: the shape must split into
  /// leading dims whose product is `rows` and trailing dims whose product is
  /// `cols` (a reshape without transposition, e.g. a conv weight
  /// [768, 3, 16, 16] as 768 x 768). Otherwise throws ShapeError naming the
  /// file, the tensor, and the expected and found shapes.
  [[nodiscard]] HostMatrix load(std::string_view name, Index rows, Index cols) const {
    const Entry& e = entry(name);
    const auto& shape = e.info.shape;
    for (std::size_t split = 0; split <= shape.size(); ++split) {
      Index lead = 1, trail = 1;
      for (std::size_t i = 0; i < shape.size(); ++i) (i < split ? lead : trail) *= shape[i];
      if (lead == rows && trail == cols) return load_as(e, name, rows, cols);
    }
    throw ShapeError(plora::detail::concat(where(name), "expected shape ", rows, " x ", cols, ", found ",
                                           detail::shape_string(shape), " (maybe the wrong base model?)"));
  }

  /// load(name, rows, cols) / load(name) of a value that must be finite (a
  /// model weight, a training checkpoint's parameter or optimizer buffer): a
  /// NaN or Inf (a diverged or corrupted file) throws NumericError naming the
  /// file, the tensor and the first such entry.
  [[nodiscard]] HostMatrix load_finite(std::string_view name, Index rows, Index cols) const {
    return require_finite(load(name, rows, cols), name);
  }
  [[nodiscard]] HostMatrix load_finite(std::string_view name) const { return require_finite(load(name), name); }

  /// An integer or boolean tensor (I64, I32, I16, I8, U32, U16, U8, BOOL),
  /// flattened in C order.
  [[nodiscard]] std::vector<std::int64_t> load_ints(std::string_view name) const {
    using detail::Dtype;
    using detail::read_unaligned;
    const Entry& e = entry(name);
    const std::byte* p = bytes_of(e).data();
    const auto n = static_cast<std::size_t>(e.info.numel());
    std::vector<std::int64_t> out(n);
    for (std::size_t i = 0; i < n; ++i) {
      switch (e.dtype) {
        case Dtype::I64: out[i] = read_unaligned<std::int64_t>(p + 8 * i); break;
        case Dtype::I32: out[i] = read_unaligned<std::int32_t>(p + 4 * i); break;
        case Dtype::U32: out[i] = read_unaligned<std::uint32_t>(p + 4 * i); break;
        case Dtype::I16: out[i] = read_unaligned<std::int16_t>(p + 2 * i); break;
        case Dtype::U16: out[i] = read_unaligned<std::uint16_t>(p + 2 * i); break;
        case Dtype::I8: out[i] = read_unaligned<std::int8_t>(p + i); break;
        case Dtype::U8: out[i] = read_unaligned<std::uint8_t>(p + i); break;
        case Dtype::BOOL: out[i] = read_unaligned<std::uint8_t>(p + i) != 0; break;
        default:
          throw IoError(plora::detail::concat(where(name), "dtype ", e.info.dtype,
                                              " is not an integer type; use load() for floating-point tensors"));
      }
    }
    file_.release(bytes_of(e));
    return out;
  }

 private:
  struct Entry {
    TensorInfo info;
    detail::Dtype dtype;
    std::size_t begin;  // byte offsets within the data buffer
    std::size_t end;
  };
  /// The tensor's stored bytes within the mapped file.
  [[nodiscard]] std::span<const std::byte> bytes_of(const Entry& e) const {
    return buffer_.subspan(e.begin, e.end - e.begin);
  }

  explicit SafetensorsFile(const std::filesystem::path& path) : path_(path), file_(path) { validate(); }

  [[nodiscard]] HostMatrix require_finite(HostMatrix out, std::string_view name) const {
    const std::size_t bad = first_non_finite(out.values());
    if (bad < out.values().size())
      throw NumericError(plora::detail::concat(where(name), "entry ", bad, " (row ", Index(bad) / out.cols(),
                                               ") is ", out.values()[bad], "; it must be finite"));
    return out;
  }
  [[nodiscard]] std::string where(std::string_view name) const {
    return plora::detail::concat("safetensors file '", path_.string(), "': tensor '", name, "': ");
  }
  [[nodiscard]] std::string where() const {
    return plora::detail::concat("safetensors file '", path_.string(), "': ");
  }

  [[nodiscard]] const Entry& entry(std::string_view name) const {
    const auto it = entries_.find(name);
    if (it != entries_.end()) return it->second;
    // A checkpoint saved with or without a "vit." / "base_model.model." prefix is
    // the commonest cause; point at a name that differs only by a prefix.
    std::string hint;
    for (const auto& [stored, e] : entries_) {
      const bool suffix_of_stored = stored.size() > name.size() && stored.ends_with(name) &&
                                    stored[stored.size() - name.size() - 1] == '.';
      const bool stored_is_suffix = name.size() > stored.size() && name.ends_with(stored) &&
                                    name[name.size() - stored.size() - 1] == '.';
      if (suffix_of_stored || stored_is_suffix) {
        hint = " (did you mean '" + stored + "'?)";
        break;
      }
    }
    throw IoError(plora::detail::concat(where(name), "no such tensor (the file has ", entries_.size(), " tensors)", hint));
  }

  [[nodiscard]] HostMatrix load_as(const Entry& e, std::string_view name, Index rows, Index cols) const {
    using detail::Dtype;
    using detail::read_unaligned;
    HostMatrix out(rows, cols);
    const std::byte* p = bytes_of(e).data();
    const auto n = static_cast<std::size_t>(out.size());
    float* dst = out.data();
    switch (e.dtype) {
      case Dtype::F32:
        if (n > 0) std::memcpy(dst, p, n * sizeof(float));
        break;
      case Dtype::F16:
        for (std::size_t i = 0; i < n; ++i) dst[i] = detail::half_to_float(read_unaligned<std::uint16_t>(p + 2 * i));
        break;
      case Dtype::BF16:
        for (std::size_t i = 0; i < n; ++i) dst[i] = detail::bf16_to_float(read_unaligned<std::uint16_t>(p + 2 * i));
        break;
      case Dtype::F64:
        for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(read_unaligned<double>(p + 8 * i));
        break;
      default:
        throw IoError(plora::detail::concat(where(name), "dtype ", e.info.dtype,
                                            " cannot be loaded as floating point (F32, F16, BF16, F64); use load_ints()"
                                            " for integer tensors"));
    }
    file_.release(bytes_of(e));
    return out;
  }

  void validate() {
    using nlohmann::json;
    const std::span<const std::byte> bytes = file_.bytes();
    check<IoError>(bytes.size() >= 8, where(), "file of ", bytes.size(), " bytes is too short for the 8-byte header length");
    const auto header_size = detail::read_unaligned<std::uint64_t>(bytes.data());
    constexpr std::uint64_t kMaxHeader = 100'000'000;  // the reference implementation's limit
    check<IoError>(header_size <= kMaxHeader, where(), "header length ", header_size, " exceeds the 100 MB limit");
    check<IoError>(header_size <= bytes.size() - 8, where(), "header length ", header_size, " runs past the end of the ",
                   bytes.size(), "-byte file (truncated?)");
    const char* header_begin = reinterpret_cast<const char*>(bytes.data() + 8);
    const char* header_end = header_begin + header_size;
    check<IoError>(header_size > 0 && *header_begin == '{', where(), "header does not start with '{'");
    buffer_ = bytes.subspan(8 + header_size);

    // nlohmann keeps the last of repeated keys; the callback sees every one.
    std::set<std::string, std::less<>> seen;
    std::string duplicate;
    json header;
    try {
      header = json::parse(header_begin, header_end, [&](int depth, json::parse_event_t event, json& parsed) {
        if (event == json::parse_event_t::key && depth == 1 && !seen.insert(parsed.get<std::string>()).second &&
            duplicate.empty())
          duplicate = parsed.get<std::string>();
        return true;
      });
    } catch (const json::exception& error) {
      throw IoError(plora::detail::concat(where(), "header is not valid JSON: ", error.what()));
    }
    check<IoError>(header.is_object(), where(), "header is not a JSON object");
    check<IoError>(duplicate.empty(), where(duplicate), "name appears more than once in the header");

    std::vector<std::pair<const std::string*, const Entry*>> by_offset;
    for (const auto& [name, value] : header.items()) {
      if (name == "__metadata__") {
        read_metadata(value);
        continue;
      }
      const auto inserted = entries_.emplace(name, parse_entry(name, value)).first;
      by_offset.emplace_back(&inserted->first, &inserted->second);
    }
    // Offsets must tile [0, buffer size) exactly: sorted by begin, each tensor
    // starts where the previous one ended.
    std::ranges::sort(by_offset, [](const auto& a, const auto& b) {
      return a.second->begin != b.second->begin ? a.second->begin < b.second->begin : a.second->end < b.second->end;
    });
    std::size_t expected_begin = 0;
    for (const auto& [name, e] : by_offset) {
      if (e->begin != expected_begin) {
        throw IoError(plora::detail::concat(where(*name), "data_offsets [", e->begin, ", ", e->end, ") ",
                                            e->begin < expected_begin ? "overlap" : "leave a hole after",
                                            " the previous tensor, which ends at ", expected_begin));
      }
      expected_begin = e->end;
    }
    check<IoError>(expected_begin == buffer_.size(), where(), "tensors cover ", expected_begin,
                   " bytes but the data buffer holds ", buffer_.size(), " (8 + header ", header_size, " + data != file size ",
                   bytes.size(), ")");
  }

  void read_metadata(const nlohmann::json& value) {
    if (value.is_null()) return;
    check<IoError>(value.is_object(), where(), "__metadata__ is not a JSON object");
    for (const auto& [key, item] : value.items()) {
      check<IoError>(item.is_string(), where(), "__metadata__ value of '", key, "' is not a string");
      metadata_.emplace(key, item.get<std::string>());
    }
  }

  [[nodiscard]] Entry parse_entry(const std::string& name, const nlohmann::json& value) const {
    check<IoError>(value.is_object(), where(name), "entry is not a JSON object");
    const auto field = [&](const char* key) -> const nlohmann::json& {
      const auto it = value.find(key);
      check<IoError>(it != value.end(), where(name), "entry has no \"", key, "\"");
      return *it;
    };
    const nlohmann::json& dtype = field("dtype");
    check<IoError>(dtype.is_string(), where(name), "dtype is not a string");
    const auto spec = detail::find_dtype(dtype.get<std::string>());
    check<IoError>(spec.has_value(), where(name), "unknown dtype \"", dtype.get<std::string>(), "\"");

    const nlohmann::json& shape = field("shape");
    check<IoError>(shape.is_array(), where(name), "shape is not an array");
    Entry e{{std::string(spec->name), {}}, spec->dtype, 0, 0};
    std::uint64_t nonzero_product = 1;
    bool has_zero = false;
    for (const auto& d : shape) {
      check<IoError>(d.is_number_unsigned(), where(name), "shape ", shape.dump(), " has an entry that is not a non-negative integer");
      const auto dim = d.get<std::uint64_t>();
      has_zero = has_zero || dim == 0;
      // Bounding the product of the non-zero dims keeps every partial product
      // (matrix rows / cols) and the byte count representable.
      check<IoError>(dim == 0 || !__builtin_mul_overflow(nonzero_product, dim, &nonzero_product), where(name), "shape ",
                     shape.dump(), " is too large");
      check<IoError>(nonzero_product <= std::uint64_t{1} << 60, where(name), "shape ", shape.dump(), " is too large");
      e.info.shape.push_back(static_cast<Index>(dim));
    }
    const std::uint64_t numel = has_zero ? 0 : nonzero_product;

    const nlohmann::json& offsets = field("data_offsets");
    check<IoError>(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
                       offsets[1].is_number_unsigned(),
                   where(name), "data_offsets ", offsets.dump(), " is not a pair of non-negative integers");
    const auto begin = offsets[0].get<std::uint64_t>(), end = offsets[1].get<std::uint64_t>();
    check<IoError>(begin <= end && end <= buffer_.size(), where(name), "data_offsets [", begin, ", ", end,
                   ") lie outside the ", buffer_.size(), "-byte data buffer");
    check<IoError>(numel * spec->size == end - begin, where(name), "shape ", detail::shape_string(e.info.shape), " of ",
                   spec->name, " needs ", numel * spec->size, " bytes but data_offsets [", begin, ", ", end, ") span ",
                   end - begin);
    e.begin = static_cast<std::size_t>(begin);
    e.end = static_cast<std::size_t>(end);
    return e;
  }

  std::filesystem::path path_;
  detail::MappedFile file_;
  std::span<const std::byte> buffer_;
  std::map<std::string, Entry, std::less<>> entries_;
  std::map<std::string, std::string> metadata_;
};

/// Collects tensors (copied) and metadata, then writes a safetensors file in
/// the reference layout: header padded with spaces to a multiple of 8, tensors
/// ordered by decreasing dtype (I64 before F32) then by name, written atomically.
class SafetensorsWriter {
 public:
  /// An F32 tensor of `shape` (C order) from `values`.
  void add(std::string name, std::vector<Index> shape, std::span<const float> values) {
    push(std::move(name), detail::Dtype::F32, std::move(shape), std::as_bytes(values), values.size());
  }
  /// A (rows x cols) F32 tensor.
  void add(std::string name, const HostMatrix& matrix) {
    add(std::move(name), {matrix.rows(), matrix.cols()}, std::span<const float>(matrix.values()));
  }
  /// An I64 tensor of `shape` (C order) from `values`.
  void add_ints(std::string name, std::vector<Index> shape, std::span<const std::int64_t> values) {
    push(std::move(name), detail::Dtype::I64, std::move(shape), std::as_bytes(values), values.size());
  }
  void set_metadata(std::string key, std::string value) { metadata_[std::move(key)] = std::move(value); }

  [[nodiscard]] std::size_t size() const { return tensors_.size(); }

  /// Writes the file atomically (see write_file_atomically); throws IoError
  /// naming `path` on failure, leaving any previous file in place.
  void write(const std::filesystem::path& path) const {
    std::vector<const Pending*> order;
    for (const Pending& t : tensors_) order.push_back(&t);
    std::ranges::sort(order, [](const Pending* a, const Pending* b) {
      return a->dtype != b->dtype ? a->dtype > b->dtype : a->name < b->name;
    });
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::size_t offset = 0;
    for (const Pending* t : order) {
      header[t->name] = {{"dtype", std::string(detail::dtype_spec(t->dtype).name)},
                         {"shape", t->shape},
                         {"data_offsets", {offset, offset + t->bytes.size()}}};
      offset += t->bytes.size();
    }
    std::string text;
    try {
      text = header.dump();
    } catch (const nlohmann::json::exception& error) {
      throw IoError(plora::detail::concat("safetensors file '", path.string(), "': cannot encode header: ", error.what()));
    }
    text.append((8 - text.size() % 8) % 8, ' ');
    const std::uint64_t length = text.size();
    std::array<char, 8> length_bytes{};
    std::memcpy(length_bytes.data(), &length, 8);

    std::vector<std::string_view> pieces{std::string_view(length_bytes.data(), 8), text};
    for (const Pending* t : order) pieces.emplace_back(t->bytes);
    write_file_atomically(path, pieces);
  }

 private:
  struct Pending {
    std::string name;
    detail::Dtype dtype;
    std::vector<Index> shape;
    std::string bytes;
  };

  void push(std::string name, detail::Dtype dtype, std::vector<Index> shape, std::span<const std::byte> bytes,
            std::size_t count) {
    check<ValueError>(!name.empty() && name != "__metadata__", "SafetensorsWriter: invalid tensor name '", name, "'");
    check<ValueError>(std::ranges::none_of(tensors_, [&](const Pending& t) { return t.name == name; }),
                      "SafetensorsWriter: tensor '", name, "' added twice");
    Index numel = 1;
    for (const Index d : shape) {
      check<ShapeError>(d >= 0, "SafetensorsWriter: tensor '", name, "' has negative shape ", detail::shape_string(shape));
      numel *= d;
    }
    check<ShapeError>(numel == static_cast<Index>(count), "SafetensorsWriter: tensor '", name, "' of shape ",
                      detail::shape_string(shape), " needs ", numel, " values, got ", count);
    tensors_.push_back({std::move(name), dtype, std::move(shape),
                        std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size())});
  }

  std::vector<Pending> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace plora::io
