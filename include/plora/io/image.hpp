#pragma once
// Images: decoding (PNG, JPEG, BMP via stb_image), resizing, and the
// ViTImageProcessor pipeline resize -> rescale -> normalise -> channels first.
//
// stb_image: define PLORA_STB_IMPLEMENTATION in exactly one .cpp file of your
// program before including this header (or io.hpp / datasets.hpp); see
// detail/stb_image.hpp. A link error naming stbi_load_from_memory means no
// translation unit defines it.
//
// Resizing convention: Pillow's (PIL) resampling, which is what transformers'
// image processors call for uint8 images. BILINEAR is PIL's triangle filter on
// pixel centres (x_in = (x_out + 0.5) * in / out - 0.5) whose support widens
// by in/out when downsizing (antialiasing; it is NOT torch's interpolate, which
// takes only the two nearest pixels), computed exactly like PIL's 8-bit path:
// weights normalised per output pixel, rounded to 22-bit fixed point, a
// horizontal pass rounded to uint8, then a vertical pass (Pillow <= 12's
// order; Pillow 13 sometimes runs the vertical pass first when the height
// shrinks more than the width, which moves some pixels by one level). When upsizing it
// equals torch's interpolate(bilinear, align_corners=False) up to that
// rounding. NEAREST takes pixel floor((x_out + 0.5) * in / out). JPEG decoding
// by stb_image may differ from libjpeg (PIL) by a few levels; PNG and BMP are
// exact.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "plora/core/error.hpp"
#include "plora/core/view.hpp"
#include "plora/io/detail/bytes.hpp"
#include "plora/io/detail/input_file.hpp"
#include "plora/io/detail/stb_image.hpp"
#include "plora/io/hf_config.hpp"

namespace plora::io {

/// An 8-bit image stored channels first: value (c, y, x) at (c * height + y) * width + x.
struct Image8 {
  Index channels = 0;
  Index height = 0;
  Index width = 0;
  std::vector<std::uint8_t> values;

  Image8() = default;
  Image8(Index c, Index h, Index w) : channels(c), height(h), width(w), values(static_cast<std::size_t>(c * h * w)) {}
  std::uint8_t& operator()(Index c, Index y, Index x) { return values[static_cast<std::size_t>((c * height + y) * width + x)]; }
  std::uint8_t operator()(Index c, Index y, Index x) const {
    return values[static_cast<std::size_t>((c * height + y) * width + x)];
  }
};

/// PIL's DecompressionBombError limit (2 x Image.MAX_IMAGE_PIXELS): a larger
/// image is refused before decoding, as PIL refuses it.
inline constexpr std::int64_t kMaxImagePixels = 2 * 89'478'485;

namespace detail {
/// The file size a BMP's pixel rows need (data offset + height padded rows),
/// or 0 when `bytes` is not a BMP with a readable header. stb_image pads a BMP
/// that ends early with zero pixels; PIL refuses it as truncated, and so do we.
/// (stb reads only uncompressed and bit-field BMPs, whose rows this size fits.)
inline std::uint64_t bmp_bytes_needed(std::span<const std::byte> bytes, int width, int height) {
  constexpr std::size_t kFileHeader = 14;
  if (bytes.size() < kFileHeader + 16 || bytes[0] != std::byte{'B'} || bytes[1] != std::byte{'M'}) return 0;
  const auto offset = read_unaligned<std::uint32_t>(bytes.data() + 10);
  const auto info_size = read_unaligned<std::uint32_t>(bytes.data() + kFileHeader);
  // BITMAPCOREHEADER (12 bytes) keeps bits per pixel at 24, the larger headers at 28.
  const auto bits = read_unaligned<std::uint16_t>(bytes.data() + (info_size == 12 ? 24 : 28));
  const std::uint64_t row_bytes = (static_cast<std::uint64_t>(width) * bits + 31) / 32 * 4;
  return offset + row_bytes * static_cast<std::uint64_t>(height);
}

/// Whether a JPEG's DHT segments declare more than 256 codes for one Huffman
/// table: a corrupt file, past whose tables stb_image 2.27 (Debian 12's)
/// writes. The walk follows the decoder's: marker segments by their lengths,
/// entropy-coded data byte by byte up to the next marker, a table's counts read
/// even where the segment's length is too short for them (as stb reads them),
/// bytes past the end read as 0 (as stb reads them).
inline bool jpeg_has_oversized_huffman_table(std::span<const std::byte> bytes) {
  const auto byte = [&](std::size_t i) { return i < bytes.size() ? std::to_integer<std::size_t>(bytes[i]) : 0; };
  for (std::size_t i = 2; i + 1 < bytes.size();) {  // past SOI
    if (byte(i) != 0xFF || byte(i + 1) == 0xFF) {  // entropy-coded data, or a fill byte
      ++i;
      continue;
    }
    const std::size_t marker = byte(i + 1);
    i += 2;
    // A stuffed 0xFF, RSTn, SOI and TEM carry no length; EOI ends the image.
    if (marker == 0x00 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) continue;
    if (marker == 0xD9) break;
    const std::size_t end = i + (byte(i) << 8 | byte(i + 1));  // the length counts its own two bytes
    if (marker == 0xC4) {
      for (std::size_t table = i + 2; table < end;) {
        std::size_t codes = 0;
        for (std::size_t k = 1; k <= 16; ++k) codes += byte(table + k);
        if (codes > 256) return true;
        table += 17 + codes;
      }
    }
    i = std::max(end, i);
  }
  return false;
}

/// stb_image's failure reason, printable: for an unknown PNG chunk it starts
/// with the chunk's four type bytes, whatever they are.
inline std::string stb_reason() {
  std::string reason = stbi_failure_reason() ? stbi_failure_reason() : "unknown error";
  for (char& c : reason)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) c = '?';
  return reason;
}

/// "PNG", "JPEG" or "BMP" by the file's signature; empty for anything else.
inline std::string_view image_format(std::span<const std::byte> bytes) {
  const auto starts_with = [&](std::initializer_list<unsigned char> magic) {
    return bytes.size() >= magic.size() &&
           std::equal(magic.begin(), magic.end(), bytes.begin(), [](unsigned char m, std::byte b) { return std::byte{m} == b; });
  };
  if (starts_with({0x89, 'P', 'N', 'G'})) return "PNG";
  if (starts_with({0xFF, 0xD8, 0xFF})) return "JPEG";
  if (starts_with({'B', 'M'})) return "BMP";
  return {};
}
}  // namespace detail

