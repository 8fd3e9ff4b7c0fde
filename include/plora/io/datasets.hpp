#pragma once
// Image classification datasets: loaders (CIFAR-10/100 binary, ImageFolder,
// pixel CSV, scikit-learn's digits), preprocessing per PreprocessorConfig at
// load time, stratified splits, few-shot subsets, and ImageBatches, a
// BatchSource whose order in an epoch is a pure function of (seed, epoch).
//
// Images are preprocessed once into `pixels`: mind the memory (CIFAR-10's
// 50000 images at 3 x 224 x 224 floats are 30 GB); the loaders take
// `max_examples` to read only the first records of large files.
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <numeric>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "plora/core/digest.hpp"
#include "plora/core/error.hpp"
#include "plora/core/host_matrix.hpp"
#include "plora/core/rng.hpp"
#include "plora/io/detail/input_file.hpp"
#include "plora/io/hf_config.hpp"
#include "plora/io/image.hpp"
#include "plora/models/batches.hpp"

namespace plora::io {

/// Preprocessed images (one row of channels * height * width values per
/// image, channels first) with class labels in [0, num_classes).
struct ImageDataset {
  HostMatrix pixels;
  std::vector<std::int32_t> labels;
  Index num_classes = 0;
  Index channels = 0;
  Index height = 0;
  Index width = 0;
  std::vector<std::string> class_names;
  [[nodiscard]] Index size() const { return static_cast<Index>(labels.size()); }
};

/// Adds everything a batch of `data` can depend on to `digest`: the image
/// geometry, the classes, the labels and the pixels.
inline Digest& add_to(Digest& digest, const ImageDataset& data) {
  digest.add(data.channels).add(data.height).add(data.width).add(data.num_classes);
  digest.add(data.class_names.size());
  for (const std::string& name : data.class_names) digest.add(name);
  digest.add(std::as_bytes(std::span(data.labels)));
  return digest.add(std::as_bytes(std::span(data.pixels.values())));
}

/// Throws ValueError naming `what` unless `data` is non-empty and consistent
/// (pixel rows = labels, row length = C*H*W, labels in range).
inline void validate(const ImageDataset& data, std::string_view what = "dataset") {
  check<ValueError>(data.size() > 0, what, ": the dataset is empty");
  check<ValueError>(data.pixels.rows() == data.size() && data.pixels.cols() == data.channels * data.height * data.width,
                    what, ": pixels are ", data.pixels.rows(), " x ", data.pixels.cols(), ", expected ", data.size(),
                    " x ", data.channels, "*", data.height, "*", data.width);
  check<ValueError>(data.num_classes > 0 && static_cast<Index>(data.class_names.size()) == data.num_classes, what,
                    ": ", data.class_names.size(), " class names for ", data.num_classes, " classes");
  for (std::size_t i = 0; i < data.labels.size(); ++i)
    check<ValueError>(data.labels[i] >= 0 && data.labels[i] < data.num_classes, what, ": label ", data.labels[i],
                      " of example ", i, " is outside [0, ", data.num_classes, ")");
}

namespace detail {

/// Accumulates preprocessed images of one common shape.
class DatasetBuilder {
 public:
  explicit DatasetBuilder(PreprocessorConfig config) : config_(std::move(config)) {}

  void add(const Image8& image, std::int32_t label, const std::string& source) {
    const auto [height, width] = output_size(config_, image.height, image.width, source);
    if (labels_.empty()) {
      channels_ = image.channels;
      height_ = height;
      width_ = width;
    }
    check<IoError>(image.channels == channels_ && height == height_ && width == width_, "image '", source,
                   "' preprocesses to ", image.channels, " x ", height, " x ", width, " but earlier images to ", channels_,
                   " x ", height_, " x ", width_, " (set do_resize with a fixed size, or fix the channels)");
    const auto row = static_cast<std::size_t>(channels_ * height_ * width_);
    values_.resize(values_.size() + row);
    preprocess_into(std::span(values_).last(row), image, config_, source);
    labels_.push_back(label);
  }

