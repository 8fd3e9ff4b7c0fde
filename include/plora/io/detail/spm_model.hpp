#pragma once
// A SentencePiece model file, checked where libsentencepiece trusts it
// (found by the tokenizer_models fuzz target against Debian 12's 0.1.97):
// - an empty piece, or one holding a NUL byte: its trie builder throws from a
//   path that cannot pass exceptions on, and the process terminates (later
//   releases refuse both with an error status);
// - a normalisation table (precompiled_charsmap) whose trie or values point
//   outside it: encoding then reads out of bounds.
// Only as much of protobuf's wire format is read as reaches those fields;
// everything else is left to the library's own parser.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "plora/core/error.hpp"
#include "plora/io/detail/bytes.hpp"

namespace plora::io::detail {

class ProtobufReader {
 public:
  ProtobufReader(std::span<const std::byte> bytes, const std::string& file) : bytes_(bytes), file_(file) {}

  [[nodiscard]] bool done() const { return at_ == bytes_.size(); }

  /// The next field's number and wire type; throws on a malformed tag.
  struct Tag {
    std::uint64_t field = 0;
    std::uint32_t wire_type = 0;
  };
  Tag tag() {
    const std::uint64_t key = varint();
    return {key >> 3, static_cast<std::uint32_t>(key & 7)};
  }

  /// A length-delimited field's bytes (wire type 2).
  std::span<const std::byte> delimited() {
    const std::uint64_t length = varint();
    if (length > bytes_.size() - at_) throw IoError(malformed("a field of ", length, " bytes runs past the end"));
    const auto field = bytes_.subspan(at_, static_cast<std::size_t>(length));
    at_ += static_cast<std::size_t>(length);
    return field;
  }

  /// Steps over a field of the given wire type.
  void skip(std::uint32_t wire_type) {
    switch (wire_type) {
      case 0: (void)varint(); return;
      case 1: advance(8); return;
      case 2: (void)delimited(); return;
      case 5: advance(4); return;
      default: throw IoError(malformed("wire type ", wire_type, " is not one a SentencePiece model uses"));
    }
  }

 private:
  std::uint64_t varint() {
    std::uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (at_ == bytes_.size()) throw IoError(malformed("a number runs past the end"));
      const auto byte = static_cast<std::uint8_t>(bytes_[at_++]);
      value |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return value;
    }
    throw IoError(malformed("a number is longer than 10 bytes"));
  }
  void advance(std::size_t count) {
    if (count > bytes_.size() - at_) throw IoError(malformed("a field runs past the end"));
    at_ += count;
  }
  template <class... Parts>
  [[nodiscard]] std::string malformed(const Parts&... parts) const {
    return plora::detail::concat("tokenizer: SentencePiece model '", file_, "' is malformed at byte ", at_, ": ",
                                 parts...);
  }

  std::span<const std::byte> bytes_;
  const std::string& file_;
  std::size_t at_ = 0;
};

/// Throws IoError unless `piece` (piece `index` of the model) is non-empty and NUL-free.
inline void check_piece(std::string_view piece, std::size_t index, const std::string& file) {
  check<IoError>(!piece.empty(), "tokenizer: SentencePiece model '", file, "': piece ", index, " is empty");
  check<IoError>(piece.find('\0') == std::string_view::npos, "tokenizer: SentencePiece model '", file, "': piece ",
                 index, " holds a NUL byte");
}