/// Decodes PNG / JPEG / BMP bytes. `channels` 0 keeps the stored channels;
/// 1 or 3 converts (stb: grey -> RGB replicates, RGBA -> RGB drops alpha like
/// PIL's convert("RGB"), RGB -> grey uses stb's integer luma weights).
/// `source` names the file in errors. Like PIL, refuses files of another
/// format, corrupt or truncated files, and images over kMaxImagePixels.
inline Image8 decode_image(std::span<const std::byte> bytes, int channels, const std::string& source) {
  check<ValueError>(channels >= 0 && channels <= 4, "decode_image('", source, "'): channels must be 0..4, got ", channels);
  check<IoError>(!bytes.empty() && bytes.size() <= 0x7fffffffu, "cannot decode image '", source, "': ",
                 bytes.empty() ? "empty file" : "file too large");
  const std::string_view format = detail::image_format(bytes);
  check<IoError>(!format.empty(), "cannot decode image '", source, "': not a PNG, JPEG or BMP file");
  check<IoError>(format != "JPEG" || !detail::jpeg_has_oversized_huffman_table(bytes),
                 "cannot decode image '", source, "': corrupt JPEG (a Huffman table declares more than 256 codes)");
  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  const int size = static_cast<int>(bytes.size());
  int width = 0, height = 0, stored = 0;
  // stbi_info tries every format it knows, so its failure reason is the last format's ("no SOI" for a
  // PNG): not worth quoting.
  check<IoError>(stbi_info_from_memory(data, size, &width, &height, &stored) != 0, "cannot decode image '", source,
                 "': corrupt ", format, " header (no size can be read from it)");
  const std::int64_t pixels = std::int64_t{width} * height;
  check<IoError>(pixels <= kMaxImagePixels, "cannot decode image '", source, "': ", width, " x ", height, " = ", pixels,
                 " pixels exceeds the limit of ", kMaxImagePixels, " (PIL's decompression-bomb limit)");
  const std::uint64_t needed = detail::bmp_bytes_needed(bytes, width, height);
  check<IoError>(needed <= bytes.size(), "cannot decode image '", source, "': truncated BMP (its ", width, " x ",
                 height, " pixel rows need ", needed, " bytes, the file has ", bytes.size(), ")");
  stbi_uc* decoded = stbi_load_from_memory(data, size, &width, &height, &stored, channels);
  check<IoError>(decoded != nullptr, "cannot decode image '", source, "': corrupt or truncated ", format, " (",
                 detail::stb_reason(), ")");
  const int c = channels == 0 ? stored : channels;
  Image8 image(c, height, width);
  // stb returns interleaved (y, x, c); store planes (c, y, x).
  for (Index y = 0; y < height; ++y)
    for (Index x = 0; x < width; ++x)
      for (Index k = 0; k < c; ++k) image(k, y, x) = decoded[(y * width + x) * c + k];
  stbi_image_free(decoded);
  return image;
}

/// Reads and decodes an image file; IoError naming the file on failure.
inline Image8 load_image(const std::filesystem::path& path, int channels = 3) {
  const std::string bytes = detail::read_file(path, "image");
  return decode_image(std::as_bytes(std::span(bytes)), channels, path.string());
}

