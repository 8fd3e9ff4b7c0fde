#pragma once
// Typed, optional field reading from a JSON object for config files: a field
// that is absent or null keeps its default, a field of the wrong type throws an
// IoError naming the file and the field.
#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "plora/core/error.hpp"
#include "plora/core/view.hpp"
#include "plora/io/detail/input_file.hpp"

namespace plora::io::detail {

/// Parses the JSON file at `path`; IoError naming it when unreadable or invalid.
inline nlohmann::json read_json_file(const std::filesystem::path& path) {
  const std::string text = read_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& error) {
    throw IoError(plora::detail::concat("'", path.string(), "' is not valid JSON: ", error.what()));
  }
}

class JsonFields {
 public:
  /// `source` names the file in messages.
  JsonFields(const nlohmann::json& object, std::string source) : object_(object), source_(std::move(source)) {
    check<IoError>(object_.is_object(), "'", source_, "': expected a JSON object at the top level");
  }

  [[nodiscard]] bool has(std::string_view field) const {
    const auto it = object_.find(field);
    return it != object_.end() && !it->is_null();
  }
  [[nodiscard]] const nlohmann::json& at(std::string_view field) const { return *object_.find(field); }
  [[nodiscard]] const std::string& source() const { return source_; }

  /// Sets `out` from `field` when present; integers must be JSON integers.
  void read(std::string_view field, Index& out) const {
    if (!has(field)) return;
    const auto& v = at(field);
    require(v.is_number_integer(), field, "an integer", v);
    out = v.get<Index>();
  }
  void read(std::string_view field, float& out) const {
    if (!has(field)) return;
    const auto& v = at(field);
    require(v.is_number(), field, "a number", v);
    out = v.get<float>();
  }
  void read(std::string_view field, double& out) const {
    if (!has(field)) return;
    const auto& v = at(field);
    require(v.is_number(), field, "a number", v);
    out = v.get<double>();
  }
  void read(std::string_view field, bool& out) const {
    if (!has(field)) return;
    const auto& v = at(field);
    require(v.is_boolean(), field, "true or false", v);
    out = v.get<bool>();
  }
  void read(std::string_view field, std::string& out) const {
    if (!has(field)) return;
    const auto& v = at(field);
    require(v.is_string(), field, "a string", v);
    out = v.get<std::string>();
  }
  /// A list of numbers; a single number becomes a one-element list.
  void read(std::string_view field, std::vector<float>& out) const {
    if (!has(field)) return;
    const auto& v = at(field);
    if (v.is_number()) {
      out = {v.get<float>()};
      return;
    }
    require(v.is_array() && std::ranges::all_of(v, [](const auto& x) { return x.is_number(); }), field,
            "a number or a list of numbers", v);
    out = v.get<std::vector<float>>();
  }

  /// Throws IoError "<file>: field '<field>' must be <what>, got <value>".
  void require(bool condition, std::string_view field, std::string_view what, const nlohmann::json& value) const {
    check<IoError>(condition, "'", source_, "': field '", field, "' must be ", what, ", got ", value.dump());
  }

 private:
  const nlohmann::json& object_;
  std::string source_;
};

}  // namespace plora::io::detail
