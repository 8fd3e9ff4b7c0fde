// config.json / preprocessor_config.json parsing: values, transformers'
// defaults for absent fields, and errors naming the file and the field.
#include <doctest/doctest.h>

#include <limits>

#include "io/io_support.hpp"
#include "plora/io/hf_config.hpp"

using namespace plora;
using namespace plora::io;
using nlohmann::json;
using plora::test::contains;
using plora::test::message_of;
using plora::test::TempDir;
using plora::test::write_bytes;

TEST_CASE("ViT config.json: every field, labels from id2label") {
  TempDir dir;
  write_bytes(dir / "config.json", R"({
    "architectures": ["ViTForImageClassification"], "model_type": "vit",
    "hidden_size": 192, "num_hidden_layers": 3, "num_attention_heads": 3, "intermediate_size": 768,
    "hidden_act": "gelu_new", "layer_norm_eps": 1e-6, "image_size": 32, "patch_size": 4, "num_channels": 1,
    "qkv_bias": false, "id2label": {"1": "dog", "0": "cat", "2": "bird"}, "label2id": {"cat": 0}
  })");
  const ViTConfig c = load_vit_config(dir / "config.json");
  CHECK(c.hidden_size == 192);
  CHECK(c.num_hidden_layers == 3);
  CHECK(c.num_attention_heads == 3);
  CHECK(c.intermediate_size == 768);
  CHECK(c.hidden_act == "gelu_new");
  CHECK(c.layer_norm_eps == 1e-6f);
  CHECK(c.image_size == 32);
  CHECK(c.patch_size == 4);
  CHECK(c.num_channels == 1);
  CHECK_FALSE(c.qkv_bias);
  CHECK(c.num_labels == 3);
  CHECK(c.id2label == std::vector<std::string>{"cat", "dog", "bird"});
}

TEST_CASE("ViT config: absent fields take transformers' ViTConfig defaults") {
  const ViTConfig c = parse_vit_config(json::parse(R"({"num_labels": 5, "hidden_act": null})"));
  CHECK(c.hidden_size == 768);
  CHECK(c.num_hidden_layers == 12);
  CHECK(c.num_attention_heads == 12);
  CHECK(c.intermediate_size == 3072);
  CHECK(c.hidden_act == "gelu");
  CHECK(c.layer_norm_eps == 1e-12f);
  CHECK(c.image_size == 224);
  CHECK(c.patch_size == 16);
  CHECK(c.num_channels == 3);
  CHECK(c.qkv_bias);
  CHECK(c.num_labels == 5);
  CHECK(c.id2label.empty());
  CHECK(parse_vit_config(json::object()).num_labels == 2);
  // id2label wins over a conflicting num_labels, as in PretrainedConfig.
  CHECK(parse_vit_config(json::parse(R"({"num_labels": 5, "id2label": {"0": "a", "1": "b"}})")).num_labels == 2);
}

