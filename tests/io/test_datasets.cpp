// Dataset loaders on tiny files written here, splits, few-shot subsets and the
// ImageBatches BatchSource.
#include <doctest/doctest.h>
#include <zlib.h>

#include <limits>
#include <set>

#include "io/io_support.hpp"
#include "plora/io/io.hpp"  // the umbrella, to check it compiles on its own
#include "plora/train/concepts.hpp"

using namespace plora;
using namespace plora::io;
using plora::test::contains;
using plora::test::message_of;
using plora::test::TempDir;
using plora::test::write_bytes;

static_assert(BatchSource<ImageBatches>);

namespace {
/// No resize / rescale / normalise: pixels come out as their byte values.
PreprocessorConfig raw() {
  PreprocessorConfig c;
  c.do_resize = c.do_rescale = c.do_normalize = false;
  return c;
}

/// CIFAR records: `labels` bytes then 3072 pixels whose value is (record * 7 + i) % 256.
std::string cifar_records(const std::vector<std::vector<std::uint8_t>>& labels) {
  std::string out;
  for (std::size_t r = 0; r < labels.size(); ++r) {
    for (const auto l : labels[r]) out.push_back(static_cast<char>(l));
    for (int i = 0; i < 3072; ++i) out.push_back(static_cast<char>((r * 7 + static_cast<std::size_t>(i)) % 256));
  }
  return out;
}

/// n examples per class for `classes` classes, each row filled with its index.
ImageDataset toy(Index classes, Index per_class) {
  ImageDataset d;
  d.num_classes = classes;
  d.channels = d.height = 1;
  d.width = 2;
  d.pixels = HostMatrix(classes * per_class, 2);
  for (Index i = 0; i < classes * per_class; ++i) {
    d.labels.push_back(static_cast<std::int32_t>(i % classes));
    d.pixels(i, 0) = d.pixels(i, 1) = float(i);
  }
  for (Index c = 0; c < classes; ++c) d.class_names.push_back("class" + std::to_string(c));
  return d;
}
}  // namespace

TEST_CASE("CIFAR-10 and CIFAR-100 binary files") {
  TempDir dir;
  write_bytes(dir / "data_batch_1.bin", cifar_records({{3}, {9}}));
  write_bytes(dir / "data_batch_2.bin", cifar_records({{0}}));
  const ImageDataset ten = load_cifar10({dir / "data_batch_1.bin", dir / "data_batch_2.bin"}, raw());
  CHECK(ten.size() == 3);
  CHECK(ten.labels == std::vector<std::int32_t>{3, 9, 0});
  CHECK((ten.channels == 3 && ten.height == 32 && ten.width == 32 && ten.num_classes == 10));
  CHECK(ten.class_names[3] == "cat");
  // Record 1 of file 1: pixel i = (7 + i) % 256, planes R, G, B already channels first.
  CHECK(ten.pixels(1, 0) == 7.0f);
  CHECK(ten.pixels(1, 1024 + 5) == float((7 + 1024 + 5) % 256));
  CHECK(load_cifar10({dir / "data_batch_1.bin", dir / "data_batch_2.bin"}, raw(), 2).size() == 2);

  // Default preprocessing: 224 x 224, values normalised into [-1, 1].
  PreprocessorConfig small;
  small.height = small.width = 16;
  const ImageDataset resized = load_cifar10({dir / "data_batch_2.bin"}, small);
  CHECK(resized.pixels.cols() == 3 * 16 * 16);
  CHECK(*std::ranges::max_element(resized.pixels.values()) <= 1.0f);
  CHECK(*std::ranges::min_element(resized.pixels.values()) >= -1.0f);

  write_bytes(dir / "train.bin", cifar_records({{2, 55}, {19, 99}}));
  write_bytes(dir / "fine_label_names.txt", [] {
    std::string names;
    for (int i = 0; i < 100; ++i) names += "fine" + std::to_string(i) + "\n";
    return names;
  }());
  const ImageDataset fine = load_cifar100(dir / "train.bin", CifarLabels::Fine, raw());
  CHECK(fine.labels == std::vector<std::int32_t>{55, 99});
  CHECK(fine.num_classes == 100);
  CHECK(fine.class_names[55] == "fine55");
  CHECK(fine.pixels(0, 0) == 0.0f);
  const ImageDataset coarse = load_cifar100(dir / "train.bin", CifarLabels::Coarse, raw());
  CHECK(coarse.labels == std::vector<std::int32_t>{2, 19});
  CHECK(coarse.num_classes == 20);
  CHECK(coarse.class_names[19] == "19");
}

