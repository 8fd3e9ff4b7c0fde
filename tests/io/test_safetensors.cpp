// safetensors: the reference library's file read back, our writer's file equal
// to the reference library's bytes, round trips, and every malformation
// rejected with an error that names the file and the tensor.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "io/io_support.hpp"
#include "plora/io/safetensors.hpp"

using namespace plora;
using namespace plora::io;
using plora::test::contains;
using plora::test::message_of;
using plora::test::read_bytes;
using plora::test::TempDir;
using plora::test::write_bytes;

namespace {
const std::filesystem::path kReference = std::filesystem::path(PLORA_TEST_DATA_DIR) / "io/reference.safetensors";

/// A safetensors file from a raw header string (no padding) and data bytes; the
/// length prefix is the header's size unless `length` overrides it.
std::string crafted(std::string_view header, std::string_view data, std::uint64_t length) {
  std::string bytes(8, '\0');
  std::memcpy(bytes.data(), &length, 8);
  return bytes.append(header).append(data);
}
std::string crafted(std::string_view header, std::string_view data = {}) {
  return crafted(header, data, header.size());
}

/// Writes `bytes` to dir/name and returns the error message opening it gives.
template <class E = IoError>
std::string open_error(const TempDir& dir, std::string_view bytes, std::string_view name = "bad.safetensors") {
  const auto path = dir / name;
  write_bytes(path, bytes);
  return message_of<E>([&] { (void)SafetensorsFile::open(path); });
}
}  // namespace