TEST_CASE("config errors name the file and the field") {
  TempDir dir;
  const auto path = dir / "config.json";
  write_bytes(path, R"({"hidden_size": "768"})");
  std::string msg = message_of<IoError>([&] { (void)load_vit_config(path); });
  CHECK(contains(msg, path.string()));
  CHECK(contains(msg, "'hidden_size'"));
  CHECK(contains(msg, "integer"));

  CHECK(contains(message_of<IoError>([] { (void)parse_vit_config(json::parse(R"({"qkv_bias": 1})"), "vit.json"); }),
                 "'qkv_bias'"));
  CHECK(contains(message_of<IoError>([] { (void)parse_vit_config(json::parse(R"({"layer_norm_eps": "x"})")); }),
                 "'layer_norm_eps'"));
  CHECK(contains(message_of<IoError>([] { (void)parse_vit_config(json::parse(R"({"patch_size": 16.5})")); }),
                 "'patch_size'"));
  CHECK(contains(message_of<IoError>([] { (void)parse_vit_config(json::parse(R"({"id2label": {"x": "a"}})")); }),
                 "'id2label'"));
  // "00" would alias "0" and silently drop one of the two names.
  const auto aliased = json::parse(R"({"id2label": {"0": "a", "00": "b", "1": "c"}})");
  CHECK(contains(message_of<IoError>([&] { (void)parse_vit_config(aliased); }), "'id2label'"));
  CHECK(contains(message_of<ValueError>([] { (void)parse_vit_config(json::parse(R"({"id2label": {"0": "a", "2": "b"}})")); }),
                 "0..n-1"));
  msg = message_of<ValueError>([] { (void)parse_vit_config(json::parse(R"({"hidden_size": 100})"), "vit.json"); });
  CHECK(contains(msg, "vit.json"));
  CHECK(contains(msg, "num_attention_heads"));
  CHECK(contains(message_of<ValueError>([] { (void)parse_vit_config(json::parse(R"({"num_hidden_layers": 0})")); }),
                 "'num_hidden_layers'"));

  write_bytes(path, R"({"hidden_size": )");
  msg = message_of<IoError>([&] { (void)load_vit_config(path); });
  CHECK(contains(msg, path.string()));
  CHECK(contains(message_of<IoError>([&] { (void)load_vit_config(dir / "absent.json"); }), "absent.json"));
  // A directory opens as a stream and fails only at its first read, naming nothing: refused up front.
  std::filesystem::create_directories(dir / "dir.json");
  CHECK(contains(message_of<IoError>([&] { (void)load_vit_config(dir / "dir.json"); }),
                 "dir.json': it is not a regular file but a directory"));
  CHECK_THROWS_AS((void)parse_vit_config(json::parse("[1]")), IoError);

  // Another architecture's config: named by its model_type (absent: taken as the parser's own).
  CHECK(contains(message_of<ValueError>([] { (void)parse_vit_config(json::parse(R"({"model_type": "deit"})"), "c.json"); }),
                 "'c.json': model_type 'deit' is not ViT's 'vit'"));
  CHECK(contains(message_of<ValueError>([] { (void)parse_deberta_v2_config(json::parse(R"({"model_type": "deberta"})")); }),
                 "model_type 'deberta' is not DeBERTa-v2/v3's 'deberta-v2'"));
  CHECK(contains(message_of<IoError>([] { (void)parse_vit_config(json::parse(R"({"model_type": 1})")); }), "'model_type'"));
  CHECK(parse_vit_config(json::parse(R"({"model_type": "vit"})")).hidden_size == 768);
}

TEST_CASE("ViT config: image sizes whose pixel count overflows are refused") {
  // (2^63 - 8)^2 wraps to 64 in 64-bit arithmetic: every later check would pass.
  std::string msg = message_of<ValueError>(
      [] { (void)parse_vit_config(json::parse(R"({"image_size": 9223372036854775800, "patch_size": 2})"), "v.json"); });
  CHECK(contains(msg, "'v.json'"));
  CHECK(contains(msg, "'image_size'"));
  // 32768^2 = 2^30 values per channel: one channel fits INT32_MAX, three do not.
  CHECK(parse_vit_config(json::parse(R"({"image_size": 32768, "num_channels": 1})")).image_size == 32768);
  msg = message_of<ValueError>([] { (void)parse_vit_config(json::parse(R"({"image_size": 32768})")); });
  CHECK(contains(msg, "num_channels 3"));
  // Patches tile the image exactly, as the patch embedding requires: said here, with the file named.
  msg = message_of<ValueError>([] { (void)parse_vit_config(json::parse(R"({"image_size": 30, "patch_size": 4})"), "v.json"); });
  CHECK(contains(msg, "'v.json': image_size 30 is not a multiple of patch_size 4"));
}

TEST_CASE("DeBERTa-v3-base config.json as published") {
  // The fields of microsoft/deberta-v3-base's config.json.
  const DebertaV2Config c = parse_deberta_v2_config(json::parse(R"({
    "model_type": "deberta-v2", "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
    "max_position_embeddings": 512, "relative_attention": true, "position_buckets": 256,
    "norm_rel_ebd": "layer_norm", "share_att_key": true, "pos_att_type": "p2c|c2p", "layer_norm_eps": 1e-7,
    "max_relative_positions": -1, "position_biased_input": false, "num_attention_heads": 12,
    "num_hidden_layers": 12, "type_vocab_size": 0, "vocab_size": 128100
  })"));
  CHECK(c.hidden_size == 768);
  CHECK(c.num_hidden_layers == 12);
  CHECK(c.num_attention_heads == 12);
  CHECK(c.intermediate_size == 3072);
  CHECK(c.vocab_size == 128100);
  CHECK(c.relative_attention);
  CHECK(c.position_buckets == 256);
  CHECK(c.norm_rel_ebd == "layer_norm");
  CHECK(c.share_att_key);
  CHECK(c.pos_att_type == std::vector<std::string>{"p2c", "c2p"});
  CHECK(c.layer_norm_eps == 1e-7f);
  CHECK(c.max_relative_positions == -1);
  CHECK_FALSE(c.position_biased_input);
  CHECK(c.type_vocab_size == 0);
  CHECK(c.cls_dropout < 0.0f);  // absent: hidden_dropout_prob applies
  CHECK(c.num_labels == 2);
  CHECK(c.problem_type.empty());
}

