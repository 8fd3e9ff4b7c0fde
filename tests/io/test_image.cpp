// Image decoding and the ViTImageProcessor pipeline: PIL's resizes and
// transformers' pixel_values (fixtures from tools/make_io_fixtures.py), and
// small cases computed by hand.
#define PLORA_STB_IMPLEMENTATION  // the test binary's one stb_image implementation
#include <doctest/doctest.h>

#include "io/io_support.hpp"
#include "plora/io/image.hpp"
#include "plora/io/safetensors.hpp"

using namespace plora;
using namespace plora::io;
using plora::test::contains;
using plora::test::message_of;
using plora::test::TempDir;
using plora::test::write_bytes;

namespace {
const std::filesystem::path kData = std::filesystem::path(PLORA_TEST_DATA_DIR) / "io";

/// An Image8 from an [h, w, c] uint8 tensor of the fixture.
Image8 from_hwc(const SafetensorsFile& file, const std::string& name) {
  const auto& shape = file.info(name).shape;
  REQUIRE(shape.size() == 3);
  const auto values = file.load_ints(name);
  Image8 image(shape[2], shape[0], shape[1]);
  for (Index y = 0; y < shape[0]; ++y)
    for (Index x = 0; x < shape[1]; ++x)
      for (Index c = 0; c < shape[2]; ++c)
        image(c, y, x) = static_cast<std::uint8_t>(values[static_cast<std::size_t>((y * shape[1] + x) * shape[2] + c)]);
  return image;
}

int max_level_diff(const Image8& a, const Image8& b) {
  REQUIRE((a.channels == b.channels && a.height == b.height && a.width == b.width));
  int worst = 0;
  for (std::size_t i = 0; i < a.values.size(); ++i) worst = std::max(worst, std::abs(int(a.values[i]) - int(b.values[i])));
  return worst;
}
}  // namespace

TEST_CASE("PNG and BMP decode to the exact stored pixels") {
  const auto reference = SafetensorsFile::open(kData / "image_reference.safetensors");
  const Image8 expected = from_hwc(reference, "rgb");
  const Image8 png = load_image(kData / "rgb_7x5.png");
  CHECK((png.channels == 3 && png.height == 5 && png.width == 7));
  CHECK(png.values == expected.values);

  // A 2 x 3 24-bit BMP written by hand (bottom-up rows of B, G, R, padded to 4 bytes).
  TempDir dir;
  const std::uint8_t rgb[2][3][3] = {{{255, 0, 0}, {0, 255, 0}, {0, 0, 255}}, {{10, 20, 30}, {40, 50, 60}, {70, 80, 90}}};
  write_bytes(dir / "small.bmp", plora::test::bmp_bytes(3, 2, [&](int y, int x, int c) { return rgb[y][x][c]; }));
  const Image8 bmp = load_image(dir / "small.bmp");
  REQUIRE((bmp.channels == 3 && bmp.height == 2 && bmp.width == 3));
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 3; ++x)
      for (int c = 0; c < 3; ++c) CHECK(bmp(c, y, x) == rgb[y][x][c]);
  // Grey conversion keeps one channel; stb's luma of (255, 0, 0) is 255 * 77 >> 8 = 76.
  const Image8 grey = load_image(dir / "small.bmp", 1);
  CHECK(grey.channels == 1);
  CHECK(grey(0, 0, 0) == 76);
}

TEST_CASE("undecodable or missing images name the file") {
  TempDir dir;
  write_bytes(dir / "broken.png", "\x89PNG\r\n\x1a\n not really");
  std::string msg = message_of<IoError>([&] { (void)load_image(dir / "broken.png"); });
  CHECK(contains(msg, (dir / "broken.png").string()));
  write_bytes(dir / "empty.jpg", "");
  CHECK(contains(message_of<IoError>([&] { (void)load_image(dir / "empty.jpg"); }), "empty.jpg"));
  CHECK(contains(message_of<IoError>([&] { (void)load_image(dir / "absent.png"); }), "absent.png"));
  std::filesystem::create_directories(dir / "folder.png");
  CHECK(contains(message_of<IoError>([&] { (void)load_image(dir / "folder.png"); }),
                 "cannot open image '" + (dir / "folder.png").string() + "': it is not a regular file"));
}