TEST_CASE("CIFAR errors: truncated files and labels out of range") {
  TempDir dir;
  std::string bytes = cifar_records({{1}, {2}});
  bytes.pop_back();
  write_bytes(dir / "cut.bin", bytes);
  std::string msg = message_of<IoError>([&] { (void)load_cifar10({dir / "cut.bin"}, raw()); });
  CHECK(contains(msg, (dir / "cut.bin").string()));
  CHECK(contains(msg, "truncated"));
  write_bytes(dir / "label.bin", cifar_records({{1}, {10}}));
  msg = message_of<IoError>([&] { (void)load_cifar10({dir / "label.bin"}, raw()); });
  CHECK(contains(msg, "record 1"));
  CHECK(contains(msg, "label 10"));
  write_bytes(dir / "coarse.bin", cifar_records({{20, 5}}));
  CHECK_THROWS_AS((void)load_cifar100(dir / "coarse.bin", CifarLabels::Coarse, raw()), IoError);
  CHECK_THROWS_AS((void)load_cifar10({dir / "absent.bin"}, raw()), IoError);
}

TEST_CASE("ImageFolder: sorted classes and files, errors name the file or class") {
  TempDir dir;
  const auto pixel = [](int value) { return [value](int y, int x, int c) { return value + 10 * y + 3 * x + c; }; };
  write_bytes(dir / "zebra" / "b.bmp", plora::test::bmp_bytes(2, 2, pixel(100)));
  write_bytes(dir / "zebra" / "a.BMP", plora::test::bmp_bytes(2, 2, pixel(50)));
  write_bytes(dir / "ant" / "only.bmp", plora::test::bmp_bytes(2, 2, pixel(0)));
  write_bytes(dir / "ant" / "notes.txt", "ignored");
  write_bytes(dir / ".cache" / "x.bmp", plora::test::bmp_bytes(2, 2, pixel(0)));
  const ImageDataset d = load_image_folder(dir.path(), raw());
  CHECK(d.class_names == std::vector<std::string>{"ant", "zebra"});
  CHECK(d.labels == std::vector<std::int32_t>{0, 1, 1});
  CHECK((d.channels == 3 && d.height == 2 && d.width == 2));
  CHECK(d.pixels(0, 0) == 0.0f);          // ant/only: R at (0, 0)
  CHECK(d.pixels(1, 0) == 50.0f);         // zebra/a before zebra/b
  CHECK(d.pixels(2, 4 + 3) == 100.0f + 10 + 3 + 1);  // G plane, (y 1, x 1)

  write_bytes(dir / "zebra" / "c.png", "not a png");
  CHECK(contains(message_of<IoError>([&] { (void)load_image_folder(dir.path(), raw()); }), "c.png"));
  std::filesystem::remove(dir / "zebra" / "c.png");
  write_bytes(dir / "zebra" / "big.bmp", plora::test::bmp_bytes(3, 2, pixel(0)));
  CHECK(contains(message_of<IoError>([&] { (void)load_image_folder(dir.path(), raw()); }), "big.bmp"));
  PreprocessorConfig resize = raw();
  resize.do_resize = true;
  resize.height = resize.width = 4;
  CHECK(load_image_folder(dir.path(), resize).size() == 4);  // a common size after resizing
  std::filesystem::create_directories(dir / "empty_class");
  CHECK(contains(message_of<IoError>([&] { (void)load_image_folder(dir.path(), raw()); }), "empty_class"));
  CHECK_THROWS_AS((void)load_image_folder(dir / "absent"), IoError);
}