TEST_CASE("DeBERTa config: absent fields take transformers' class defaults, not v3's") {
  const DebertaV2Config c = parse_deberta_v2_config(json::object());
  CHECK(c.hidden_size == 1536);
  CHECK(c.num_hidden_layers == 24);
  CHECK(c.num_attention_heads == 24);
  CHECK(c.intermediate_size == 6144);
  CHECK_FALSE(c.relative_attention);
  CHECK(c.position_biased_input);
  CHECK(c.pos_att_type.empty());
  CHECK_FALSE(c.share_att_key);
  CHECK(c.position_buckets == -1);
  CHECK(c.norm_rel_ebd == "none");
  CHECK(c.max_relative_positions == -1);
  CHECK(c.embedding_size == -1);
  CHECK(c.pooler_hidden_size == -1);
  CHECK(c.pooler_dropout == 0.0f);
  CHECK(c.hidden_dropout_prob == doctest::Approx(0.1f));
}

TEST_CASE("DeBERTa config: pos_att_type forms, labels, problem_type, dropouts") {
  const DebertaV2Config list = parse_deberta_v2_config(json::parse(R"({
    "pos_att_type": ["c2p"], "cls_dropout": 0.2, "pooler_dropout": 0.05, "pooler_hidden_size": 512,
    "embedding_size": 128, "problem_type": "regression", "num_labels": 1, "pad_token_id": 0
  })"));
  CHECK(list.pos_att_type == std::vector<std::string>{"c2p"});
  CHECK(list.cls_dropout == doctest::Approx(0.2f));
  CHECK(list.pooler_dropout == doctest::Approx(0.05f));
  CHECK(list.pooler_hidden_size == 512);
  CHECK(list.embedding_size == 128);
  CHECK(list.problem_type == "regression");
  CHECK(list.num_labels == 1);
  CHECK(parse_deberta_v2_config(json::parse(R"({"pos_att_type": " C2P | p2c "})")).pos_att_type ==
        std::vector<std::string>{"c2p", "p2c"});
  CHECK(parse_deberta_v2_config(json::parse(R"({"id2label": {"0": "no", "1": "maybe", "2": "yes"}})")).num_labels == 3);

  std::string msg = message_of<ValueError>([] { (void)parse_deberta_v2_config(json::parse(R"({"pos_att_type": "p2c|p2p"})"), "d.json"); });
  CHECK(contains(msg, "d.json"));
  CHECK(contains(msg, "p2p"));
  CHECK(contains(message_of<IoError>([] { (void)parse_deberta_v2_config(json::parse(R"({"pos_att_type": 3})")); }),
                 "'pos_att_type'"));
  CHECK(contains(message_of<IoError>([] { (void)parse_deberta_v2_config(json::parse(R"({"relative_attention": "yes"})")); }),
                 "'relative_attention'"));
  CHECK(contains(message_of<ValueError>([] { (void)parse_deberta_v2_config(json::parse(R"({"problem_type": "ranking"})")); }),
                 "ranking"));
  CHECK_THROWS_AS((void)parse_deberta_v2_config(json::parse(R"({"problem_type": "single_label_classification", "num_labels": 1})")),
                  ValueError);
  CHECK_THROWS_AS((void)parse_deberta_v2_config(json::parse(R"({"conv_kernel_size": 3})")), ValueError);
  CHECK_THROWS_AS((void)parse_deberta_v2_config(json::parse(R"({"norm_rel_ebd": "batch_norm"})")), ValueError);
}