namespace detail {

inline constexpr int kPilPrecisionBits = 32 - 8 - 2;  // PIL's Resample.c, 8-bit images

/// PIL's per-output-pixel window [first, first + count) and fixed-point weights
/// (precompute_coeffs + normalize_coeffs_8bpc with the bilinear filter).
struct ResampleWeights {
  Index taps = 0;  // row stride of `weights`
  std::vector<Index> first, count;
  std::vector<std::int64_t> weights;
};

inline ResampleWeights pil_bilinear_weights(Index in_size, Index out_size) {
  const double scale = double(in_size) / double(out_size);
  const double filter_scale = std::max(scale, 1.0);
  const double support = 1.0 * filter_scale;  // the triangle filter's support is 1
  const double inverse_scale = 1.0 / filter_scale;
  ResampleWeights w;
  w.taps = static_cast<Index>(std::ceil(support)) * 2 + 1;
  w.first.resize(static_cast<std::size_t>(out_size));
  w.count.resize(static_cast<std::size_t>(out_size));
  w.weights.assign(static_cast<std::size_t>(out_size * w.taps), 0);
  std::vector<double> k(static_cast<std::size_t>(w.taps));
  for (Index xx = 0; xx < out_size; ++xx) {
    const double center = (double(xx) + 0.5) * scale;
    // C casts truncate toward zero; the clamps make that equal to PIL's.
    const Index lo = std::max<Index>(static_cast<Index>(center - support + 0.5), 0);
    const Index hi = std::min<Index>(static_cast<Index>(center + support + 0.5), in_size);
    const Index n = hi - lo;
    double total = 0.0;
    for (Index x = 0; x < n; ++x) {
      const double t = std::abs((double(x + lo) - center + 0.5) * inverse_scale);  // PIL multiplies, bit for bit
      k[static_cast<std::size_t>(x)] = t < 1.0 ? 1.0 - t : 0.0;
      total += k[static_cast<std::size_t>(x)];
    }
    w.first[static_cast<std::size_t>(xx)] = lo;
    w.count[static_cast<std::size_t>(xx)] = n;
    for (Index x = 0; x < n; ++x) {
      const double normalised = total != 0.0 ? k[static_cast<std::size_t>(x)] / total : k[static_cast<std::size_t>(x)];
      w.weights[static_cast<std::size_t>(xx * w.taps + x)] =
          static_cast<std::int64_t>(normalised * double(1 << kPilPrecisionBits) + (normalised < 0 ? -0.5 : 0.5));
    }
  }
  return w;
}

/// One 8-bit pass along x (stride 1) or y (stride width) of every plane.
inline Image8 pil_resample_pass(const Image8& in, Index out_size, bool along_x) {
  const ResampleWeights w = pil_bilinear_weights(along_x ? in.width : in.height, out_size);
  Image8 out(in.channels, along_x ? in.height : out_size, along_x ? out_size : in.width);
  for (Index c = 0; c < out.channels; ++c)
    for (Index y = 0; y < out.height; ++y)
      for (Index x = 0; x < out.width; ++x) {
        const Index o = along_x ? x : y;
        std::int64_t acc = std::int64_t{1} << (kPilPrecisionBits - 1);  // rounds the final shift
        for (Index t = 0; t < w.count[static_cast<std::size_t>(o)]; ++t) {
          const Index src = w.first[static_cast<std::size_t>(o)] + t;
          acc += std::int64_t{along_x ? in(c, y, src) : in(c, src, x)} * w.weights[static_cast<std::size_t>(o * w.taps + t)];
        }
        out(c, y, x) = static_cast<std::uint8_t>(std::clamp<std::int64_t>(acc >> kPilPrecisionBits, 0, 255));
      }
  return out;
}

}  // namespace detail

/// PIL Image.resize(..., BILINEAR) of an 8-bit image (see the top of this file).
inline Image8 resize_bilinear(const Image8& image, Index height, Index width) {
  check<ValueError>(height > 0 && width > 0 && image.height > 0 && image.width > 0, "resize_bilinear: cannot resize ",
                    image.height, " x ", image.width, " to ", height, " x ", width);
  Image8 out = image.width != width ? detail::pil_resample_pass(image, width, true) : image;
  return out.height != height ? detail::pil_resample_pass(out, height, false) : out;
}