TEST_CASE("F16 and BF16 widen exactly, by hand-computed bit patterns") {
  using io::detail::bf16_to_float;
  using io::detail::half_to_float;
  CHECK(half_to_float(0x3C00) == 1.0f);               // 0 01111 0000000000
  CHECK(half_to_float(0xC100) == -2.5f);              // 1 10000 0100000000 = -1.25 * 2
  CHECK(half_to_float(0x7BFF) == 65504.0f);           // largest finite half
  CHECK(half_to_float(0x0400) == std::ldexp(1.0f, -14));  // smallest normal
  CHECK(half_to_float(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(half_to_float(0x0300) == 0.75f * std::ldexp(1.0f, -14));  // subnormal 0.11b * 2^-14
  CHECK(std::bit_cast<std::uint32_t>(half_to_float(0x8000)) == 0x80000000u);  // -0 keeps its sign
  CHECK(half_to_float(0xFC00) == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(half_to_float(0x7E00)));
  CHECK(bf16_to_float(0x3F80) == 1.0f);
  CHECK(bf16_to_float(0xC020) == -2.5f);
  CHECK(bf16_to_float(0x4049) == 3.140625f);  // 0x40490000
  CHECK(bf16_to_float(0x7F80) == std::numeric_limits<float>::infinity());
}

TEST_CASE("a file written by the Python safetensors library loads with every dtype") {
  const auto file = SafetensorsFile::open(kReference);
  CHECK(file.names() == std::vector<std::string>{"bf16", "bool", "conv", "empty", "f16", "f32", "f64", "i32", "i64",
                                                  "scalar", "u8"});
  CHECK(file.metadata() == std::map<std::string, std::string>{{"format", "pt"}, {"note", "plora fixture"}});
  CHECK(file.contains("f32"));
  CHECK_FALSE(file.contains("F32"));
  CHECK(file.info("conv").dtype == "F32");
  CHECK(file.info("conv").shape == std::vector<Index>{2, 1, 2, 2});
  CHECK(file.info("bf16").dtype == "BF16");
  CHECK(file.info("scalar").shape.empty());

  const HostMatrix f32 = file.load("f32");
  REQUIRE(f32.rows() == 2);
  REQUIRE(f32.cols() == 3);
  CHECK(f32.values() == HostMatrix::Values{-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f});
  const HostMatrix f16 = file.load("f16");  // 1-D -> 1 x n
  REQUIRE(f16.rows() == 1);
  CHECK(f16.values() == HostMatrix::Values{1.0f, -2.5f, 65504.0f, std::ldexp(1.0f, -24)});
  CHECK(file.load("bf16").values() == HostMatrix::Values{1.0f, -2.5f, 3.140625f, std::ldexp(1.0f, -10)});
  CHECK(file.load("f64").values() == HostMatrix::Values{0.25f, -8.0f});
  const HostMatrix scalar = file.load("scalar");
  CHECK((scalar.rows() == 1 && scalar.cols() == 1 && scalar(0, 0) == 3.5f));
  const HostMatrix empty = file.load("empty");
  CHECK((empty.rows() == 0 && empty.cols() == 4));

  // [2, 1, 2, 2] holding 0..7: natural view 4 x 2, and any leading/trailing split.
  const HostMatrix natural = file.load("conv");
  CHECK((natural.rows() == 4 && natural.cols() == 2));
  const HostMatrix conv = file.load("conv", 2, 4);
  REQUIRE((conv.rows() == 2 && conv.cols() == 4));
  for (Index i = 0; i < 8; ++i) CHECK(conv(i / 4, i % 4) == float(i));
  CHECK(file.load("conv", 1, 8).size() == 8);
  CHECK(file.load("conv", 8, 1).size() == 8);
  CHECK(file.load("scalar", 1, 1)(0, 0) == 3.5f);

  CHECK(file.load_ints("i64") == std::vector<std::int64_t>{-1, 0, std::int64_t{1} << 40});
  CHECK(file.load_ints("i32") == std::vector<std::int64_t>{7, -7});
  CHECK(file.load_ints("u8") == std::vector<std::int64_t>{0, 255});
  CHECK(file.load_ints("bool") == std::vector<std::int64_t>{1, 0, 1});
}

TEST_CASE("loading errors name the file, the tensor and the shapes") {
  const auto file = SafetensorsFile::open(kReference);
  const std::string path = kReference.string();
  std::string msg = message_of<ShapeError>([&] { (void)file.load("conv", 4, 3); });
  CHECK(contains(msg, path));
  CHECK(contains(msg, "'conv'"));
  CHECK(contains(msg, "4 x 3"));
  CHECK(contains(msg, "[2, 1, 2, 2]"));
  CHECK_THROWS_AS((void)file.load("f32", 3, 2), ShapeError);  // same count, incompatible shape

  msg = message_of<IoError>([&] { (void)file.load("missing.weight"); });
  CHECK(contains(msg, path));
  CHECK(contains(msg, "'missing.weight'"));
  msg = message_of<IoError>([&] { (void)file.info("nope"); });
  CHECK(contains(msg, "'nope'"));

  msg = message_of<IoError>([&] { (void)file.load("i64"); });
  CHECK(contains(msg, "'i64'"));
  CHECK(contains(msg, "I64"));
  msg = message_of<IoError>([&] { (void)file.load_ints("f32"); });
  CHECK(contains(msg, "'f32'"));
  CHECK(contains(msg, path));
}

TEST_CASE("load_finite refuses a tensor holding NaN or Inf, naming the tensor and the entry") {
  TempDir dir;
  HostMatrix weight(2, 3, {0.5f, 1.0f, -2.0f, 3.0f, 4.0f, 5.0f});
  weight(1, 1) = std::numeric_limits<float>::quiet_NaN();
  SafetensorsWriter writer;
  writer.add("layer.weight", weight);
  writer.add("layer.bias", HostMatrix(1, 3, {1.0f, 2.0f, std::numeric_limits<float>::infinity()}));
  writer.add("ok", HostMatrix(1, 2, {1.0f, 2.0f}));
  writer.write(dir / "model.safetensors");
  const auto file = SafetensorsFile::open(dir / "model.safetensors");
  CHECK(file.load("layer.weight", 2, 3).rows() == 2);  // a file may hold NaN; a model weight may not
  std::string msg = message_of<NumericError>([&] { (void)file.load_finite("layer.weight", 2, 3); });
  CHECK(contains(msg, (dir / "model.safetensors").string()));
  CHECK(contains(msg, "tensor 'layer.weight': entry 4 (row 1) is nan"));
  CHECK(contains(message_of<NumericError>([&] { (void)file.load_finite("layer.bias", 1, 3); }), "entry 2 (row 0) is inf"));
  CHECK(file.load_finite("ok", 1, 2)(0, 1) == 2.0f);
  // Without a shape: the file's own, as load(name).
  CHECK(contains(message_of<NumericError>([&] { (void)file.load_finite("layer.weight"); }), "entry 4 (row 1) is nan"));
  const HostMatrix ok = file.load_finite("ok");
  CHECK((ok.rows() == 1 && ok.cols() == 2 && ok(0, 0) == 1.0f && ok(0, 1) == 2.0f));
}

TEST_CASE("a missing name that differs by a module prefix gets a hint") {
  TempDir dir;
  SafetensorsWriter writer;
  writer.add("vit.layernorm.weight", {2}, std::vector<float>{1, 2});
  writer.write(dir / "w.safetensors");
  const auto file = SafetensorsFile::open(dir / "w.safetensors");
  const std::string msg = message_of<IoError>([&] { (void)file.load("layernorm.weight"); });
  CHECK(contains(msg, "did you mean 'vit.layernorm.weight'"));
}

TEST_CASE("the writer's bytes equal the Python library's for the same tensors") {
  TempDir dir;
  SafetensorsWriter writer;
  writer.add("weight", HostMatrix(2, 3, {1, 2, 3, 4, 5, 6}));
  writer.add("bias", {3}, std::vector<float>{0.5f, -0.5f, 0.25f});
  writer.add_ints("step", {1}, std::vector<std::int64_t>{42});
  writer.set_metadata("format", "pt");
  writer.write(dir / "ours.safetensors");
  const std::string ours = read_bytes(dir / "ours.safetensors");
  const std::string reference = read_bytes(std::filesystem::path(PLORA_TEST_DATA_DIR) / "io/writer_reference.safetensors");
  REQUIRE(!reference.empty());
  CHECK(ours == reference);

  // Independently of the fixture: the header is space-padded to a multiple of
  // 8 and the I64 tensor comes first (decreasing dtype, then name).
  std::uint64_t length = 0;
  std::memcpy(&length, ours.data(), 8);
  CHECK(length % 8 == 0);
  const std::string header = ours.substr(8, length);
  CHECK(header.find("\"step\"") < header.find("\"bias\""));
  CHECK(header.find("\"bias\"") < header.find("\"weight\""));
  CHECK(header.find("__metadata__") < header.find("\"step\""));
}

TEST_CASE("writer round trip keeps every bit, shapes and metadata") {
  TempDir dir;
  const std::vector<float> odd = {std::numeric_limits<float>::quiet_NaN(), -0.0f, std::numeric_limits<float>::denorm_min(),
                                  -std::numeric_limits<float>::infinity(), 1e30f, 1.0f / 3.0f};
  SafetensorsWriter writer;
  writer.add("a.odd", {1, 2, 3}, odd);
  writer.add("b.scalar", {}, std::vector<float>{7.0f});
  writer.add("c.empty", {0, 5}, std::span<const float>{});
  writer.add_ints("d.ints", {2, 2}, std::vector<std::int64_t>{std::numeric_limits<std::int64_t>::min(), -1, 0,
                                                            std::numeric_limits<std::int64_t>::max()});
  writer.set_metadata("format", "pt");
  writer.set_metadata("epoch", "3");
  const auto path = dir / "round.safetensors";
  writer.write(path);
  const auto file = SafetensorsFile::open(path);
  CHECK(file.size() == 4);
  CHECK(file.info("a.odd").shape == std::vector<Index>{1, 2, 3});
  const HostMatrix back = file.load("a.odd", 2, 3);
  for (std::size_t i = 0; i < odd.size(); ++i)
    CHECK(std::bit_cast<std::uint32_t>(back.values()[i]) == std::bit_cast<std::uint32_t>(odd[i]));
  CHECK(file.load("b.scalar")(0, 0) == 7.0f);
  CHECK(file.info("c.empty").shape == std::vector<Index>{0, 5});
  CHECK(file.load("c.empty").rows() == 0);
  CHECK(file.load_ints("d.ints") == std::vector<std::int64_t>{std::numeric_limits<std::int64_t>::min(), -1, 0,
                                                             std::numeric_limits<std::int64_t>::max()});
  CHECK(file.metadata() == std::map<std::string, std::string>{{"epoch", "3"}, {"format", "pt"}});
}

TEST_CASE("a loaded tensor's file pages are released, and the file reads the same afterwards") {
  // load() and load_ints() release the whole pages of a tensor they copied
  // (madvise); a later read must map the file's bytes in again, for that
  // tensor and its neighbours.
  TempDir dir;
  std::vector<float> wide(10000);  // ~10 pages, not page-aligned in the file
  for (std::size_t i = 0; i < wide.size(); ++i) wide[i] = static_cast<float>(i) * 0.5f - 7.0f;
  SafetensorsWriter writer;
  writer.add("a.before", {3}, std::vector<float>{1.0f, 2.0f, 3.0f});
  writer.add("b.wide", {100, 100}, wide);
  writer.add("c.after", {2}, std::vector<float>{-4.0f, 5.0f});
  std::vector<std::int64_t> ids(3000);  // ~6 pages, after the float tensors
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<std::int64_t>(i * i) - 1000;
  writer.add_ints("d.ids", {3000}, ids);
  const auto path = dir / "pages.safetensors";
  writer.write(path);
  const auto file = SafetensorsFile::open(path);
  const std::string digest = file.content_digest();
  for (int pass = 0; pass < 2; ++pass) {
    CAPTURE(pass);
    CHECK(std::ranges::equal(file.load("b.wide").values(), wide));
    CHECK(std::ranges::equal(file.load("a.before").values(), std::vector<float>{1.0f, 2.0f, 3.0f}));
    CHECK(std::ranges::equal(file.load("c.after").values(), std::vector<float>{-4.0f, 5.0f}));
    CHECK(file.load_ints("d.ids") == ids);
  }
  CHECK(file.content_digest() == digest);
}

TEST_CASE("content_digest: the same tensors digest alike, any tensor change differs") {
  TempDir dir;
  const std::vector<float> values = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f};
  const auto written = [&](std::string_view name, std::string_view second, std::vector<Index> shape,
                           std::vector<float> v, std::string metadata) {
    SafetensorsWriter writer;
    writer.add("a.weight", std::move(shape), v);
    writer.add("b.bias", {2}, std::vector<float>{0.5f, -0.5f});
    if (!second.empty()) writer.add(std::string(second), {1}, std::vector<float>{9.0f});
    writer.set_metadata("note", std::move(metadata));
    const auto path = dir / name;
    writer.write(path);
    return SafetensorsFile::open(path).content_digest();
  };
  const std::string base = written("base.safetensors", "", {2, 3}, values, "first");
  CHECK(base.size() == 16);
  CHECK(written("metadata.safetensors", "", {2, 3}, values, "second") == base);  // metadata is not content
  std::vector<float> flipped = values;
  flipped[5] = std::bit_cast<float>(std::bit_cast<std::uint32_t>(flipped[5]) ^ 1u);  // the last bit of the last value
  CHECK(written("flipped.safetensors", "", {2, 3}, flipped, "first") != base);
  CHECK(written("reshaped.safetensors", "", {3, 2}, values, "first") != base);  // the same bytes, another shape
  CHECK(written("extra.safetensors", "c.extra", {2, 3}, values, "first") != base);
}

TEST_CASE("writer rejects bad tensors") {
  SafetensorsWriter writer;
  writer.add("x", {2}, std::vector<float>{1, 2});
  CHECK_THROWS_AS(writer.add("x", {1}, std::vector<float>{1}), ValueError);
  CHECK_THROWS_AS(writer.add_ints("__metadata__", {1}, std::vector<std::int64_t>{1}), ValueError);
  const std::string msg = message_of<ShapeError>([&] { writer.add("y", {2, 2}, std::vector<float>{1, 2, 3}); });
  CHECK(contains(msg, "'y'"));
  CHECK(contains(msg, "4 values"));
  CHECK_THROWS_AS(writer.add("z", {-1}, std::span<const float>{}), ShapeError);
  CHECK(writer.size() == 1);
}

TEST_CASE("atomic writes replace the file, and a failed write leaves the old one") {
  TempDir dir;
  const auto path = dir / "state.bin";
  write_file_atomically(path, std::string_view("first"));
  write_file_atomically(path, std::string_view("second version"));
  CHECK(read_bytes(path) == "second version");

  // The rename cannot replace a non-empty directory: the write must fail with
  // an IoError naming the path, keep the directory, and leave no temp file.
  const auto blocked = dir / "blocked";
  write_bytes(blocked / "keep.txt", "kept");
  const std::string msg = message_of<IoError>([&] { write_file_atomically(blocked, std::string_view("new")); });
  CHECK(contains(msg, blocked.string()));
  CHECK(read_bytes(blocked / "keep.txt") == "kept");
  int entries = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(dir.path())) ++entries;
  CHECK(entries == 2);  // state.bin and blocked/

  // A missing directory fails before anything is written.
  CHECK_THROWS_AS(write_file_atomically(dir / "no/such/dir/file", std::string_view("x")), IoError);
}