TEST_CASE("preprocessor_config.json: ViTImageProcessor's fields and defaults") {
  const PreprocessorConfig defaults = parse_preprocessor_config(json::object());
  CHECK(defaults.do_resize);
  CHECK((defaults.height == 224 && defaults.width == 224 && defaults.shortest_edge == 0));
  CHECK(defaults.resample == 2);
  CHECK(defaults.do_rescale);
  CHECK(defaults.rescale_factor == 1.0 / 255.0);
  CHECK(defaults.do_normalize);
  CHECK(defaults.image_mean == std::vector<float>{0.5f, 0.5f, 0.5f});
  CHECK(defaults.image_std == std::vector<float>{0.5f, 0.5f, 0.5f});

  // google/vit-base-patch16-224's file.
  const PreprocessorConfig vit = parse_preprocessor_config(json::parse(R"({
    "do_normalize": true, "do_resize": true, "image_processor_type": "ViTImageProcessor",
    "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2, "rescale_factor": 0.00392156862745098,
    "size": {"height": 224, "width": 224}
  })"));
  CHECK(vit.rescale_factor == 0.00392156862745098);
  const PreprocessorConfig other = parse_preprocessor_config(json::parse(R"({
    "do_resize": false, "size": {"shortest_edge": 256}, "resample": 0, "do_rescale": false, "do_normalize": false,
    "image_mean": [0.485, 0.456, 0.406], "image_std": 0.25
  })"));
  CHECK_FALSE(other.do_resize);
  CHECK(other.shortest_edge == 256);
  CHECK(other.resample == 0);
  CHECK_FALSE(other.do_rescale);
  CHECK_FALSE(other.do_normalize);
  CHECK(other.image_mean == std::vector<float>{0.485f, 0.456f, 0.406f});
  CHECK(other.image_std == std::vector<float>{0.25f});
  const PreprocessorConfig square = parse_preprocessor_config(json::parse(R"({"size": 32})"));
  CHECK((square.height == 32 && square.width == 32));

  CHECK(contains(message_of<IoError>([] { (void)parse_preprocessor_config(json::parse(R"({"size": "big"})"), "p.json"); }),
                 "'size'"));
  CHECK(contains(message_of<IoError>([] { (void)parse_preprocessor_config(json::parse(R"({"size": {"height": 3}})")); }),
                 "'size'"));
  CHECK(contains(message_of<IoError>([] { (void)parse_preprocessor_config(json::parse(R"({"image_mean": ["a"]})")); }),
                 "'image_mean'"));
  CHECK_THROWS_AS((void)parse_preprocessor_config(json::parse(R"({"image_std": [0.5, 0.0, 0.5]})")), ValueError);
}

TEST_CASE("preprocessor_config.json: sizes, rescale factors and crops plora cannot honour") {
  const auto error = [](const char* text) {
    return message_of<ValueError>([&] { (void)parse_preprocessor_config(json::parse(text), "p.json"); });
  };
  // Sizes that would end in an allocation failure when an image is resized.
  std::string msg = error(R"({"size": {"height": 100000, "width": 100000}})");
  CHECK(contains(msg, "'p.json'"));
  CHECK(contains(msg, "'size.height'"));
  CHECK(contains(error(R"({"size": {"height": 224, "width": 100000}})"), "'size.width'"));
  CHECK(contains(error(R"({"size": 4294967296})"), "'size.height'"));
  CHECK(contains(error(R"({"size": {"shortest_edge": 1099511627776}})"), "'size.shortest_edge'"));
  CHECK(contains(error(R"({"size": 16385})"), "16384"));
  CHECK(parse_preprocessor_config(json::parse(R"({"size": 16384})")).height == 16384);
  // Both key sets at once: transformers refuses the mix (which one would apply?).
  CHECK(contains(message_of<IoError>([] {
                   (void)parse_preprocessor_config(
                       json::parse(R"({"size": {"height": 224, "width": 224, "shortest_edge": 256}})"));
                 }),
                 "'size'"));
  const auto longest = json::parse(R"({"size": {"shortest_edge": 224, "longest_edge": 512}})");
  CHECK_THROWS_AS((void)parse_preprocessor_config(longest), IoError);  // a resize plora does not do
  // A zero factor makes every image constant; a negative one inverts it.
  CHECK(contains(error(R"({"rescale_factor": 0})"), "'rescale_factor'"));
  CHECK(contains(error(R"({"rescale_factor": -0.5})"), "'rescale_factor'"));
  // JSON text cannot hold inf or NaN, but a json value built in code can.
  for (const double factor : {std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()})
    CHECK(contains(message_of<ValueError>([&] { (void)parse_preprocessor_config(json{{"rescale_factor", factor}}); }),
                   "'rescale_factor'"));
  // Processors that crop (ConvNext, CLIP, DeiT) set do_center_crop; ViTImageProcessor has no crop.
  CHECK(contains(error(R"({"do_center_crop": true, "crop_size": {"height": 224, "width": 224}})"),
                 "'do_center_crop'"));
  CHECK_NOTHROW((void)parse_preprocessor_config(json::parse(R"({"do_center_crop": false})")));
}