  [[nodiscard]] ImageDataset finish(std::vector<std::string> class_names, const std::string& source) && {
    check<IoError>(!labels_.empty(), "'", source, "' holds no images");
    ImageDataset data;
    const auto n = static_cast<Index>(labels_.size());
    data.pixels = HostMatrix::adopt(n, channels_ * height_ * width_, std::move(values_));
    data.labels = std::move(labels_);
    data.num_classes = static_cast<Index>(class_names.size());
    data.class_names = std::move(class_names);
    data.channels = channels_;
    data.height = height_;
    data.width = width_;
    return data;
  }

 private:
  PreprocessorConfig config_;
  Index channels_ = 0, height_ = 0, width_ = 0;
  HostMatrix::Values values_;
  std::vector<std::int32_t> labels_;
};

/// A gzip file's decompressed contents (zlib reads uncompressed files as is).
inline std::string read_gzip_file(const std::filesystem::path& path) {
  check_input_file(path);
  gzFile file = gzopen(path.c_str(), "rb");
  check<IoError>(file != nullptr, "cannot open '", path.string(), "'");
  std::string out;
  char chunk[1 << 16];
  int got = 0;
  while ((got = gzread(file, chunk, sizeof chunk)) > 0) out.append(chunk, static_cast<std::size_t>(got));
  int code = Z_OK;
  const std::string reason = got < 0 ? gzerror(file, &code) : "";
  gzclose(file);
  check<IoError>(got == 0, "cannot decompress '", path.string(), "': ", reason);
  return out;
}

/// Lines of `text` without trailing '\r', with 1-based line numbers; blank lines skipped.
template <class F>
void for_each_line(std::string_view text, F&& f) {
  Index number = 0;
  for (std::size_t start = 0; start < text.size();) {
    const std::size_t stop = std::min(text.find('\n', start), text.size());
    std::string_view line = text.substr(start, stop - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    ++number;
    if (!line.empty()) f(number, line);
    start = stop + 1;
  }
}

inline std::vector<std::string_view> split_fields(std::string_view line) {
  std::vector<std::string_view> fields;
  for (std::size_t start = 0;;) {
    const std::size_t stop = line.find(',', start);
    std::string_view field = line.substr(start, stop == std::string_view::npos ? std::string_view::npos : stop - start);
    while (!field.empty() && field.front() == ' ') field.remove_prefix(1);
    while (!field.empty() && field.back() == ' ') field.remove_suffix(1);
    fields.push_back(field);
    if (stop == std::string_view::npos) return fields;
    start = stop + 1;
  }
}

/// An integral value in [low, high] written as an integer or as a float with
/// no fraction ("3", "3.0"); IoError naming file, line and column otherwise.
inline std::int32_t parse_integral(std::string_view field, std::int32_t low, std::int32_t high, const std::string& source,
                                   Index line, std::size_t column) {
  double value = 0;
  const auto [end, error] = std::from_chars(field.data(), field.data() + field.size(), value);
  check<IoError>(error == std::errc() && end == field.data() + field.size() && value == std::floor(value) &&
                     value >= low && value <= high,
                 "'", source, "' line ", line, ", column ", column + 1, ": expected an integer in [", low, ", ", high,
                 "], got '", field, "'");
  return static_cast<std::int32_t>(value);
}

inline std::vector<std::string> numbered_names(Index n) {
  std::vector<std::string> names;
  for (Index i = 0; i < n; ++i) names.push_back(std::to_string(i));
  return names;
}

/// Lines of `path` if it exists (class-name lists shipped beside CIFAR files).
inline std::vector<std::string> read_names(const std::filesystem::path& path) {
  std::vector<std::string> names;
  if (!std::filesystem::is_regular_file(path)) return names;
  for_each_line(read_file(path), [&](Index, std::string_view line) { names.emplace_back(line); });
  return names;
}

/// Fisher-Yates with RandomStream::below: a permutation that is a pure function of the stream.
inline void shuffle(std::vector<Index>& items, RandomStream& rng) {
  for (std::size_t i = items.size(); i > 1; --i) {
    const std::size_t j = rng.below(static_cast<std::uint32_t>(i));
    std::swap(items[i - 1], items[j]);
  }
}

/// Indices of every class, in dataset order.
inline std::vector<std::vector<Index>> indices_by_class(const ImageDataset& data) {
  std::vector<std::vector<Index>> by_class(static_cast<std::size_t>(data.num_classes));
  for (Index i = 0; i < data.size(); ++i) by_class[static_cast<std::size_t>(data.labels[static_cast<std::size_t>(i)])].push_back(i);
  return by_class;
}

}  // namespace detail

enum class CifarLabels { Fine, Coarse };

/// CIFAR-10 binary batches (data_batch_*.bin / test_batch.bin): records of one
/// label byte and 3072 pixel bytes (R, G, B planes of 32 x 32). Class names
/// from batches.meta.txt beside the first file, else CIFAR-10's own.
inline ImageDataset load_cifar10(const std::vector<std::filesystem::path>& files, const PreprocessorConfig& config = {},
                                 Index max_examples = 0);

/// CIFAR-100 binary file (train.bin / test.bin): records of a coarse and a
/// fine label byte and 3072 pixel bytes. Class names from
/// {fine,coarse}_label_names.txt beside the file, else "0", "1", ...
inline ImageDataset load_cifar100(const std::filesystem::path& file, CifarLabels labels = CifarLabels::Fine,
                                  const PreprocessorConfig& config = {}, Index max_examples = 0);

namespace detail {
inline ImageDataset load_cifar(const std::vector<std::filesystem::path>& files, Index label_bytes, Index label_index,
                               Index num_classes, std::vector<std::string> names, const PreprocessorConfig& config,
                               Index max_examples) {
  check<ValueError>(!files.empty(), "load_cifar: no files given");
  constexpr Index kPixels = 3 * 32 * 32;
  const Index record = label_bytes + kPixels;
  DatasetBuilder builder(config);
  Index loaded = 0;
  for (const auto& path : files) {
    if (max_examples > 0 && loaded >= max_examples) break;
    const std::string bytes = read_file(path);
    const auto size = static_cast<Index>(bytes.size());
    check<IoError>(size > 0 && size % record == 0, "CIFAR file '", path.string(), "' has ", size,
                   " bytes, not a positive multiple of the ", record, "-byte record (truncated?)");
    for (Index r = 0; r < size / record && (max_examples <= 0 || loaded < max_examples); ++r, ++loaded) {
      const char* rec = bytes.data() + r * record;
      const auto label = static_cast<std::int32_t>(static_cast<unsigned char>(rec[label_index]));
      check<IoError>(label < num_classes, "CIFAR file '", path.string(), "' record ", r, ": label ", label,
                     " is outside [0, ", num_classes, ")");
      Image8 image(3, 32, 32);  // CIFAR stores planes, like Image8
      std::copy_n(reinterpret_cast<const std::uint8_t*>(rec + label_bytes), kPixels, image.values.begin());
      builder.add(image, label, path.string() + " record " + std::to_string(r));
    }
  }
  if (static_cast<Index>(names.size()) != num_classes) names = numbered_names(num_classes);
  return std::move(builder).finish(std::move(names), files.front().string());
}
}  // namespace detail

inline ImageDataset load_cifar10(const std::vector<std::filesystem::path>& files, const PreprocessorConfig& config,
                                 Index max_examples) {
  std::vector<std::string> names =
      files.empty() ? std::vector<std::string>{} : detail::read_names(files.front().parent_path() / "batches.meta.txt");
  if (names.size() != 10)
    names = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
  return detail::load_cifar(files, 1, 0, 10, std::move(names), config, max_examples);
}

inline ImageDataset load_cifar100(const std::filesystem::path& file, CifarLabels labels, const PreprocessorConfig& config,
                                  Index max_examples) {
  const bool fine = labels == CifarLabels::Fine;
  auto names = detail::read_names(file.parent_path() / (fine ? "fine_label_names.txt" : "coarse_label_names.txt"));
  return detail::load_cifar({file}, 2, fine ? 1 : 0, fine ? 100 : 20, std::move(names), config, max_examples);
}

/// torchvision-style ImageFolder: root/<class>/<image>, classes = the
/// sub-directories sorted by name, images (.png .jpg .jpeg .bmp, any case)
/// sorted by file name; other files and hidden entries are ignored. Images are
/// decoded with `channels` channels (3: RGB like PIL's convert("RGB")).
inline ImageDataset load_image_folder(const std::filesystem::path& root, const PreprocessorConfig& config = {},
                                      int channels = 3) {
  namespace fs = std::filesystem;
  check<IoError>(fs::is_directory(root), "image folder '", root.string(), "' is not a directory");
  const auto sorted_entries = [](const fs::path& dir, bool directories) {
    std::vector<fs::path> out;
    for (const auto& entry : fs::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      if (name.empty() || name.front() == '.' || entry.is_directory() != directories) continue;
      if (!directories) {
        std::string ext = entry.path().extension().string();
        std::ranges::transform(ext, ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        if (ext != ".png" && ext != ".jpg" && ext != ".jpeg" && ext != ".bmp") continue;
      }
      out.push_back(entry.path());
    }
    std::ranges::sort(out);
    return out;
  };
  const auto classes = sorted_entries(root, true);
  check<IoError>(!classes.empty(), "image folder '", root.string(), "' has no class sub-directories");
  check<IoError>(classes.size() <= 0x7fffffffu, "image folder '", root.string(), "': too many classes");
  detail::DatasetBuilder builder(config);
  std::vector<std::string> names;
  for (const auto& dir : classes) {
    const auto images = sorted_entries(dir, false);
    check<IoError>(!images.empty(), "image folder '", root.string(), "': class '", dir.filename().string(),
                   "' has no .png/.jpg/.jpeg/.bmp images");
    for (const auto& file : images)
      builder.add(load_image(file, channels), static_cast<std::int32_t>(names.size()), file.string());
    names.push_back(dir.filename().string());
  }
  return std::move(builder).finish(std::move(names), root.string());
}

/// The largest label a pixel CSV may hold: the classes are 0..the largest
/// label, so one corrupt label would otherwise size the class list (2e9 made
/// 16 GB of names before failing). Far above any image classification task
/// (ImageNet-21k: 21,841 classes).
inline constexpr std::int32_t kMaxPixelCsvLabel = (1 << 20) - 1;

/// A CSV of `label, pixel...` rows (pixels 0..255, channels first: c, y, x),
/// with an optional header line (detected: its first field is not a number).
/// num_classes = the largest label + 1, and every class below it must have an
/// example among the rows read (a gap is a stray label, not a class); labels
/// above kMaxPixelCsvLabel are refused.
inline ImageDataset load_pixel_csv(const std::filesystem::path& path, Index channels, Index height, Index width,
                                   const PreprocessorConfig& config = {}, Index max_examples = 0) {
  check<ValueError>(channels > 0 && height > 0 && width > 0, "load_pixel_csv('", path.string(), "'): invalid shape ",
                    channels, " x ", height, " x ", width);
  // Each factor is checked before it multiplies, so the product cannot wrap around.
  check<ValueError>(height <= kMaxImagePixels / width && channels <= kMaxImagePixels / (height * width),
                    "load_pixel_csv('", path.string(), "'): shape ", channels, " x ", height, " x ", width,
                    " exceeds the limit of ", kMaxImagePixels, " values per image");
  const std::string text = detail::read_file(path);
  const std::string source = path.string();
  detail::DatasetBuilder builder(config);
  std::int32_t max_label = -1;
  std::vector<Index> per_class;
  Index rows = 0;
  bool first = true;
  detail::for_each_line(text, [&](Index line, std::string_view content) {
    const auto fields = detail::split_fields(content);
    if (std::exchange(first, false)) {
      double probe = 0;
      const auto f = fields.front();
      if (std::from_chars(f.data(), f.data() + f.size(), probe).ec != std::errc()) return;  // header
    }
    if (max_examples > 0 && rows >= max_examples) return;
    check<IoError>(static_cast<Index>(fields.size()) == 1 + channels * height * width, "'", source, "' line ", line,
                   ": expected 1 label + ", channels * height * width, " pixels, got ", fields.size(), " fields");
    const std::int32_t label = detail::parse_integral(fields[0], 0, kMaxPixelCsvLabel, source, line, 0);
    Image8 image(channels, height, width);
    for (std::size_t i = 1; i < fields.size(); ++i)
      image.values[i - 1] = static_cast<std::uint8_t>(detail::parse_integral(fields[i], 0, 255, source, line, i));
    builder.add(image, label, source + " line " + std::to_string(line));
    max_label = std::max(max_label, label);
    if (per_class.size() <= static_cast<std::size_t>(label)) per_class.resize(static_cast<std::size_t>(label) + 1, 0);
    ++per_class[static_cast<std::size_t>(label)];
    ++rows;
  });
  const auto empty = std::find(per_class.begin(), per_class.end(), Index{0});
  if (empty != per_class.end())
    throw IoError(plora::detail::concat("'", source, "': class ", empty - per_class.begin(), " of 0..", max_label,
                         " has no example among the rows read, though label ", max_label,
                         " makes it a class (a stray label?)"));
  return std::move(builder).finish(detail::numbered_names(max_label + 1), source);
}

/// Where Debian's python3-sklearn installs scikit-learn's digits data.
inline const std::filesystem::path kSklearnDigitsPath = "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz";

/// Digits pixels are 0..16: no resize, rescale to [0, 1] by 1/16, normalise
/// with mean = std = 0.5 (to [-1, 1], like ViT's inputs).
inline PreprocessorConfig sklearn_digits_preprocessor() {
  PreprocessorConfig config;
  config.do_resize = false;
  config.rescale_factor = 1.0 / 16.0;
  config.image_mean = {0.5f};
  config.image_std = {0.5f};
  return config;
}

/// scikit-learn's digits (load_digits): gzip CSV rows of 64 pixel values
/// 0..16 (8 x 8, row-major) then the label 0..9; 1 x 8 x 8 images.
inline ImageDataset load_sklearn_digits(const std::filesystem::path& path = kSklearnDigitsPath,
                                        const PreprocessorConfig& config = sklearn_digits_preprocessor()) {
  const std::string text = detail::read_gzip_file(path);
  const std::string source = path.string();
  detail::DatasetBuilder builder(config);
  detail::for_each_line(text, [&](Index line, std::string_view content) {
    const auto fields = detail::split_fields(content);
    check<IoError>(fields.size() == 65, "'", source, "' line ", line, ": expected 64 pixels and a label, got ",
                   fields.size(), " fields");
    Image8 image(1, 8, 8);
    for (std::size_t i = 0; i < 64; ++i)
      image.values[i] = static_cast<std::uint8_t>(detail::parse_integral(fields[i], 0, 16, source, line, i));
    builder.add(image, detail::parse_integral(fields[64], 0, 9, source, line, 64), source + " line " + std::to_string(line));
  });
  return std::move(builder).finish(detail::numbered_names(10), source);
}

/// The examples at `indices` (in that order), with the same classes.
inline ImageDataset subset(const ImageDataset& data, std::span<const Index> indices) {
  ImageDataset out;
  out.num_classes = data.num_classes;
  out.class_names = data.class_names;
  out.channels = data.channels;
  out.height = data.height;
  out.width = data.width;
  out.pixels = HostMatrix(static_cast<Index>(indices.size()), data.pixels.cols());
  for (std::size_t r = 0; r < indices.size(); ++r) {
    check<ValueError>(indices[r] >= 0 && indices[r] < data.size(), "subset: index ", indices[r], " is outside [0, ",
                      data.size(), ")");
    std::copy_n(data.pixels.data() + indices[r] * data.pixels.cols(), data.pixels.cols(),
                out.pixels.data() + static_cast<Index>(r) * data.pixels.cols());
    out.labels.push_back(data.labels[static_cast<std::size_t>(indices[r])]);
  }
  return out;
}

/// Stratified split into {train, test}: round(test_fraction * n_c) random
/// examples of each class c go to test (seeded), the rest to train; both keep
/// the dataset's order.
inline std::pair<ImageDataset, ImageDataset> split(const ImageDataset& data, double test_fraction, std::uint64_t seed) {
  validate(data, "split");
  check<ValueError>(test_fraction > 0.0 && test_fraction < 1.0, "split: test_fraction must be in (0, 1), got ",
                    test_fraction);
  std::vector<Index> train, test;
  auto by_class = detail::indices_by_class(data);
  for (std::size_t c = 0; c < by_class.size(); ++c) {
    RandomStream rng(seed, stream_id("plora.io.split") + c);
    detail::shuffle(by_class[c], rng);
    const auto n_test = static_cast<std::size_t>(std::llround(test_fraction * double(by_class[c].size())));
    test.insert(test.end(), by_class[c].begin(), by_class[c].begin() + static_cast<std::ptrdiff_t>(n_test));
    train.insert(train.end(), by_class[c].begin() + static_cast<std::ptrdiff_t>(n_test), by_class[c].end());
  }
  check<ValueError>(!train.empty() && !test.empty(), "split: test_fraction ", test_fraction, " of ", data.size(),
                    " examples leaves an empty side");
  std::ranges::sort(train);
  std::ranges::sort(test);
  return {subset(data, train), subset(data, test)};
}

/// k random examples of every class (seeded), in dataset order. ValueError if
/// k < 1 or a class has fewer than k examples (naming the class).
inline ImageDataset few_shot(const ImageDataset& data, Index k_per_class, std::uint64_t seed) {
  validate(data, "few_shot");
  check<ValueError>(k_per_class >= 1, "few_shot: k_per_class must be >= 1, got ", k_per_class);
  std::vector<Index> chosen;
  auto by_class = detail::indices_by_class(data);
  for (std::size_t c = 0; c < by_class.size(); ++c) {
    check<ValueError>(static_cast<Index>(by_class[c].size()) >= k_per_class, "few_shot: class '", data.class_names[c],
                      "' (", c, ") has ", by_class[c].size(), " examples, fewer than k = ", k_per_class);
    RandomStream rng(seed, stream_id("plora.io.few_shot") + c);
    detail::shuffle(by_class[c], rng);
    chosen.insert(chosen.end(), by_class[c].begin(), by_class[c].begin() + k_per_class);
  }
  std::ranges::sort(chosen);
  return subset(data, chosen);
}

/// A BatchSource over an ImageDataset (which must outlive it). Shuffled: epoch
/// e visits the examples in a Fisher-Yates permutation drawn from stream
/// (seed, e), so batch(e, i) is a pure function of (seed, e, i); Sequential:
/// dataset order every epoch (evaluation). The last partial batch is kept.
class ImageBatches {
 public:
  using Batch = ImageBatch;
  enum class Order { Shuffled, Sequential };

  ImageBatches(const ImageDataset& data, Index batch_size, std::uint64_t seed, Order order = Order::Shuffled)
      : data_(&data), batch_size_(batch_size), seed_(seed), order_(order) {
    validate(data, "ImageBatches");
    check<ValueError>(batch_size > 0, "ImageBatches: batch_size must be positive, got ", batch_size);
    check<ValueError>(data.size() <= 0xffffffffLL, "ImageBatches: too many examples to shuffle");
  }
  ImageBatches(ImageDataset&&, Index, std::uint64_t, Order = Order::Shuffled) = delete;  // would dangle

  [[nodiscard]] Index batches_per_epoch() const { return batch_count(data_->size(), batch_size_); }
  [[nodiscard]] Index batch_size() const { return batch_size_; }
  [[nodiscard]] const ImageDataset& dataset() const { return *data_; }

  /// The order in which epoch `epoch` visits the examples.
  [[nodiscard]] std::vector<Index> permutation(Index epoch) const {
    std::vector<Index> order(static_cast<std::size_t>(data_->size()));
    std::iota(order.begin(), order.end(), Index{0});
    if (order_ == Order::Shuffled) {
      RandomStream rng(seed_, stream_id("plora.io.ImageBatches") + static_cast<std::uint64_t>(epoch));
      detail::shuffle(order, rng);
    }
    return order;
  }

  /// Batch `i` (0 <= i < batches_per_epoch()) of epoch `epoch`.
  [[nodiscard]] ImageBatch batch(Index epoch, Index i) const {
    check<ValueError>(i >= 0 && i < batches_per_epoch(), "ImageBatches: batch ", i, " is outside [0, ",
                      batches_per_epoch(), ")");
    const std::vector<Index> order = permutation(epoch);
    const Index first = i * batch_size_, count = std::min(batch_size_, data_->size() - first);
    const Index cols = data_->pixels.cols();
    ImageBatch batch{HostMatrix(count, cols), {}};
    for (Index r = 0; r < count; ++r) {
      const Index src = order[static_cast<std::size_t>(first + r)];
      std::copy_n(data_->pixels.data() + src * cols, cols, batch.pixels.data() + r * cols);
      batch.labels.push_back(data_->labels[static_cast<std::size_t>(src)]);
    }
    return batch;
  }

 private:
  const ImageDataset* data_;
  Index batch_size_;
  std::uint64_t seed_;
  Order order_;
};

}  // namespace plora::io