/// Throws IoError unless `charsmap` (a NormalizerSpec's precompiled_charsmap)
/// can be walked safely: a little-endian u32 size T, then T bytes of a
/// darts-clone double array (u32 units), then the NUL-terminated normalised
/// strings the array's values point at. The normaliser walks the array
/// without bounds checks, so every node's child block (base ^ label, for any
/// byte label) must lie inside it, and every value (a unit with bit 31 set)
/// must point inside the strings. (A last string without its NUL is safe:
/// the library keeps the table in a std::string, whose terminator ends it.)
inline void check_charsmap(std::span<const std::byte> charsmap, const char* spec, const std::string& file) {
  const auto refuse = [&](const auto&... parts) {
    throw IoError(plora::detail::concat("tokenizer: SentencePiece model '", file, "': the ", spec,
                                        "'s normalisation table ", parts...));
  };
  constexpr std::size_t kUnitBytes = 4;
  if (charsmap.size() < kUnitBytes) refuse("has ", charsmap.size(), " bytes, too few for its size field");
  const auto trie_bytes = read_unaligned<std::uint32_t>(charsmap.data());
  const std::size_t strings = charsmap.size() - kUnitBytes;
  if (trie_bytes == 0 || trie_bytes % kUnitBytes != 0 || trie_bytes >= strings)
    refuse("gives its trie ", trie_bytes, " bytes of ", strings, " (needs a positive multiple of 4 that leaves room "
           "for the strings)");
  const std::size_t normalised = strings - trie_bytes;
  const std::uint32_t units = trie_bytes / kUnitBytes;
  constexpr std::uint32_t kLeaf = 1u << 31, kValueMask = kLeaf - 1;
  for (std::uint32_t id = 0; id < units; ++id) {
    const auto unit = read_unaligned<std::uint32_t>(charsmap.data() + kUnitBytes + std::size_t{id} * kUnitBytes);
    if ((unit & kLeaf) != 0) {
      if ((unit & kValueMask) >= normalised)
        refuse("points unit ", id, " at byte ", unit & kValueMask, " of ", normalised, " bytes of strings");
      continue;
    }
    const std::uint32_t offset = (unit >> 10) << ((unit & (1u << 9)) >> 6);
    if (((id ^ offset) | 0xffu) >= units)
      refuse("sends unit ", id, " to children past its ", units, " units");
  }
}

/// Throws IoError naming `file` when the serialised ModelProto `bytes` has a
/// piece that is empty or holds a NUL byte, a normalisation table that would
/// be read out of its bounds, or malformed fields on the way to either.
inline void check_spm_model(std::span<const std::byte> bytes, const std::string& file) {
  // ModelProto: 1 pieces (SentencePiece: 1 piece), 3 normalizer_spec and 5
  // denormalizer_spec (NormalizerSpec: 2 precompiled_charsmap).
  constexpr std::uint64_t kPieces = 1, kPieceText = 1, kNormalizer = 3, kDenormalizer = 5, kCharsmap = 2;
  constexpr std::uint32_t kDelimited = 2;
  // The last value of a length-delimited field in `message` (protobuf keeps the last of repeated scalars).
  const auto last_field = [&](std::span<const std::byte> message, std::uint64_t wanted) {
    ProtobufReader reader(message, file);
    std::optional<std::span<const std::byte>> value;
    while (!reader.done()) {
      const auto [field, wire_type] = reader.tag();
      if (field == wanted && wire_type == kDelimited) {
        value = reader.delimited();
      } else {
        reader.skip(wire_type);
      }
    }
    return value;
  };
  ProtobufReader model(bytes, file);
  std::size_t piece_index = 0;
  while (!model.done()) {
    const auto [field, wire_type] = model.tag();
    if (wire_type != kDelimited || (field != kPieces && field != kNormalizer && field != kDenormalizer)) {
      model.skip(wire_type);
      continue;
    }
    const auto message = model.delimited();
    if (field == kPieces) {
      const auto text = last_field(message, kPieceText).value_or(std::span<const std::byte>{});
      check_piece({reinterpret_cast<const char*>(text.data()), text.size()}, piece_index++, file);
    } else if (const auto charsmap = last_field(message, kCharsmap); charsmap && !charsmap->empty()) {
      check_charsmap(*charsmap, field == kNormalizer ? "normalizer" : "denormalizer", file);
    }
  }
}

}  // namespace plora::io::detail