TEST_CASE("malformed files are rejected with the file and the tensor named") {
  TempDir dir;
  const std::string path = (dir / "bad.safetensors").string();
  const std::string four_floats(16, '\0');

  SUBCASE("missing file") {
    const std::string msg = message_of<IoError>([&] { (void)SafetensorsFile::open(dir / "absent.safetensors"); });
    CHECK(contains(msg, "absent.safetensors"));
  }
  SUBCASE("too short for the length prefix") { CHECK(contains(open_error(dir, "abc"), path)); }
  SUBCASE("header length beyond the file") {
    const std::string msg = open_error(dir, crafted("{}", "", 1000));
    CHECK(contains(msg, path));
    CHECK(contains(msg, "1000"));
  }
  SUBCASE("header length over 100 MB") {
    CHECK(contains(open_error(dir, crafted("{}", "", 200'000'000)), "100 MB"));
  }
  SUBCASE("truncated data") {
    const std::string msg =
        open_error(dir, crafted(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", four_floats.substr(0, 12)));
    CHECK(contains(msg, path));
    CHECK(contains(msg, "'w'"));
  }
  SUBCASE("trailing bytes after the last tensor") {
    const std::string msg =
        open_error(dir, crafted(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})", four_floats));
    CHECK(contains(msg, path));
    CHECK(contains(msg, "16"));
  }
  SUBCASE("bad JSON") { CHECK(contains(open_error(dir, crafted(R"({"w": {"dtype": )")), path)); }
  SUBCASE("not an object") { CHECK(contains(open_error(dir, crafted("[1, 2]  ")), path)); }
  SUBCASE("entry not an object") { CHECK(contains(open_error(dir, crafted(R"({"w": 3})")), "'w'")); }
  SUBCASE("unknown dtype") {
    const std::string msg = open_error(dir, crafted(R"({"w":{"dtype":"F7","shape":[4],"data_offsets":[0,16]}})", four_floats));
    CHECK(contains(msg, path));
    CHECK(contains(msg, "'w'"));
    CHECK(contains(msg, "F7"));
  }
  SUBCASE("negative shape") {
    CHECK(contains(open_error(dir, crafted(R"({"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", four_floats)),
                   "'w'"));
  }
  SUBCASE("missing data_offsets") {
    const std::string msg = open_error(dir, crafted(R"({"w":{"dtype":"F32","shape":[4]}})", four_floats));
    CHECK(contains(msg, "'w'"));
    CHECK(contains(msg, "data_offsets"));
  }
  SUBCASE("size does not match shape times dtype size") {
    const std::string msg = open_error(dir, crafted(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", four_floats));
    CHECK(contains(msg, "'w'"));
    CHECK(contains(msg, "12 bytes"));
  }
  SUBCASE("offsets beyond the buffer") {
    const std::string msg = open_error(dir, crafted(R"({"w":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})", four_floats));
    CHECK(contains(msg, path));
    CHECK(contains(msg, "'w'"));
  }
  SUBCASE("reversed offsets") {
    CHECK(contains(open_error(dir, crafted(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[16,0]}})", four_floats)),
                   "'w'"));
  }
  SUBCASE("overlapping tensors") {
    const std::string msg = open_error(
        dir, crafted(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                     four_floats.substr(0, 12)));
    CHECK(contains(msg, "'b'"));
    CHECK(contains(msg, "overlap"));
  }
  SUBCASE("a hole between tensors") {
    const std::string msg = open_error(
        dir, crafted(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                     four_floats));
    CHECK(contains(msg, "'b'"));
    CHECK(contains(msg, "hole"));
  }
  SUBCASE("duplicate names") {
    const std::string msg = open_error(
        dir, crafted(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                     four_floats));
    CHECK(contains(msg, path));
    CHECK(contains(msg, "'a'"));
    CHECK(contains(msg, "more than once"));
  }
  SUBCASE("metadata that is not a string map") {
    const std::string msg = open_error(dir, crafted(R"({"__metadata__":{"epoch":3}})"));
    CHECK(contains(msg, path));
    CHECK(contains(msg, "'epoch'"));
  }
  SUBCASE("padded header and an empty file of tensors are valid") {
    write_bytes(dir / "ok.safetensors", crafted(R"({"__metadata__":{"k":"v"}}      )"));
    const auto file = SafetensorsFile::open(dir / "ok.safetensors");
    CHECK(file.size() == 0);
    CHECK(file.metadata().at("k") == "v");
  }
}