TEST_CASE("pixel CSV with and without a header; malformed lines give the line number") {
  TempDir dir;
  write_bytes(dir / "h.csv", "label,p0,p1,p2,p3\n1,0,255,10,20\r\n\n0,1,2,3,4\n");
  const ImageDataset d = load_pixel_csv(dir / "h.csv", 1, 2, 2, raw());
  CHECK(d.labels == std::vector<std::int32_t>{1, 0});
  CHECK(d.num_classes == 2);
  CHECK(d.pixels.values() == HostMatrix::Values{0, 255, 10, 20, 1, 2, 3, 4});
  write_bytes(dir / "n.csv", "2,1,1,1,1\n0,1,1,1,1\n1,2,2,2,2\n");
  CHECK(load_pixel_csv(dir / "n.csv", 1, 2, 2, raw()).num_classes == 3);
  // Labels number the classes 0..K-1: a gap is a stray label, not a class of no examples.
  write_bytes(dir / "n.csv", "0,1,1,1,1\n4,1,1,1,1\n1,2,2,2,2\n");
  CHECK(contains(message_of<IoError>([&] { (void)load_pixel_csv(dir / "n.csv", 1, 2, 2, raw()); }),
                 "class 2 of 0..4 has no example among the rows read"));

  write_bytes(dir / "bad.csv", "0,1,2,3,4\n1,1,2,3\n");
  std::string msg = message_of<IoError>([&] { (void)load_pixel_csv(dir / "bad.csv", 1, 2, 2, raw()); });
  CHECK(contains(msg, (dir / "bad.csv").string()));
  CHECK(contains(msg, "line 2"));
  write_bytes(dir / "bad.csv", "0,1,2,3,4\n\n1,1,2,3,256\n");
  msg = message_of<IoError>([&] { (void)load_pixel_csv(dir / "bad.csv", 1, 2, 2, raw()); });
  CHECK(contains(msg, "line 3"));
  CHECK(contains(msg, "'256'"));
  write_bytes(dir / "bad.csv", "0,1,2,3,4\n-1,1,2,3,4\n");
  CHECK(contains(message_of<IoError>([&] { (void)load_pixel_csv(dir / "bad.csv", 1, 2, 2, raw()); }), "line 2"));
  write_bytes(dir / "bad.csv", "label\n");
  CHECK_THROWS_AS((void)load_pixel_csv(dir / "bad.csv", 1, 2, 2, raw()), IoError);  // no images
  // One corrupt label must not size the class list (2e9 classes: 16 GB of names
  // before std::bad_alloc); the largest accepted label still loads.
  write_bytes(dir / "bad.csv", "0,1,2,3,4\n2000000000,1,2,3,4\n");
  msg = message_of<IoError>([&] { (void)load_pixel_csv(dir / "bad.csv", 1, 2, 2, raw()); });
  CHECK(contains(msg, "line 2"));
  CHECK(contains(msg, "expected an integer in [0, 1048575], got '2000000000'"));
  // The largest label passes the range check; alone it leaves classes without examples.
  write_bytes(dir / "n.csv", "1048575,1,1,1,1\n");
  CHECK(contains(message_of<IoError>([&] { (void)load_pixel_csv(dir / "n.csv", 1, 2, 2, raw()); }),
                 "class 0 of 0..1048575 has no example"));
  // A shape whose product wraps around 2^64 ((2^58 + 1) x 8 x 8 = 64 modulo 2^64) is refused, not used.
  const Index wraps = (Index{1} << 58) + 1;
  CHECK(contains(message_of<ValueError>([&] { (void)load_pixel_csv(dir / "n.csv", wraps, 8, 8, raw()); }),
                 "exceeds the limit of 178956970 values per image"));
  CHECK(contains(message_of<ValueError>([&] { (void)load_pixel_csv(dir / "n.csv", 1, Index{1} << 32, Index{1} << 32, raw()); }),
                 "exceeds the limit"));
}

TEST_CASE("scikit-learn digits through zlib") {
  TempDir dir;
  // Two rows written with zlib's gzip writer: pixel i = i % 17, labels 4 and 7.
  std::string text;
  for (const int label : {4, 7}) {
    for (int i = 0; i < 64; ++i) text += std::to_string(i % 17) + (i == 0 ? ".0" : "") + ",";
    text += std::to_string(label) + "\n";
  }
  const auto gz = dir / "digits.csv.gz";
  gzFile out = gzopen(gz.c_str(), "wb");
  REQUIRE(out != nullptr);
  REQUIRE(gzwrite(out, text.data(), static_cast<unsigned>(text.size())) == static_cast<int>(text.size()));
  gzclose(out);
  const ImageDataset d = load_sklearn_digits(gz);
  CHECK(d.labels == std::vector<std::int32_t>{4, 7});
  CHECK((d.channels == 1 && d.height == 8 && d.width == 8 && d.num_classes == 10));
  // (v / 16 - 0.5) / 0.5: 0 -> -1, 16 -> 1, 8 -> 0.
  CHECK(d.pixels(0, 0) == -1.0f);
  CHECK(d.pixels(0, 16) == 1.0f);
  CHECK(d.pixels(1, 8) == 0.0f);

  write_bytes(dir / "bad.csv", "1,2,3\n");  // zlib passes plain text through
  CHECK(contains(message_of<IoError>([&] { (void)load_sklearn_digits(dir / "bad.csv"); }), "line 1"));
  CHECK_THROWS_AS((void)load_sklearn_digits(dir / "absent.csv.gz"), IoError);

  if (std::filesystem::exists(kSklearnDigitsPath)) {  // Debian's python3-sklearn copy
    const ImageDataset real = load_sklearn_digits();
    CHECK(real.size() == 1797);
    std::set<std::int32_t> classes(real.labels.begin(), real.labels.end());
    CHECK(classes.size() == 10);
  }
}