TEST_CASE("truncated, oversized and foreign images are refused as PIL refuses them") {
  TempDir dir;
  const std::string bmp = plora::test::bmp_bytes(5, 3, [](int y, int x, int c) { return 10 * y + 3 * x + c; });
  REQUIRE(bmp.size() == 54 + 3 * 16);  // rows of 15 bytes padded to 16
  // stb_image alone would decode this with its last row zero-filled.
  write_bytes(dir / "cut.bmp", bmp.substr(0, bmp.size() - 1));
  std::string msg = message_of<IoError>([&] { (void)load_image(dir / "cut.bmp"); });
  CHECK(contains(msg, "cut.bmp"));
  CHECK(contains(msg, "truncated BMP"));
  CHECK(contains(msg, "need 102 bytes, the file has 101"));

  // 20000 x 10000 declared in the header: refused before anything is decoded.
  std::string bomb = bmp;
  const auto put = [&](std::size_t at, std::uint32_t value) {
    for (std::size_t i = 0; i < 4; ++i) bomb[at + i] = static_cast<char>((value >> (8 * i)) & 0xFF);
  };
  put(18, 20000);
  put(22, 10000);
  write_bytes(dir / "bomb.bmp", bomb);
  msg = message_of<IoError>([&] { (void)load_image(dir / "bomb.bmp"); });
  CHECK(contains(msg, "bomb.bmp"));
  CHECK(contains(msg, "200000000 pixels exceeds the limit of 178956970"));

  write_bytes(dir / "anim.gif", "GIF89a");
  CHECK(contains(message_of<IoError>([&] { (void)load_image(dir / "anim.gif"); }), "not a PNG, JPEG or BMP file"));
  // A JPEG whose first Huffman table declares 255 + 2 codes, one more than a
  // table holds: stb_image 2.27 would write past its table.
  std::string jpeg = plora::test::read_bytes(std::filesystem::path(PLORA_TEST_DATA_DIR) / "fuzz/images/jpg.in").substr(2);
  const std::size_t dht = jpeg.find("\xFF\xC4");
  REQUIRE(dht != std::string::npos);
  jpeg[dht + 5] = '\xFF';  // counts of 1- and 2-bit codes (after marker, length, class/id)
  jpeg[dht + 6] = '\x02';
  write_bytes(dir / "huffman.jpg", jpeg);
  msg = message_of<IoError>([&] { (void)load_image(dir / "huffman.jpg"); });
  CHECK(contains(msg, "huffman.jpg"));
  CHECK(contains(msg, "corrupt JPEG (a Huffman table declares more than 256 codes)"));
  // An unknown critical chunk whose type bytes are not printable: stb's reason
  // quotes them; the message keeps them out.
  std::string odd_chunk = plora::test::read_bytes(kData / "rgb_7x5.png");
  odd_chunk.insert(8 + 25, std::string("\0\0\0\0\x01\x02" "BC\0\0\0\0", 12));  // after the signature and IHDR
  write_bytes(dir / "chunk.png", odd_chunk);
  msg = message_of<IoError>([&] { (void)load_image(dir / "chunk.png"); });
  CHECK(contains(msg, "corrupt or truncated PNG (??BC"));
  CHECK(std::ranges::all_of(msg, [](char c) { return c >= 0x20 && c <= 0x7e; }));
  // A PNG cut inside its pixel data: stb reports it, the message names the format.
  const std::string png = plora::test::read_bytes(kData / "rgb_7x5.png");
  write_bytes(dir / "cut.png", png.substr(0, png.size() / 2));
  CHECK(contains(message_of<IoError>([&] { (void)load_image(dir / "cut.png"); }), "corrupt or truncated PNG"));
  // A PNG signature and nothing readable after it: a PNG fault, not the last format stb tried.
  write_bytes(dir / "header.png", png.substr(0, 12));
  CHECK(message_of<IoError>([&] { (void)load_image(dir / "header.png"); }) ==
        "cannot decode image '" + (dir / "header.png").string() + "': corrupt PNG header (no size can be read from it)");
}

TEST_CASE("bilinear resize on a hand-computed row (PIL's antialiased triangle filter)") {
  // 1 x 4 -> 1 x 2: scale 2, support 2. Output 0 has centre 1.0 and taps x = 0, 1, 2
  // with weights tri((x - 1 + 0.5) / 2) = 0.75, 0.75, 0.25 -> (0 * .75 + 10 * .75 + 20 * .25) / 1.75
  // = 50 / 7 = 7.14 -> 7; output 1 (centre 3.0): taps 1, 2, 3 with 0.25, 0.75, 0.75
  // -> 40 / 1.75 = 22.86 -> 23. torch's align_corners=False would give 5 and 25.
  Image8 row(1, 1, 4);
  row.values = {0, 10, 20, 30};
  CHECK(resize_bilinear(row, 1, 2).values == std::vector<std::uint8_t>{7, 23});
  // 1 x 2 -> 1 x 4 (upsizing): centres 0.25, 0.75, 1.25, 1.75 -> weights like
  // align_corners=False with edge clamping: 0, 0.25 * 100 = 25, 75, 100.
  Image8 two(1, 1, 2);
  two.values = {0, 100};
  CHECK(resize_bilinear(two, 1, 4).values == std::vector<std::uint8_t>{0, 25, 75, 100});
  // The vertical pass is the same filter: a 4 x 1 column.
  Image8 column(1, 4, 1);
  column.values = {0, 10, 20, 30};
  CHECK(resize_bilinear(column, 2, 1).values == std::vector<std::uint8_t>{7, 23});
  // Nearest: floor((i + 0.5) * 4 / 2) = 1, 3.
  CHECK(resize_nearest(row, 1, 2).values == std::vector<std::uint8_t>{10, 30});
  CHECK_THROWS_AS((void)resize_bilinear(row, 0, 2), ValueError);
}