/// PIL Image.resize(..., NEAREST): source pixel floor((i + 0.5) * in / out),
/// accumulated in double as PIL's affine scaling does.
inline Image8 resize_nearest(const Image8& image, Index height, Index width) {
  check<ValueError>(height > 0 && width > 0 && image.height > 0 && image.width > 0, "resize_nearest: cannot resize ",
                    image.height, " x ", image.width, " to ", height, " x ", width);
  const auto source_indices = [](Index in_size, Index out_size) {
    std::vector<Index> index(static_cast<std::size_t>(out_size));
    const double step = double(in_size) / double(out_size);
    double position = step * 0.5;
    for (auto& i : index) {
      i = std::min(static_cast<Index>(position), in_size - 1);
      position += step;
    }
    return index;
  };
  const auto ys = source_indices(image.height, height), xs = source_indices(image.width, width);
  Image8 out(image.channels, height, width);
  for (Index c = 0; c < image.channels; ++c)
    for (Index y = 0; y < height; ++y)
      for (Index x = 0; x < width; ++x)
        out(c, y, x) = image(c, ys[static_cast<std::size_t>(y)], xs[static_cast<std::size_t>(x)]);
  return out;
}

/// The (height, width) `config` resizes an (height x width) image to; the
/// image's own size when do_resize is off. shortest_edge keeps the aspect
/// ratio like transformers' get_resize_output_image_size (long side truncated).
/// ValueError naming `source` when the long side of an elongated image would
/// exceed kMaxImageSide.
inline std::pair<Index, Index> output_size(const PreprocessorConfig& config, Index height, Index width,
                                           const std::string& source) {
  if (!config.do_resize) return {height, width};
  if (config.shortest_edge <= 0) return {config.height, config.width};
  const double s = static_cast<double>(config.shortest_edge);
  const double long_side = s * static_cast<double>(std::max(height, width)) / static_cast<double>(std::min(height, width));
  check<ValueError>(long_side <= static_cast<double>(kMaxImageSide), "preprocessing '", source, "': a ", height, " x ",
                    width, " image resized to a shortest edge of ", config.shortest_edge, " would be ",
                    static_cast<Index>(long_side), " pixels long, above the ", kMaxImageSide, " plora accepts");
  if (width <= height) return {static_cast<Index>(long_side), config.shortest_edge};
  return {config.shortest_edge, static_cast<Index>(long_side)};
}

/// Resize (per config) of an 8-bit image; `source` names it in errors.
inline Image8 resize_for(const Image8& image, const PreprocessorConfig& config, const std::string& source) {
  const auto [height, width] = output_size(config, image.height, image.width, source);
  if (height == image.height && width == image.width) return image;  // PIL returns a copy too
  switch (config.resample) {
    case 0: return resize_nearest(image, height, width);
    case 2: return resize_bilinear(image, height, width);
    default:
      throw ValueError(plora::detail::concat("preprocessing '", source, "': resample ", config.resample,
                                             " is not supported (0 nearest, 2 bilinear)"));
  }
}

/// The ViTImageProcessor pipeline: resize -> rescale (x * rescale_factor in
/// double, then float) -> normalise ((x - mean) / std in float) into `out`,
/// channels first, out.size() == channels * height * width of the resized image.
inline void preprocess_into(std::span<float> out, const Image8& image, const PreprocessorConfig& config,
                            const std::string& source) {
  const Image8 resized = resize_for(image, config, source);
  check<ShapeError>(out.size() == resized.values.size(), "preprocessing '", source, "': output holds ", out.size(),
                    " values, the image has ", resized.channels, " x ", resized.height, " x ", resized.width);
  const auto per_channel = [&](const std::vector<float>& v, const char* name) {
    check<ValueError>(v.size() == 1 || static_cast<Index>(v.size()) == resized.channels, "preprocessing '", source,
                      "': ", name, " has ", v.size(), " entries for a ", resized.channels, "-channel image");
  };
  if (config.do_normalize) {
    per_channel(config.image_mean, "image_mean");
    per_channel(config.image_std, "image_std");
  }
  const auto channel_value = [](const std::vector<float>& v, Index c) {
    return v[v.size() == 1 ? 0 : static_cast<std::size_t>(c)];
  };
  const Index plane = resized.height * resized.width;
  for (Index c = 0; c < resized.channels; ++c) {
    const float mean = config.do_normalize ? channel_value(config.image_mean, c) : 0.0f;
    const float std_dev = config.do_normalize ? channel_value(config.image_std, c) : 1.0f;
    for (Index i = 0; i < plane; ++i) {
      const auto at = static_cast<std::size_t>(c * plane + i);
      float v = config.do_rescale ? static_cast<float>(double(resized.values[at]) * config.rescale_factor)
                                  : static_cast<float>(resized.values[at]);
      if (config.do_normalize) v = (v - mean) / std_dev;
      out[at] = v;
    }
  }
}

inline std::vector<float> preprocess(const Image8& image, const PreprocessorConfig& config, const std::string& source) {
  const auto [height, width] = output_size(config, image.height, image.width, source);
  std::vector<float> out(static_cast<std::size_t>(image.channels * height * width));
  preprocess_into(out, image, config, source);
  return out;
}

}  // namespace plora::io