TEST_CASE("stratified split and few-shot subsets are seeded and exact") {
  const ImageDataset d = toy(3, 10);
  const auto [train, test] = split(d, 0.2, 11);
  CHECK(test.size() == 6);  // round(0.2 * 10) per class
  CHECK(train.size() == 24);
  for (std::int32_t c = 0; c < 3; ++c) CHECK(std::ranges::count(test.labels, c) == 2);
  std::set<float> seen;  // train and test partition the examples
  for (const auto* part : {&train, &test})
    for (Index i = 0; i < part->size(); ++i) CHECK(seen.insert(part->pixels(i, 0)).second);
  CHECK(seen.size() == 30);
  const auto again = split(d, 0.2, 11).second;
  CHECK(again.pixels.values() == test.pixels.values());
  CHECK(split(d, 0.2, 12).second.pixels.values() != test.pixels.values());
  CHECK_THROWS_AS((void)split(d, 0.0, 1), ValueError);
  CHECK_THROWS_AS((void)split(d, 0.01, 1), ValueError);  // no test example at all

  const ImageDataset shots = few_shot(d, 4, 5);
  CHECK(shots.size() == 12);
  for (std::int32_t c = 0; c < 3; ++c) CHECK(std::ranges::count(shots.labels, c) == 4);
  for (Index i = 0; i < shots.size(); ++i)  // rows keep their own label
    CHECK(Index(shots.pixels(i, 0)) % 3 == shots.labels[static_cast<std::size_t>(i)]);
  CHECK(few_shot(d, 4, 5).pixels.values() == shots.pixels.values());
  CHECK_THROWS_AS((void)few_shot(d, 0, 5), ValueError);
  const std::string msg = message_of<ValueError>([&] { (void)few_shot(d, 11, 5); });
  CHECK(contains(msg, "class0"));
  CHECK(contains(msg, "11"));
}

TEST_CASE("ImageBatches: deterministic per (seed, epoch), every example once, partial last batch") {
  const ImageDataset d = toy(2, 5);  // 10 examples
  const ImageBatches batches(d, 4, 99);
  CHECK(batches.batches_per_epoch() == 3);
  const auto collect = [&](const ImageBatches& source, Index epoch) {
    std::vector<float> order;
    for (Index i = 0; i < source.batches_per_epoch(); ++i) {
      const ImageBatch b = source.batch(epoch, i);
      CHECK(b.size() == (i < 2 ? 4 : 2));
      for (Index r = 0; r < b.size(); ++r) {
        order.push_back(b.pixels(r, 0));
        CHECK(b.labels[static_cast<std::size_t>(r)] == Index(b.pixels(r, 0)) % 2);
      }
    }
    return order;
  };
  const auto epoch0 = collect(batches, 0);
  CHECK(std::set<float>(epoch0.begin(), epoch0.end()).size() == 10);
  CHECK(collect(ImageBatches(d, 4, 99), 0) == epoch0);  // a fresh source: same order
  CHECK(collect(batches, 1) != epoch0);
  CHECK(collect(ImageBatches(d, 4, 100), 0) != epoch0);
  // Batch i of an epoch does not depend on which batches were asked for before.
  CHECK(batches.batch(0, 2).pixels.values() == ImageBatches(d, 4, 99).batch(0, 2).pixels.values());

  const ImageBatches eval(d, 4, 99, ImageBatches::Order::Sequential);
  const auto sequential = collect(eval, 3);
  CHECK(sequential == std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK_THROWS_AS((void)batches.batch(0, 3), ValueError);

  ImageDataset empty = toy(2, 0);
  CHECK_THROWS_AS(ImageBatches(empty, 4, 1), ValueError);
  ImageDataset bad = toy(2, 2);
  bad.labels[1] = 2;
  CHECK(contains(message_of<ValueError>([&] { ImageBatches(bad, 4, 1); }), "label 2"));
  CHECK_THROWS_AS(ImageBatches(d, 0, 1), ValueError);

  // A batch larger than the dataset is one (partial) batch; size + batch - 1 would overflow here.
  const ImageBatches whole(d, std::numeric_limits<Index>::max(), 99);
  CHECK(whole.batches_per_epoch() == 1);
  CHECK(whole.batch(0, 0).size() == 10);
}

TEST_CASE("dataset digests: equal for equal data, changed by a pixel, a label or a class name") {
  const auto digest = [](const ImageDataset& d) {
    Digest digest;
    return add_to(digest, d).value();
  };
  const ImageDataset base = toy(3, 2);
  CHECK(digest(toy(3, 2)) == digest(base));
  ImageDataset pixel = base;
  pixel.pixels(5, 1) += 1.0f;
  ImageDataset label = base;
  label.labels[0] = 1;
  ImageDataset name = base;
  name.class_names[2] = "other";
  for (const ImageDataset* changed : {&pixel, &label, &name}) CHECK(digest(*changed) != digest(base));
}