TEST_CASE("resizes equal Pillow's, level for level") {
  const auto reference = SafetensorsFile::open(kData / "image_reference.safetensors");
  const Image8 source = from_hwc(reference, "rgb");
  // The 8-bit fixed-point path is replicated, so the results are identical.
  CHECK(max_level_diff(resize_bilinear(source, 3, 4), from_hwc(reference, "bilinear_3x4")) == 0);
  CHECK(max_level_diff(resize_bilinear(source, 9, 11), from_hwc(reference, "bilinear_9x11")) == 0);
  // Height shrinks while width grows: Pillow 13 (PR #9549) runs the vertical
  // pass first here, Pillow <= 12 and plora the horizontal one; the 8-bit
  // rounding between the passes then differs by at most one level.
  CHECK(max_level_diff(resize_bilinear(source, 2, 13), from_hwc(reference, "bilinear_2x13")) <= 1);
  CHECK(max_level_diff(resize_nearest(source, 9, 4), from_hwc(reference, "nearest_9x4")) == 0);
  CHECK(max_level_diff(resize_nearest(source, 3, 16), from_hwc(reference, "nearest_3x16")) == 0);
}

TEST_CASE("preprocessing equals ViTImageProcessor's pixel_values") {
  const auto reference = SafetensorsFile::open(kData / "image_reference.safetensors");
  const Image8 image = load_image(kData / "rgb_7x5.png");
  for (const auto& [h, w] : {std::pair<Index, Index>{8, 6}, {3, 4}}) {
    PreprocessorConfig config;
    config.height = h;
    config.width = w;
    const std::vector<float> ours = preprocess(image, config, "rgb_7x5.png");
    const HostMatrix expected = reference.load("vit_" + std::to_string(h) + "x" + std::to_string(w), 3, h * w);
    REQUIRE(ours.size() == static_cast<std::size_t>(expected.size()));
    // Same uint8 resize, same double rescale and float normalise: equal up to
    // one rounding of values in [-1, 1] (2^-24 relative).
    double worst = 0;
    for (std::size_t i = 0; i < ours.size(); ++i) worst = std::max(worst, double(std::abs(ours[i] - expected.values()[i])));
    CHECK(worst <= 1.2e-7);
  }
}

TEST_CASE("rescale and normalise by hand, per channel and broadcast") {
  Image8 image(2, 1, 2);
  image.values = {0, 255, 51, 102};
  PreprocessorConfig config;
  config.do_resize = false;
  config.image_mean = {0.5f, 0.25f};
  config.image_std = {0.5f, 0.25f};
  const auto out = preprocess(image, config, "hand");
  // c0: (0 - .5) / .5 = -1, (1 - .5) / .5 = 1; c1: (0.2 - .25) / .25 = -0.2, (0.4 - .25) / .25 = 0.6.
  CHECK(out[0] == -1.0f);
  CHECK(out[1] == 1.0f);
  CHECK(out[2] == doctest::Approx(-0.2).epsilon(1e-6));
  CHECK(out[3] == doctest::Approx(0.6).epsilon(1e-6));
  config.do_normalize = false;
  config.rescale_factor = 0.5;
  CHECK(preprocess(image, config, "hand") == std::vector<float>{0.0f, 127.5f, 25.5f, 51.0f});
  config.do_rescale = false;
  CHECK(preprocess(image, config, "hand") == std::vector<float>{0.0f, 255.0f, 51.0f, 102.0f});

  config.do_normalize = true;
  config.image_mean = {0.5f, 0.5f, 0.5f};
  CHECK(contains(message_of<ValueError>([&] { (void)preprocess(image, config, "odd.png"); }), "odd.png"));
  config.image_mean = {0.0f};  // one value broadcasts over channels
  config.image_std = {2.0f};
  CHECK(preprocess(image, config, "hand") == std::vector<float>{0.0f, 127.5f, 25.5f, 51.0f});
  config.do_resize = true;
  config.resample = 3;  // bicubic: not implemented
  CHECK(contains(message_of<ValueError>([&] { (void)preprocess(image, config, "odd.png"); }), "resample"));
}

TEST_CASE("shortest_edge keeps the aspect ratio like transformers") {
  PreprocessorConfig config;
  config.shortest_edge = 4;
  CHECK(output_size(config, 10, 5, "a.png") == std::pair<Index, Index>{8, 4});
  CHECK(output_size(config, 5, 7, "a.png") == std::pair<Index, Index>{4, 5});  // int(4 * 7 / 5) = 5
  // A long strip would grow its long side without bound: kMaxImageSide is the limit, inclusive.
  CHECK(output_size(config, 1, kMaxImageSide / 4, "strip.png") == std::pair<Index, Index>{4, kMaxImageSide});
  CHECK(contains(message_of<ValueError>([&] { (void)output_size(config, 1, kMaxImageSide / 4 + 1, "strip.png"); }),
                 "preprocessing 'strip.png': a 1 x 4097 image resized to a shortest edge of 4 would be 16388 pixels"));
  config.do_resize = false;
  CHECK(output_size(config, 5, 7, "a.png") == std::pair<Index, Index>{5, 7});
}
