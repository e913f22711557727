#include "posttrain/tokenizer/hf_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <queue>
#include <set>
#include <unordered_map>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "nlohmann/json.hpp"
#include "posttrain/core/status.h"

namespace posttrain {
namespace {

using json = nlohmann::json;

// ---- UTF-8 -------------------------------------------------------------------

// Length of the UTF-8 sequence starting at s[i] (1 for an invalid byte).
size_t Utf8Length(absl::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 1;
  if (i + n > s.size()) return 1;
  for (size_t k = 1; k < n; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return 1;
  }
  return n;
}

std::string EncodeUtf8(std::uint32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
  return out;
}

const std::string kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Valid UTF-8 stays; each invalid byte becomes U+FFFD (as String::from_utf8_lossy,
// per maximal invalid subsequence approximated per byte).
std::string Utf8Lossy(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = Utf8Length(s, i);
    if (n == 1 && c >= 0x80) {
      out += kReplacementChar;
    } else {
      out.append(s.data() + i, n);
    }
    i += n;
  }
  return out;
}

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to 256+n.
struct ByteLevelTable {
  std::string byte_to_char[256];
  std::unordered_map<std::uint32_t, std::uint8_t> char_to_byte;
  ByteLevelTable() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
      const std::uint32_t cp = printable ? static_cast<std::uint32_t>(b) : static_cast<std::uint32_t>(256 + n++);
      byte_to_char[b] = EncodeUtf8(cp);
      char_to_byte[cp] = static_cast<std::uint8_t>(b);
    }
  }
};
const ByteLevelTable& ByteLevel() {
  static const ByteLevelTable* table = new ByteLevelTable();
  return *table;
}

std::uint32_t DecodeCodepoint(absl::string_view s) {
  const auto c = static_cast<unsigned char>(s[0]);
  if (s.size() == 1) return c;
  std::uint32_t cp = s.size() == 2 ? (c & 0x1f) : s.size() == 3 ? (c & 0x0f) : (c & 0x07);
  for (size_t k = 1; k < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[k]) & 0x3f);
  return cp;
}

// j[key] as a string; `fallback` when absent or null.
std::string Str(const nlohmann::json& j, const char* key, const std::string& fallback = "") {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return it->get<std::string>();
}

// ---- Regex (PCRE2) -----------------------------------------------------------

class Regex {
 public:
  static absl::StatusOr<std::shared_ptr<Regex>> Compile(const std::string& pattern) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &error, &offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      return absl::InvalidArgumentError(absl::StrCat("regex '", pattern, "' at offset ", offset, ": ",
                                                     reinterpret_cast<char*>(message)));
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if unavailable
    auto regex = std::make_shared<Regex>();
    regex->code_ = code;
    return regex;
  }
  ~Regex() {
    if (code_ != nullptr) pcre2_code_free(code_);
  }

  // Non-overlapping matches [begin, end) left to right; an empty match advances
  // by one character.
  std::vector<std::pair<size_t, size_t>> FindAll(absl::string_view text) const {
    std::vector<std::pair<size_t, size_t>> out;
    pcre2_match_data* data = pcre2_match_data_create_from_pattern(code_, nullptr);
    size_t start = 0;
    while (start <= text.size()) {
      int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start,
                           PCRE2_NO_UTF_CHECK, data, nullptr);
      if (rc < 0) break;
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(data);
      if (ov[1] == ov[0]) {
        if (ov[0] >= text.size()) break;
        start = ov[0] + Utf8Length(text, ov[0]);
        continue;
      }
      out.push_back({ov[0], ov[1]});
      start = ov[1];
    }
    pcre2_match_data_free(data);
    return out;
  }

 private:
  pcre2_code* code_ = nullptr;
};

std::string QuoteRegex(absl::string_view literal) {
  std::string out = "\\Q";
  out += absl::StrReplaceAll(literal, {{"\\E", "\\E\\\\E\\Q"}});
  return out + "\\E";
}

// "pattern": {"Regex": "..."} or {"String": "..."}.
absl::StatusOr<std::shared_ptr<Regex>> PatternRegex(const json& pattern) {
  if (pattern.contains("Regex")) return Regex::Compile(pattern["Regex"].get<std::string>());
  if (pattern.contains("String")) return Regex::Compile(QuoteRegex(pattern["String"].get<std::string>()));
  return absl::InvalidArgumentError(absl::StrCat("pattern ", pattern.dump(), " is neither Regex nor String"));
}

// ---- Unicode classes (Rust's char methods, which the tokenizers crate uses) ----

// char::is_whitespace: the White_Space property.
bool IsWhitespace(std::uint32_t c) {
  return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
         c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}
// The same sets as the contents of PCRE2 character classes: White_Space; ASCII
// punctuation or a Unicode P* category (the tokenizers crate's is_punctuation);
// Oniguruma's \\w (letters, marks, decimal digits, connectors, ZWNJ/ZWJ).
constexpr const char* kWhitespaceChars = "\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";
constexpr const char* kPunctuationChars = "\\p{P}!-/:-@\\[-`{-~";
constexpr const char* kWordChars = "\\p{L}\\p{Nl}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}";

// Calls f(code point, its bytes) for each character of `s`.
template <typename F>
void ForEachCodepoint(absl::string_view s, F&& f) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = Utf8Length(s, i);
    f(DecodeCodepoint(s.substr(i, n)), s.substr(i, n));
    i += n;
  }
}

// NormalizedString::lowercase: char::to_lowercase of each character (full mapping:
// U+0130 'İ' becomes "i̇"; no context, so 'Σ' is always 'σ'; 'ß' stays).
std::string Lowercase(absl::string_view s) {
  std::string out;
  out.reserve(s.size());
  ForEachCodepoint(s, [&](std::uint32_t c, absl::string_view bytes) {
    if (c == 0x130) {
      out += "i\xCC\x87";
    } else if (c < 0x80) {
      out += static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    } else {
      const utf8proc_int32_t lower = utf8proc_tolower(static_cast<utf8proc_int32_t>(c));
      out += lower == static_cast<utf8proc_int32_t>(c) ? std::string(bytes) : EncodeUtf8(static_cast<std::uint32_t>(lower));
    }
  });
  return out;
}

// The characters of `s` for which keep(code point) holds.
template <typename F>
std::string FilterCodepoints(absl::string_view s, F&& keep) {
  std::string out;
  out.reserve(s.size());
  ForEachCodepoint(s, [&](std::uint32_t c, absl::string_view bytes) {
    if (keep(c)) out.append(bytes.data(), bytes.size());
  });
  return out;
}

bool IsNonspacingMark(std::uint32_t c) {
  return utf8proc_category(static_cast<utf8proc_int32_t>(c)) == UTF8PROC_CATEGORY_MN;
}

// BertNormalizer's CJK ranges (the CJK Unified Ideographs blocks and extensions).
bool IsChineseChar(std::uint32_t c) {
  return (c >= 0x4e00 && c <= 0x9fff) || (c >= 0x3400 && c <= 0x4dbf) || (c >= 0x20000 && c <= 0x2a6df) ||
         (c >= 0x2a700 && c <= 0x2b73f) || (c >= 0x2b740 && c <= 0x2b81f) || (c >= 0x2b920 && c <= 0x2ceaf) ||
         (c >= 0xf900 && c <= 0xfaff) || (c >= 0x2f800 && c <= 0x2fa1f);
}

// ---- Components --------------------------------------------------------------

using Normalizer = std::function<void(std::string&)>;
// Pieces in, pieces out; `first` is true for the text before any added token.
using PreTokenizer = std::function<void(std::vector<std::string>&, bool first)>;
using Decoder = std::function<void(std::vector<std::string>&)>;

std::string Utf8procNormalize(const std::string& s, utf8proc_option_t options) {
  utf8proc_uint8_t* out = nullptr;
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                    static_cast<utf8proc_ssize_t>(s.size()), &out,
                                    static_cast<utf8proc_option_t>(options | UTF8PROC_STABLE));
  if (n < 0) return s;  // invalid UTF-8: leave as is
  std::string result(reinterpret_cast<char*>(out), static_cast<size_t>(n));
  std::free(out);
  return result;
}

std::string ReplaceAll(const std::string& s, const Regex& regex, const std::string& content) {
  std::string out;
  size_t last = 0;
  for (const auto& [b, e] : regex.FindAll(s)) {
    out.append(s, last, b - last);
    out += content;
    last = e;
  }
  out.append(s, last, std::string::npos);
  return out;
}

// SentencePiece's compiled normalisation rules (normalizer_spec.precompiled_charsmap),
// as the tokenizers crate's Precompiled normaliser applies them. The blob is
// [u32 LE: trie size in bytes][the trie: a darts-clone double array of u32 units]
// [the replacement strings, each NUL-terminated]; a key's value is the offset of
// its replacement. Each extended grapheme cluster of fewer than 6 bytes is looked
// up whole, else (or without a rule) each of its characters; a lookup takes the
// shortest prefix of the bytes that has a rule (the crate's first result) and
// replaces the whole chunk with it.
class PrecompiledCharsmap {
 public:
  static absl::StatusOr<PrecompiledCharsmap> Parse(const std::string& base64) {
    std::string blob;
    if (!absl::Base64Unescape(base64, &blob)) {
      return absl::InvalidArgumentError("Precompiled: precompiled_charsmap is not base64");
    }
    if (blob.size() < 4) return absl::InvalidArgumentError("Precompiled: precompiled_charsmap is shorter than its header");
    const std::uint32_t trie_bytes = static_cast<std::uint32_t>(static_cast<unsigned char>(blob[0])) |
                                     static_cast<std::uint32_t>(static_cast<unsigned char>(blob[1])) << 8 |
                                     static_cast<std::uint32_t>(static_cast<unsigned char>(blob[2])) << 16 |
                                     static_cast<std::uint32_t>(static_cast<unsigned char>(blob[3])) << 24;
    if (trie_bytes % 4 != 0 || trie_bytes == 0 || trie_bytes > blob.size() - 4) {
      return absl::InvalidArgumentError(absl::StrCat("Precompiled: trie size ", trie_bytes, " does not fit the ",
                                                     blob.size(), "-byte charsmap"));
    }
    PrecompiledCharsmap map;
    map.units_.resize(trie_bytes / 4);
    for (size_t i = 0; i < map.units_.size(); ++i) {
      const char* u = blob.data() + 4 + 4 * i;
      map.units_[i] = static_cast<std::uint32_t>(static_cast<unsigned char>(u[0])) |
                      static_cast<std::uint32_t>(static_cast<unsigned char>(u[1])) << 8 |
                      static_cast<std::uint32_t>(static_cast<unsigned char>(u[2])) << 16 |
                      static_cast<std::uint32_t>(static_cast<unsigned char>(u[3])) << 24;
    }
    map.normalized_ = blob.substr(4 + trie_bytes);
    return map;
  }

  std::string Normalize(absl::string_view s) const {
    std::string out;
    out.reserve(s.size());
    for (size_t begin = 0; begin < s.size();) {
      const size_t end = GraphemeEnd(s, begin);
      const absl::string_view grapheme = s.substr(begin, end - begin);
      begin = end;
      if (grapheme.size() < 6) {
        if (const std::optional<absl::string_view> rule = Rule(grapheme)) {
          out.append(rule->data(), rule->size());
          continue;
        }
      }
      for (size_t i = 0; i < grapheme.size();) {
        const absl::string_view c = grapheme.substr(i, Utf8Length(grapheme, i));
        i += c.size();
        const std::optional<absl::string_view> rule = Rule(c);
        out.append(rule ? rule->data() : c.data(), rule ? rule->size() : c.size());
      }
    }
    return out;
  }

 private:
  // darts-clone's unit layout.
  static bool HasLeaf(std::uint32_t unit) { return ((unit >> 8) & 1) == 1; }
  static std::uint32_t Value(std::uint32_t unit) { return unit & ((1u << 31) - 1); }
  static std::uint32_t Label(std::uint32_t unit) { return unit & ((1u << 31) | 0xff); }
  static std::uint32_t Offset(std::uint32_t unit) { return (unit >> 10) << ((unit & (1u << 9)) >> 6); }

  // The replacement of the shortest prefix of `key` that has one.
  std::optional<absl::string_view> Rule(absl::string_view key) const {
    size_t node = Offset(units_[0]);
    for (size_t i = 0; i < key.size(); ++i) {
      const auto byte = static_cast<unsigned char>(key[i]);
      node ^= byte;
      if (node >= units_.size()) return std::nullopt;  // a malformed trie: no rule
      const std::uint32_t unit = units_[node];
      if (Label(unit) != byte) return std::nullopt;
      node ^= Offset(unit);
      if (node >= units_.size()) return std::nullopt;
      if (HasLeaf(unit)) {
        const size_t start = Value(units_[node]);
        if (start >= normalized_.size()) return std::nullopt;
        const size_t stop = normalized_.find('\0', start);
        return absl::string_view(normalized_).substr(start, (stop == std::string::npos ? normalized_.size() : stop) - start);
      }
    }
    return std::nullopt;
  }

  // The end of the extended grapheme cluster starting at s[begin] (UAX #29, utf8proc).
  static size_t GraphemeEnd(absl::string_view s, size_t begin) {
    size_t i = begin + Utf8Length(s, begin);
    utf8proc_int32_t state = 0;
    std::uint32_t previous = DecodeCodepoint(s.substr(begin, i - begin));
    while (i < s.size()) {
      const size_t n = Utf8Length(s, i);
      const std::uint32_t c = DecodeCodepoint(s.substr(i, n));
      if (utf8proc_grapheme_break_stateful(static_cast<utf8proc_int32_t>(previous), static_cast<utf8proc_int32_t>(c), &state)) break;
      previous = c;
      i += n;
    }
    return i;
  }

  std::vector<std::uint32_t> units_;
  std::string normalized_;
};

absl::StatusOr<Normalizer> MakeNormalizer(const json& j) {
  const std::string type = Str(j, "type");
  if (type == "Precompiled") {
    // An empty (or null) charsmap has no rules: SentencePiece's identity normalisation.
    if (j.contains("precompiled_charsmap") && (j["precompiled_charsmap"].is_null() || j["precompiled_charsmap"] == "")) {
      return Normalizer([](std::string&) {});
    }
    if (!j.contains("precompiled_charsmap") || !j["precompiled_charsmap"].is_string()) {
      return absl::InvalidArgumentError("normalizer Precompiled needs a precompiled_charsmap string");
    }
    POSTTRAIN_ASSIGN_OR_RETURN(PrecompiledCharsmap map, PrecompiledCharsmap::Parse(j["precompiled_charsmap"].get<std::string>()));
    auto shared = std::make_shared<const PrecompiledCharsmap>(std::move(map));
    return Normalizer([shared](std::string& s) { s = shared->Normalize(s); });
  }
  if (type == "NFC") return Normalizer([](std::string& s) { s = Utf8procNormalize(s, UTF8PROC_COMPOSE); });
  if (type == "NFD") return Normalizer([](std::string& s) { s = Utf8procNormalize(s, UTF8PROC_DECOMPOSE); });
  if (type == "NFKC") {
    return Normalizer([](std::string& s) {
      s = Utf8procNormalize(s, static_cast<utf8proc_option_t>(UTF8PROC_COMPOSE | UTF8PROC_COMPAT));
    });
  }
  if (type == "NFKD") {
    return Normalizer([](std::string& s) {
      s = Utf8procNormalize(s, static_cast<utf8proc_option_t>(UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT));
    });
  }
  if (type == "Lowercase") return Normalizer([](std::string& s) { s = Lowercase(s); });
  if (type == "StripAccents") {  // removes nonspacing marks (no decomposition of its own)
    return Normalizer([](std::string& s) { s = FilterCodepoints(s, [](std::uint32_t c) { return !IsNonspacingMark(c); }); });
  }
  if (type == "BertNormalizer") {
    const bool clean_text = j.value("clean_text", true), chinese = j.value("handle_chinese_chars", true);
    const bool lowercase = j.value("lowercase", true);
    const bool strip_accents = j.contains("strip_accents") && !j["strip_accents"].is_null() ? j["strip_accents"].get<bool>() : lowercase;
    return Normalizer([=](std::string& s) {
      if (clean_text) {  // drop NUL, U+FFFD and "other" characters (C*) but \t \n \r; whitespace becomes ' '
        std::string out;
        ForEachCodepoint(s, [&](std::uint32_t c, absl::string_view bytes) {
          const bool tnr = c == '\t' || c == '\n' || c == '\r';
          const utf8proc_category_t cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
          const bool other = cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF || cat == UTF8PROC_CATEGORY_CS ||
                             cat == UTF8PROC_CATEGORY_CO || cat == UTF8PROC_CATEGORY_CN;
          if (c == 0 || c == 0xfffd || (other && !tnr)) return;
          if (tnr || IsWhitespace(c)) {
            out += ' ';
          } else {
            out.append(bytes.data(), bytes.size());
          }
        });
        s = std::move(out);
      }
      if (chinese) {
        std::string out;
        ForEachCodepoint(s, [&](std::uint32_t c, absl::string_view bytes) {
          if (IsChineseChar(c)) out += ' ';
          out.append(bytes.data(), bytes.size());
          if (IsChineseChar(c)) out += ' ';
        });
        s = std::move(out);
      }
      if (strip_accents) {
        s = FilterCodepoints(Utf8procNormalize(s, UTF8PROC_DECOMPOSE), [](std::uint32_t c) { return !IsNonspacingMark(c); });
      }
      if (lowercase) s = Lowercase(s);
    });
  }
  if (type == "Nmt") {  // SentencePiece's NMT normalisation: drop ASCII controls, map odd spaces to ' '
    return Normalizer([](std::string& s) {
      std::string out;
      ForEachCodepoint(s, [&](std::uint32_t c, absl::string_view bytes) {
        if ((c >= 0x01 && c <= 0x08) || c == 0x0b || (c >= 0x0e && c <= 0x1f) || c == 0x7f || c == 0x8f || c == 0x9f) return;
        const bool space = c == 0x09 || c == 0x0a || c == 0x0c || c == 0x0d || c == 0x1680 || (c >= 0x200b && c <= 0x200f) ||
                           c == 0x2028 || c == 0x2029 || c == 0x2581 || c == 0xfeff || c == 0xfffd;
        if (space) {
          out += ' ';
        } else {
          out.append(bytes.data(), bytes.size());
        }
      });
      s = std::move(out);
    });
  }
  if (type == "Prepend") {
    const std::string prepend = j.at("prepend").get<std::string>();
    return Normalizer([prepend](std::string& s) {
      if (!s.empty()) s = prepend + s;
    });
  }
  if (type == "Replace") {
    POSTTRAIN_ASSIGN_OR_RETURN(std::shared_ptr<Regex> regex, PatternRegex(j.at("pattern")));
    const std::string content = j.at("content").get<std::string>();
    return Normalizer([regex, content](std::string& s) { s = ReplaceAll(s, *regex, content); });
  }
  if (type == "Strip") {
    const bool left = j.value("strip_left", true), right = j.value("strip_right", true);
    POSTTRAIN_ASSIGN_OR_RETURN(std::shared_ptr<Regex> l, Regex::Compile("^\\s+"));
    POSTTRAIN_ASSIGN_OR_RETURN(std::shared_ptr<Regex> r, Regex::Compile("\\s+$"));
    return Normalizer([=](std::string& s) {
      if (left) s = ReplaceAll(s, *l, "");
      if (right) s = ReplaceAll(s, *r, "");
    });
  }
  if (type == "Sequence") {
    std::vector<Normalizer> parts;
    for (const json& item : j.at("normalizers")) {
      POSTTRAIN_ASSIGN_OR_RETURN(Normalizer n, MakeNormalizer(item));
      parts.push_back(std::move(n));
    }
    return Normalizer([parts](std::string& s) {
      for (const Normalizer& n : parts) n(s);
    });
  }
  return absl::UnimplementedError(absl::StrCat("normalizer type '", type, "' is not supported"));
}

// Splits each piece around the matches of `regex` according to `behavior`.
std::vector<std::string> SplitPiece(const std::string& s, const Regex& regex, const std::string& behavior,
                                    bool invert) {
  // Alternating (text, is_match) segments covering s.
  std::vector<std::pair<std::string, bool>> segments;
  size_t last = 0;
  for (const auto& [b, e] : regex.FindAll(s)) {
    if (b > last) segments.push_back({s.substr(last, b - last), invert});
    segments.push_back({s.substr(b, e - b), !invert});
    last = e;
  }
  if (last < s.size()) segments.push_back({s.substr(last), invert});
  std::vector<std::string> out;
  if (behavior == "Isolated") {
    for (auto& [text, match] : segments) out.push_back(std::move(text));
  } else if (behavior == "Removed") {
    for (auto& [text, match] : segments) {
      if (!match) out.push_back(std::move(text));
    }
  } else if (behavior == "MergedWithPrevious") {  // a match joins the text before it, not another match
    bool previous_match = false;
    for (auto& [text, match] : segments) {
      if (match && !previous_match && !out.empty()) {
        out.back() += text;
      } else {
        out.push_back(std::move(text));
      }
      previous_match = match;
    }
  } else if (behavior == "MergedWithNext") {
    std::string pending;
    for (auto& [text, match] : segments) {
      if (match) {
        if (!pending.empty()) out.push_back(std::move(pending));
        pending = std::move(text);
      } else {
        out.push_back(pending + text);
        pending.clear();
      }
    }
    if (!pending.empty()) out.push_back(std::move(pending));
  } else {  // Contiguous
    bool last_match = false;
    for (auto& [text, match] : segments) {
      if (match && last_match && !out.empty()) {
        out.back() += text;
      } else {
        out.push_back(std::move(text));
      }
      last_match = match;
    }
  }
  return out;
}

constexpr const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

absl::StatusOr<PreTokenizer> MakePreTokenizer(const json& j) {
  const std::string type = Str(j, "type");
  auto split_all = [](std::vector<std::string>& pieces, const std::function<std::vector<std::string>(const std::string&)>& f) {
    std::vector<std::string> out;
    for (const std::string& p : pieces) {
      for (std::string& q : f(p)) {
        if (!q.empty()) out.push_back(std::move(q));
      }
    }
    pieces = std::move(out);
  };
  if (type == "Split") {
    POSTTRAIN_ASSIGN_OR_RETURN(std::shared_ptr<Regex> regex, PatternRegex(j.at("pattern")));
    const std::string behavior = Str(j, "behavior", "Isolated");
    const bool invert = j.value("invert", false);
    static const char* kBehaviors[] = {"Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    if (std::find(std::begin(kBehaviors), std::end(kBehaviors), behavior) == std::end(kBehaviors)) {
      return absl::UnimplementedError(absl::StrCat("Split behavior '", behavior, "' is not supported"));
    }
    return PreTokenizer([=](std::vector<std::string>& pieces, bool) {
      split_all(pieces, [&](const std::string& p) { return SplitPiece(p, *regex, behavior, invert); });
    });
  }
  if (type == "ByteLevel") {
    const bool add_prefix_space = j.value("add_prefix_space", false);
    const bool use_regex = j.value("use_regex", true);
    std::shared_ptr<Regex> regex;
    if (use_regex) {
      POSTTRAIN_ASSIGN_OR_RETURN(regex, Regex::Compile(kGpt2Pattern));
    }
    return PreTokenizer([=](std::vector<std::string>& pieces, bool first) {
      if (add_prefix_space && first && !pieces.empty() && pieces[0].rfind(' ', 0) != 0) {
        pieces[0] = " " + pieces[0];
      }
      if (regex) {
        split_all(pieces, [&](const std::string& p) { return SplitPiece(p, *regex, "Isolated", false); });
      }
      const ByteLevelTable& table = ByteLevel();
      for (std::string& p : pieces) {
        std::string mapped;
        mapped.reserve(p.size() * 2);
        for (unsigned char c : p) mapped += table.byte_to_char[c];
        p = std::move(mapped);
      }
    });
  }
  if (type == "Metaspace") {
    const std::string replacement = Str(j, "replacement", "\xE2\x96\x81");
    std::string scheme = Str(j, "prepend_scheme");
    if (scheme.empty()) scheme = j.value("add_prefix_space", true) ? "always" : "never";
    const bool split = j.value("split", true);
    POSTTRAIN_ASSIGN_OR_RETURN(std::shared_ptr<Regex> marker, Regex::Compile(QuoteRegex(replacement)));
    return PreTokenizer([=](std::vector<std::string>& pieces, bool first) {
      for (size_t i = 0; i < pieces.size(); ++i) {
        std::string& p = pieces[i];
        p = absl::StrReplaceAll(p, {{" ", replacement}});
        const bool prepend = scheme == "always" || (scheme == "first" && first && i == 0);
        if (prepend && p.rfind(replacement, 0) != 0) p = replacement + p;
      }
      if (split) {
        split_all(pieces, [&](const std::string& p) { return SplitPiece(p, *marker, "MergedWithNext", false); });
      }
    });
  }
  // Splits on a character class: each matching character is its own match, as the
  // tokenizers crate splits on a char predicate.
  auto class_split = [&](const std::string& pattern, const std::string& behavior,
                         bool invert) -> absl::StatusOr<PreTokenizer> {
    POSTTRAIN_ASSIGN_OR_RETURN(std::shared_ptr<Regex> regex, Regex::Compile(pattern));
    return PreTokenizer([=](std::vector<std::string>& pieces, bool) {
      split_all(pieces, [&](const std::string& p) { return SplitPiece(p, *regex, behavior, invert); });
    });
  };
  if (type == "Whitespace") {  // keeps the matches of \w+|[^\w\s]+
    return class_split(absl::StrCat("[", kWordChars, "]+|[^", kWordChars, kWhitespaceChars, "]+"), "Removed",
                       /*invert=*/true);
  }
  if (type == "WhitespaceSplit") return class_split(absl::StrCat("[", kWhitespaceChars, "]"), "Removed", false);
  if (type == "Punctuation") {
    const std::string behavior = Str(j, "behavior", "Isolated");
    static const char* kBehaviors[] = {"Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    if (std::find(std::begin(kBehaviors), std::end(kBehaviors), behavior) == std::end(kBehaviors)) {
      return absl::UnimplementedError(absl::StrCat("Punctuation behavior '", behavior, "' is not supported"));
    }
    return class_split(absl::StrCat("[", kPunctuationChars, "]"), behavior, false);
  }
  if (type == "BertPreTokenizer") {  // whitespace removed, then each punctuation character isolated
    POSTTRAIN_ASSIGN_OR_RETURN(PreTokenizer whitespace, class_split(absl::StrCat("[", kWhitespaceChars, "]"), "Removed", false));
    POSTTRAIN_ASSIGN_OR_RETURN(PreTokenizer punctuation, class_split(absl::StrCat("[", kPunctuationChars, "]"), "Isolated", false));
    return PreTokenizer([=](std::vector<std::string>& pieces, bool first) {
      whitespace(pieces, first);
      punctuation(pieces, first);
    });
  }
  if (type == "CharDelimiterSplit") {
    const std::string delimiter = Str(j, "delimiter");
    if (delimiter.empty() || Utf8Length(delimiter, 0) != delimiter.size()) {
      return absl::InvalidArgumentError(absl::StrCat("CharDelimiterSplit: delimiter must be one character, got '", delimiter, "'"));
    }
    return class_split(QuoteRegex(delimiter), "Removed", false);
  }
  if (type == "FixedLength") {  // pieces of `length` characters
    const std::int64_t length = j.value("length", std::int64_t{5});
    if (length <= 0) return absl::InvalidArgumentError(absl::StrCat("FixedLength: length must be positive, got ", length));
    return PreTokenizer([=](std::vector<std::string>& pieces, bool) {
      split_all(pieces, [&](const std::string& p) {
        std::vector<std::string> out;
        std::int64_t count = 0;
        ForEachCodepoint(p, [&](std::uint32_t, absl::string_view bytes) {
          if (count++ % length == 0) out.emplace_back();
          out.back().append(bytes.data(), bytes.size());
        });
        return out;
      });
    });
  }
  if (type == "Digits") {
    const bool individual = j.value("individual_digits", false);
    POSTTRAIN_ASSIGN_OR_RETURN(std::shared_ptr<Regex> regex, Regex::Compile(individual ? "\\p{Nd}" : "\\p{Nd}+"));
    return PreTokenizer([=](std::vector<std::string>& pieces, bool) {
      split_all(pieces, [&](const std::string& p) { return SplitPiece(p, *regex, "Isolated", false); });
    });
  }
  if (type == "Sequence") {
    std::vector<PreTokenizer> parts;
    for (const json& item : j.at("pretokenizers")) {
      POSTTRAIN_ASSIGN_OR_RETURN(PreTokenizer p, MakePreTokenizer(item));
      parts.push_back(std::move(p));
    }
    return PreTokenizer([parts](std::vector<std::string>& pieces, bool first) {
      for (const PreTokenizer& p : parts) p(pieces, first);
    });
  }
  return absl::UnimplementedError(absl::StrCat("pre_tokenizer type '", type, "' is not supported"));
}

bool IsByteToken(absl::string_view t, std::uint8_t* byte) {
  if (t.size() != 6 || t.substr(0, 3) != "<0x" || t[5] != '>') return false;
  unsigned value = 0;
  for (char c : t.substr(3, 2)) {
    value <<= 4;
    if (c >= '0' && c <= '9') value |= static_cast<unsigned>(c - '0');
    else if (c >= 'A' && c <= 'F') value |= static_cast<unsigned>(c - 'A' + 10);
    else if (c >= 'a' && c <= 'f') value |= static_cast<unsigned>(c - 'a' + 10);
    else return false;
  }
  *byte = static_cast<std::uint8_t>(value);
  return true;
}

// The tokenizers crate's decoder cleanup (WordPiece, CTC): English spacing around
// punctuation and contractions.
std::string CleanupTokenization(const std::string& s) {
  return absl::StrReplaceAll(s, {{" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
                                 {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}});
}

absl::StatusOr<Decoder> MakeDecoder(const json& j) {
  const std::string type = Str(j, "type");
  if (type == "WordPiece") {  // "##"-prefixed tokens join the previous one; others start a word
    const std::string prefix = Str(j, "prefix", "##");
    const bool cleanup = j.value("cleanup", true);
    return Decoder([=](std::vector<std::string>& tokens) {
      for (size_t i = 0; i < tokens.size(); ++i) {
        std::string& t = tokens[i];
        if (i != 0) {
          if (!prefix.empty() && t.rfind(prefix, 0) == 0) {
            t.erase(0, prefix.size());
          } else {
            t = " " + t;
          }
        }
        if (cleanup) t = CleanupTokenization(t);
      }
    });
  }
  if (type == "BPEDecoder") {  // the end-of-word suffix becomes a space (nothing after the last token)
    const std::string suffix = Str(j, "suffix", "</w>");
    return Decoder([=](std::vector<std::string>& tokens) {
      for (size_t i = 0; i < tokens.size(); ++i) {
        if (!suffix.empty()) tokens[i] = absl::StrReplaceAll(tokens[i], {{suffix, i + 1 == tokens.size() ? "" : " "}});
      }
    });
  }
  if (type == "CTC") {  // repeats collapsed, padding dropped, the word delimiter a space
    const std::string pad = Str(j, "pad_token", "<pad>"), delimiter = Str(j, "word_delimiter_token", "|");
    const bool cleanup = j.value("cleanup", true);
    return Decoder([=](std::vector<std::string>& tokens) {
      std::vector<std::string> out;
      for (size_t i = 0; i < tokens.size(); ++i) {
        if (i > 0 && tokens[i] == tokens[i - 1]) continue;
        std::string t = pad.empty() ? tokens[i] : absl::StrReplaceAll(tokens[i], {{pad, ""}});
        if (cleanup && !delimiter.empty()) t = absl::StrReplaceAll(CleanupTokenization(t), {{delimiter, " "}});
        if (!t.empty()) out.push_back(std::move(t));
      }
      tokens = std::move(out);
    });
  }
  if (type == "ByteLevel") {
    return Decoder([](std::vector<std::string>& tokens) {
      const ByteLevelTable& table = ByteLevel();
      for (std::string& t : tokens) {
        std::string bytes;
        bool ok = true;
        for (size_t i = 0; i < t.size() && ok;) {
          const size_t n = Utf8Length(t, i);
          auto it = table.char_to_byte.find(DecodeCodepoint(absl::string_view(t).substr(i, n)));
          if (it == table.char_to_byte.end()) {
            ok = false;
          } else {
            bytes += static_cast<char>(it->second);
          }
          i += n;
        }
        if (ok) t = std::move(bytes);  // else: the token's own UTF-8 bytes, as HF does
      }
    });
  }
  if (type == "Replace") {
    POSTTRAIN_ASSIGN_OR_RETURN(std::shared_ptr<Regex> regex, PatternRegex(j.at("pattern")));
    const std::string content = j.at("content").get<std::string>();
    return Decoder([regex, content](std::vector<std::string>& tokens) {
      for (std::string& t : tokens) t = ReplaceAll(t, *regex, content);
    });
  }
  if (type == "ByteFallback") {
    return Decoder([](std::vector<std::string>& tokens) {
      std::vector<std::string> out;
      std::string pending;
      size_t pending_count = 0;
      auto flush = [&] {
        if (pending_count == 0) return;
        if (Utf8Lossy(pending) == pending) {
          out.push_back(pending);
        } else {
          for (size_t k = 0; k < pending_count; ++k) out.push_back(kReplacementChar);
        }
        pending.clear();
        pending_count = 0;
      };
      for (std::string& t : tokens) {
        std::uint8_t byte;
        if (IsByteToken(t, &byte)) {
          pending += static_cast<char>(byte);
          ++pending_count;
        } else {
          flush();
          out.push_back(std::move(t));
        }
      }
      flush();
      tokens = std::move(out);
    });
  }
  if (type == "Fuse") {
    return Decoder([](std::vector<std::string>& tokens) { tokens = {absl::StrJoin(tokens, "")}; });
  }
  if (type == "Strip") {
    const std::string content = Str(j, "content", " ");
    const int start = j.value("start", 0), stop = j.value("stop", 0);
    return Decoder([=](std::vector<std::string>& tokens) {
      for (std::string& t : tokens) {
        for (int k = 0; k < start && t.rfind(content, 0) == 0; ++k) t.erase(0, content.size());
        for (int k = 0; k < stop && t.size() >= content.size() &&
                        t.compare(t.size() - content.size(), content.size(), content) == 0; ++k) {
          t.erase(t.size() - content.size());
        }
      }
    });
  }
  if (type == "Metaspace") {
    const std::string replacement = Str(j, "replacement", "\xE2\x96\x81");
    std::string scheme = Str(j, "prepend_scheme");
    if (scheme.empty()) scheme = j.value("add_prefix_space", true) ? "always" : "never";
    return Decoder([=](std::vector<std::string>& tokens) {
      for (size_t i = 0; i < tokens.size(); ++i) {
        tokens[i] = absl::StrReplaceAll(tokens[i], {{replacement, " "}});
        if (i == 0 && scheme != "never" && tokens[i].rfind(' ', 0) == 0) tokens[i].erase(0, 1);
      }
    });
  }
  if (type == "Sequence") {
    std::vector<Decoder> parts;
    for (const json& item : j.at("decoders")) {
      POSTTRAIN_ASSIGN_OR_RETURN(Decoder d, MakeDecoder(item));
      parts.push_back(std::move(d));
    }
    return Decoder([parts](std::vector<std::string>& tokens) {
      for (const Decoder& d : parts) d(tokens);
    });
  }
  return absl::UnimplementedError(absl::StrCat("decoder type '", type, "' is not supported"));
}

// ---- Models ------------------------------------------------------------------

// Token ids index tables: they must be integers in [0, 2^24) (16.7M; real
// vocabularies have ~10^5 entries), so a corrupt file cannot make us allocate
// terabytes or index out of bounds.
constexpr std::int64_t kMaxTokenId = std::int64_t{1} << 24;

absl::StatusOr<std::int64_t> CheckedId(const json& value, const std::string& token, const std::string& source) {
  if (!value.is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": the id of '", token, "' is not an integer: ", value.dump()));
  }
  const std::int64_t id = value.get<std::int64_t>();
  if (id < 0 || id >= kMaxTokenId) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": the id of '", token, "' is ", id, ", outside [0, ", kMaxTokenId, ")"));
  }
  return id;
}

// Whether a ByteLevel pre-tokenizer is used (alone or in a Sequence).
bool HasByteLevel(const json& node) {
  if (!node.is_object()) return false;
  if (node.value("type", std::string()) == "ByteLevel") return true;
  for (const char* key : {"pretokenizers", "pre_tokenizers"}) {
    if (node.contains(key) && node[key].is_array()) {
      for (const json& child : node[key]) {
        if (HasByteLevel(child)) return true;
      }
    }
  }
  return false;
}

// A tokenizer.json "model": one pre-token in, ids out. Its vocabulary maps tokens
// to ids (added tokens aside).
class Model {
 public:
  virtual ~Model() = default;
  virtual void Tokenize(const std::string& word, std::vector<std::int64_t>& out) const = 0;
  const std::unordered_map<std::string, std::int64_t>& vocab() const { return vocab_; }

 protected:
  // model.vocab as {token: id}, ids checked and none given twice.
  absl::Status ReadVocabObject(const json& vocab, const std::string& source) {
    if (!vocab.is_object() || vocab.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": model.vocab is empty or not an object of token: id"));
    }
    vocab_.reserve(vocab.size());
    std::unordered_map<std::int64_t, std::string> token_of_id;
    token_of_id.reserve(vocab.size());
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      POSTTRAIN_ASSIGN_OR_RETURN(const std::int64_t i, CheckedId(it.value(), it.key(), source));
      if (auto [other, inserted] = token_of_id.emplace(i, it.key()); !inserted) {
        return absl::InvalidArgumentError(absl::StrCat(source, ": model.vocab gives id ", i, " to both '", other->second,
                                                       "' and '", it.key(), "'"));
      }
      vocab_.emplace(it.key(), i);
    }
    return absl::OkStatus();
  }
  // The id of model[key] (a token that must be in the vocabulary), or `fallback`'s.
  absl::StatusOr<std::int64_t> RequiredToken(const json& model, const char* key, const std::string& fallback,
                                             const std::string& why, const std::string& source) const {
    const std::string token = Str(model, key, fallback);
    auto it = vocab_.find(token);
    if (it == vocab_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": model.", key, " '", token, "' is not in model.vocab (", why, ")"));
    }
    return it->second;
  }
  // Ids of the byte-fallback tokens <0xAB> of `bytes`, or nothing if one is missing.
  std::optional<std::vector<std::int64_t>> ByteTokens(absl::string_view bytes) const {
    std::vector<std::int64_t> ids;
    for (unsigned char c : bytes) {
      auto b = vocab_.find(absl::StrFormat("<0x%02X>", c));
      if (b == vocab_.end()) return std::nullopt;
      ids.push_back(b->second);
    }
    return ids;
  }

  std::unordered_map<std::string, std::int64_t> vocab_;
};

// BPE (byte-pair encoding): a word's characters merged pairwise by merge rank.
class BpeModel final : public Model {
 public:
  absl::Status Init(const json& model, bool byte_level_covered, const std::string& source) {
    POSTTRAIN_RETURN_IF_ERROR(ReadVocabObject(model.at("vocab"), source));
    prefix_ = Str(model, "continuing_subword_prefix");
    suffix_ = Str(model, "end_of_word_suffix");
    if (model.contains("dropout") && model["dropout"].is_number() && model["dropout"].get<double>() > 0) {
      return absl::UnimplementedError(absl::StrCat(source, ": BPE dropout (", model["dropout"].dump(),
                                                   ") makes encoding random; set it to null for a deterministic tokenizer"));
    }
    byte_fallback_ = model.value("byte_fallback", false);
    fuse_unk_ = model.value("fuse_unk", false);
    ignore_merges_ = model.value("ignore_merges", false);
    if (model.contains("unk_token") && model["unk_token"].is_string()) {
      POSTTRAIN_ASSIGN_OR_RETURN(unk_id_, RequiredToken(model, "unk_token", "", "text outside the vocabulary maps to it", source));
    }
    // Text outside the vocabulary must map somewhere: to bytes (byte_fallback, or
    // a byte-level pre-tokenizer whose 256 symbols are all in the vocabulary) or to
    // unk; otherwise characters would be dropped without a word.
    if (!unk_id_ && !byte_fallback_ && !byte_level_covered) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": the BPE model has no unk_token, no byte_fallback and no byte-level pre-tokenizer: "
                  "characters outside its vocabulary would be dropped"));
    }
    const json& merges = model.at("merges");
    merges_.reserve(merges.size() * 2);
    std::int64_t rank = 0;
    std::string a, b, ab;
    for (const json& m : merges) {
      if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get_ref<const std::string&>();
        b = m[1].get_ref<const std::string&>();
      } else if (m.is_string()) {
        const std::string& s = m.get_ref<const std::string&>();
        const size_t space = s.find(' ', 1);
        if (space == std::string::npos) return absl::InvalidArgumentError(absl::StrCat(source, ": merge '", s, "' has no space"));
        a.assign(s, 0, space);
        b.assign(s, space + 1, std::string::npos);
      } else {
        return absl::InvalidArgumentError(absl::StrCat(source, ": malformed merge ", m.dump()));
      }
      // With a continuing_subword_prefix the second part carries it; the merged
      // token does not ("a" + "##b" = "ab").
      if (!prefix_.empty() && b.rfind(prefix_, 0) != 0) {
        return absl::InvalidArgumentError(absl::StrCat(source, ": merge '", a, " ", b, "': the second token lacks the continuing_subword_prefix '", prefix_, "'"));
      }
      ab.assign(a).append(b, prefix_.size(), std::string::npos);
      auto ia = vocab_.find(a), ib = vocab_.find(b), iab = vocab_.find(ab);
      if (ia == vocab_.end() || ib == vocab_.end() || iab == vocab_.end()) {
        return absl::InvalidArgumentError(absl::StrCat(source, ": merge '", a, " ", b, "' uses tokens not in the vocabulary"));
      }
      merges_.emplace(PairKey(ia->second, ib->second), std::make_pair(rank++, iab->second));
    }
    return absl::OkStatus();
  }

  // BPE on one pre-token, with a cache of recent words.
  void Tokenize(const std::string& word, std::vector<std::int64_t>& out) const override {
    if (word.empty()) return;
    {
      std::lock_guard<std::mutex> lock(cache_mutex_);
      auto it = cache_.find(word);
      if (it != cache_.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<std::int64_t> symbols;
    if (auto it = vocab_.find(word); ignore_merges_ && it != vocab_.end()) {
      symbols.push_back(it->second);
    } else {
      symbols = Merge(word);
    }
    out.insert(out.end(), symbols.begin(), symbols.end());
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() > 200000) cache_.clear();
    cache_.emplace(word, std::move(symbols));
  }

 private:
  static std::uint64_t PairKey(std::int64_t a, std::int64_t b) {
    return (static_cast<std::uint64_t>(a) << 32) | static_cast<std::uint64_t>(b);
  }

  std::vector<std::int64_t> Merge(const std::string& word) const {
    std::vector<std::int64_t> symbols;
    std::vector<bool> mergeable;  // byte-fallback and unk symbols never merge
    std::string symbol;
    for (size_t i = 0; i < word.size();) {
      const size_t n = Utf8Length(word, i);
      // The initial symbol: the character, after the first with the
      // continuing_subword_prefix, the last with the end_of_word_suffix.
      symbol.assign(i == 0 ? "" : prefix_).append(word, i, n);
      if (i + n == word.size()) symbol += suffix_;
      auto it = vocab_.find(symbol);
      if (it != vocab_.end()) {
        symbols.push_back(it->second);
        mergeable.push_back(true);
      } else {
        std::optional<std::vector<std::int64_t>> bytes;
        if (byte_fallback_) bytes = ByteTokens(absl::string_view(word).substr(i, n));
        if (bytes) {
          for (std::int64_t b : *bytes) {
            symbols.push_back(b);
            mergeable.push_back(false);
          }
        } else if (unk_id_) {
          if (!(fuse_unk_ && !symbols.empty() && symbols.back() == *unk_id_ && !mergeable.back())) {
            symbols.push_back(*unk_id_);
            mergeable.push_back(false);
          }
        }
      }
      i += n;
    }
    // Repeatedly merge the adjacent pair of lowest rank, leftmost on ties.
    if (symbols.size() <= kShortWord) return MergeShort(std::move(symbols), std::move(mergeable));
    // A long word (a DNA string, a base64 blob) costs what its length does, not its
    // square: symbols in a linked list, candidate pairs in a heap ordered by (rank,
    // position), stale candidates skipped when popped.
    const auto n = static_cast<std::int64_t>(symbols.size());
    std::vector<std::int64_t> next(static_cast<size_t>(n)), prev(static_cast<size_t>(n));
    std::vector<bool> alive(static_cast<size_t>(n), true);
    for (std::int64_t i = 0; i < n; ++i) {
      next[static_cast<size_t>(i)] = i + 1 < n ? i + 1 : -1;
      prev[static_cast<size_t>(i)] = i - 1;
    }
    struct Candidate {
      std::int64_t rank, pos, id;
      bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
    auto push = [&](std::int64_t left) {
      const std::int64_t right = left < 0 ? -1 : next[static_cast<size_t>(left)];
      if (right < 0 || !mergeable[static_cast<size_t>(left)] || !mergeable[static_cast<size_t>(right)]) return;
      auto it = merges_.find(PairKey(symbols[static_cast<size_t>(left)], symbols[static_cast<size_t>(right)]));
      if (it != merges_.end()) heap.push({it->second.first, left, it->second.second});
    };
    for (std::int64_t i = 0; i + 1 < n; ++i) push(i);
    while (!heap.empty()) {
      const Candidate top = heap.top();
      heap.pop();
      const auto left = static_cast<size_t>(top.pos);
      if (!alive[left] || next[left] < 0) continue;
      const auto right = static_cast<size_t>(next[left]);
      auto it = merges_.find(PairKey(symbols[left], symbols[right]));
      if (it == merges_.end() || it->second.second != top.id) continue;  // the pair changed since
      symbols[left] = top.id;
      alive[right] = false;
      next[left] = next[right];
      if (next[left] >= 0) prev[static_cast<size_t>(next[left])] = top.pos;
      push(prev[left]);
      push(top.pos);
    }
    std::vector<std::int64_t> out;
    for (std::int64_t i = 0; i >= 0; i = next[static_cast<size_t>(i)]) out.push_back(symbols[static_cast<size_t>(i)]);
    return out;
  }

  // Words up to this many symbols rescan their pairs after each merge: O(n²) with no
  // allocation, 15-20% faster than the heap on ordinary words (tokenizer_bench).
  static constexpr size_t kShortWord = 32;
  std::vector<std::int64_t> MergeShort(std::vector<std::int64_t> symbols, std::vector<bool> mergeable) const {
    while (symbols.size() > 1) {
      std::int64_t best_rank = -1, best_id = 0;
      size_t best_pos = 0;
      for (size_t i = 0; i + 1 < symbols.size(); ++i) {
        if (!mergeable[i] || !mergeable[i + 1]) continue;
        auto it = merges_.find(PairKey(symbols[i], symbols[i + 1]));
        if (it != merges_.end() && (best_rank < 0 || it->second.first < best_rank)) {
          best_rank = it->second.first;
          best_id = it->second.second;
          best_pos = i;
        }
      }
      if (best_rank < 0) break;
      symbols[best_pos] = best_id;
      symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best_pos) + 1);
      mergeable.erase(mergeable.begin() + static_cast<std::ptrdiff_t>(best_pos) + 1);
    }
    return symbols;
  }

  std::unordered_map<std::uint64_t, std::pair<std::int64_t, std::int64_t>> merges_;  // → (rank, merged id)
  std::optional<std::int64_t> unk_id_;
  std::string prefix_, suffix_;
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<std::int64_t>> cache_;
};

// WordPiece (BERT): greedy longest match from the left; pieces after the first
// carry the continuing_subword_prefix; a word with no such cover, or longer than
// max_input_chars_per_word characters, is one unk_token.
class WordPieceModel final : public Model {
 public:
  absl::Status Init(const json& model, const std::string& source) {
    POSTTRAIN_RETURN_IF_ERROR(ReadVocabObject(model.at("vocab"), source));
    POSTTRAIN_ASSIGN_OR_RETURN(unk_id_, RequiredToken(model, "unk_token", "[UNK]", "words it cannot cover map to it", source));
    prefix_ = Str(model, "continuing_subword_prefix", "##");
    max_chars_ = model.value("max_input_chars_per_word", std::int64_t{100});
    for (const auto& [token, id] : vocab_) max_token_bytes_ = std::max(max_token_bytes_, token.size());
    return absl::OkStatus();
  }

  void Tokenize(const std::string& word, std::vector<std::int64_t>& out) const override {
    if (word.empty()) return;
    std::vector<size_t> bounds;  // character boundaries, 0 .. size
    for (size_t i = 0; i < word.size(); i += Utf8Length(word, i)) bounds.push_back(i);
    bounds.push_back(word.size());
    if (static_cast<std::int64_t>(bounds.size()) - 1 > max_chars_) {
      out.push_back(unk_id_);
      return;
    }
    std::vector<std::int64_t> pieces;
    std::string candidate;
    for (size_t start = 0; start + 1 < bounds.size();) {
      // Candidates no longer than the longest token (a long word costs n·L, not n²).
      const auto last = std::upper_bound(bounds.begin() + static_cast<std::ptrdiff_t>(start) + 1, bounds.end(),
                                         bounds[start] + max_token_bytes_);
      size_t end = std::max(start + 1, static_cast<size_t>(last - bounds.begin()) - 1);
      std::optional<std::int64_t> found;
      for (; end > start; --end) {
        candidate.assign(start == 0 ? "" : prefix_).append(word, bounds[start], bounds[end] - bounds[start]);
        if (auto it = vocab_.find(candidate); it != vocab_.end()) {
          found = it->second;
          break;
        }
      }
      if (!found) {
        out.push_back(unk_id_);
        return;
      }
      pieces.push_back(*found);
      start = end;
    }
    out.insert(out.end(), pieces.begin(), pieces.end());
  }

 private:
  std::int64_t unk_id_ = 0, max_chars_ = 100;
  size_t max_token_bytes_ = 0;
  std::string prefix_;
};

// WordLevel: a word is its vocabulary entry or unk_token.
class WordLevelModel final : public Model {
 public:
  absl::Status Init(const json& model, const std::string& source) {
    POSTTRAIN_RETURN_IF_ERROR(ReadVocabObject(model.at("vocab"), source));
    POSTTRAIN_ASSIGN_OR_RETURN(unk_id_, RequiredToken(model, "unk_token", "<unk>", "words outside the vocabulary map to it", source));
    return absl::OkStatus();
  }
  void Tokenize(const std::string& word, std::vector<std::int64_t>& out) const override {
    if (word.empty()) return;
    auto it = vocab_.find(word);
    out.push_back(it == vocab_.end() ? unk_id_ : it->second);
  }

 private:
  std::int64_t unk_id_ = 0;
};

// Unigram (SentencePiece's unigram language model): the segmentation with the
// highest total log-probability (Viterbi over the word's characters). A character
// no piece covers is unk, scored min(score) - 10; adjacent unks fuse into one,
// which with byte_fallback becomes its bytes' <0xAB> tokens.
class UnigramModel final : public Model {
 public:
  absl::Status Init(const json& model, const std::string& source) {
    const json& vocab = model.at("vocab");
    if (!vocab.is_array() || vocab.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": model.vocab is empty or not a list of [piece, score]"));
    }
    if (static_cast<std::int64_t>(vocab.size()) >= kMaxTokenId) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": model.vocab has ", vocab.size(), " pieces, over ", kMaxTokenId));
    }
    scores_.reserve(vocab.size());
    vocab_.reserve(vocab.size());
    double min_score = 0;
    for (size_t i = 0; i < vocab.size(); ++i) {
      const json& entry = vocab[i];
      if (!entry.is_array() || entry.size() != 2 || !entry[0].is_string() || !entry[1].is_number()) {
        return absl::InvalidArgumentError(absl::StrCat(source, ": model.vocab[", i, "] is not [piece, score]: ", entry.dump()));
      }
      const std::string& piece = entry[0].get_ref<const std::string&>();
      const double score = entry[1].get<double>();
      if (!std::isfinite(score)) {
        return absl::InvalidArgumentError(absl::StrCat(source, ": model.vocab[", i, "] ('", piece, "') has score ", score));
      }
      if (piece.empty()) return absl::InvalidArgumentError(absl::StrCat(source, ": model.vocab[", i, "] is an empty piece"));
      // A repeated piece keeps its first id (as SentencePiece's trie).
      if (vocab_.emplace(piece, static_cast<std::int64_t>(i)).second) max_piece_bytes_ = std::max(max_piece_bytes_, piece.size());
      scores_.push_back(score);
      min_score = i == 0 ? score : std::min(min_score, score);
    }
    unk_score_ = min_score - 10.0;
    if (!model.contains("unk_id") || model["unk_id"].is_null()) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": the Unigram model has no unk_id: text outside its pieces could not be encoded"));
    }
    POSTTRAIN_ASSIGN_OR_RETURN(unk_id_, CheckedId(model["unk_id"], "unk_id", source));
    if (unk_id_ >= static_cast<std::int64_t>(vocab.size())) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": unk_id ", unk_id_, " is outside model.vocab (", vocab.size(), " pieces)"));
    }
    byte_fallback_ = model.value("byte_fallback", false);
    return absl::OkStatus();
  }

  void Tokenize(const std::string& word, std::vector<std::int64_t>& out) const override {
    if (word.empty()) return;
    // best[e]: the best segmentation of word[0, e): score, start of its last piece, id.
    struct Best {
      double score = 0;
      std::int64_t start = -1;  // -1: not reached
      std::int64_t id = 0;
    };
    std::vector<Best> best(word.size() + 1);
    best[0].start = 0;
    std::string piece;
    for (size_t start = 0; start < word.size();) {
      const size_t char_len = Utf8Length(word, start);
      const double here = best[start].score;
      bool single_char = false;
      // Pieces starting here, shortest first (the order of a prefix search).
      piece.clear();
      for (size_t end = start; end < word.size() && end - start < max_piece_bytes_;) {
        const size_t n = Utf8Length(word, end);
        piece.append(word, end, n);
        end += n;
        auto it = vocab_.find(piece);
        if (it == vocab_.end()) continue;
        const double score = here + scores_[static_cast<size_t>(it->second)];
        Best& target = best[end];
        if (target.start < 0 || score > target.score) target = {score, static_cast<std::int64_t>(start), it->second};
        if (end - start == char_len) single_char = true;
      }
      if (!single_char) {
        Best& target = best[start + char_len];
        const double score = here + unk_score_;
        if (target.start < 0 || score > target.score) target = {score, static_cast<std::int64_t>(start), unk_id_};
      }
      start += char_len;
    }
    // Back from the end: pieces in reverse, adjacent unks fused.
    std::vector<std::pair<std::int64_t, std::string>> pieces;  // (id, text)
    for (std::int64_t end = static_cast<std::int64_t>(word.size()); end > 0;) {
      const Best& b = best[static_cast<size_t>(end)];
      std::string text = word.substr(static_cast<size_t>(b.start), static_cast<size_t>(end - b.start));
      if (b.id == unk_id_ && !pieces.empty() && pieces.back().first == unk_id_) {
        pieces.back().second = text + pieces.back().second;
      } else {
        pieces.emplace_back(b.id, std::move(text));
      }
      end = b.start;
    }
    for (auto it = pieces.rbegin(); it != pieces.rend(); ++it) {
      if (it->first == unk_id_ && byte_fallback_) {
        if (auto bytes = ByteTokens(it->second)) {
          out.insert(out.end(), bytes->begin(), bytes->end());
          continue;
        }
      }
      out.push_back(it->first);
    }
  }

 private:
  std::vector<double> scores_;
  double unk_score_ = 0;
  std::int64_t unk_id_ = 0;
  size_t max_piece_bytes_ = 0;
  bool byte_fallback_ = false;
};

absl::StatusOr<std::unique_ptr<Model>> MakeModel(const json& j, const std::string& source) {
  const json& model = j.at("model");
  const std::string type = Str(model, "type", "BPE");
  if (type == "BPE") {
    auto m = std::make_unique<BpeModel>();
    POSTTRAIN_RETURN_IF_ERROR(m->Init(model, j.contains("pre_tokenizer") && HasByteLevel(j["pre_tokenizer"]), source));
    return std::unique_ptr<Model>(std::move(m));
  }
  if (type == "WordPiece") {
    auto m = std::make_unique<WordPieceModel>();
    POSTTRAIN_RETURN_IF_ERROR(m->Init(model, source));
    return std::unique_ptr<Model>(std::move(m));
  }
  if (type == "WordLevel") {
    auto m = std::make_unique<WordLevelModel>();
    POSTTRAIN_RETURN_IF_ERROR(m->Init(model, source));
    return std::unique_ptr<Model>(std::move(m));
  }
  if (type == "Unigram") {
    auto m = std::make_unique<UnigramModel>();
    POSTTRAIN_RETURN_IF_ERROR(m->Init(model, source));
    return std::unique_ptr<Model>(std::move(m));
  }
  return absl::UnimplementedError(absl::StrCat(source, ": model type '", type,
                                               "' is not supported (BPE, WordPiece, WordLevel, Unigram)"));
}

// ---- The tokenizer -----------------------------------------------------------

struct AddedToken {
  std::int64_t id;
  std::string content;  // as matched: normalised for a `normalized` token
  bool special, lstrip, rstrip, single_word;
};

// Text split around added tokens: each segment is text (token == nullptr) or one
// added token.
struct Segment {
  std::string text;
  const AddedToken* token = nullptr;
};

// Added tokens matched leftmost-longest in a text, as the tokenizers crate's added
// vocabulary: a single_word token only between non-word characters (a rejected
// match is passed over whole), lstrip/rstrip take the whitespace beside the token.
class AddedTokenMatcher {
 public:
  // Indexes `tokens` (which must outlive the matcher) by first byte, longest first.
  void Build(const std::vector<AddedToken>& tokens) {
    for (const AddedToken& t : tokens) {
      if (t.content.empty()) continue;
      by_first_byte_[static_cast<unsigned char>(t.content[0])].push_back(&t);
      empty_ = false;
    }
    for (auto& bucket : by_first_byte_) {
      std::stable_sort(bucket.begin(), bucket.end(),
                       [](const AddedToken* a, const AddedToken* b) { return a->content.size() > b->content.size(); });
    }
  }

  std::vector<Segment> Split(const std::string& text) const {
    std::vector<Segment> out;
    if (empty_) {
      out.push_back({text, nullptr});
      return out;
    }
    size_t start = 0;  // of the pending text
    for (size_t i = 0; i < text.size();) {
      const AddedToken* match = nullptr;
      for (const AddedToken* a : by_first_byte_[static_cast<unsigned char>(text[i])]) {
        if (text.compare(i, a->content.size(), a->content) == 0) {
          match = a;
          break;
        }
      }
      if (match == nullptr) {
        ++i;
        continue;
      }
      size_t begin = i, end = i + match->content.size();
      if (match->single_word && (IsWordBefore(text, begin) || IsWordAt(text, end))) {
        i = end;  // passed over whole
        continue;
      }
      if (match->lstrip) {
        while (begin > start && IsWhitespaceBefore(text, begin)) begin -= CharLengthBefore(text, begin);
      }
      if (match->rstrip) {
        while (end < text.size() && IsWhitespace(DecodeCodepoint(absl::string_view(text).substr(end, Utf8Length(text, end))))) {
          end += Utf8Length(text, end);
        }
      }
      if (begin > start) out.push_back({text.substr(start, begin - start), nullptr});
      out.push_back({match->content, match});
      start = i = end;
    }
    if (start < text.size()) out.push_back({text.substr(start), nullptr});
    return out;
  }

 private:
  static size_t CharLengthBefore(const std::string& s, size_t pos) {
    size_t k = pos - 1;
    while (k > 0 && (static_cast<unsigned char>(s[k]) & 0xc0) == 0x80) --k;
    return Utf8Length(s, k) == pos - k ? pos - k : 1;
  }
  static std::uint32_t CodepointBefore(const std::string& s, size_t pos) {
    const size_t n = CharLengthBefore(s, pos);
    return DecodeCodepoint(absl::string_view(s).substr(pos - n, n));
  }
  static bool IsWordChar(std::uint32_t c) {  // char::is_alphanumeric or '_'
    if (c == '_') return true;
    const utf8proc_category_t cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
    return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
           (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
  }
  static bool IsWordBefore(const std::string& s, size_t pos) { return pos > 0 && IsWordChar(CodepointBefore(s, pos)); }
  static bool IsWordAt(const std::string& s, size_t pos) {
    return pos < s.size() && IsWordChar(DecodeCodepoint(absl::string_view(s).substr(pos, Utf8Length(s, pos))));
  }
  static bool IsWhitespaceBefore(const std::string& s, size_t pos) { return IsWhitespace(CodepointBefore(s, pos)); }

  std::vector<const AddedToken*> by_first_byte_[256];
  bool empty_ = true;
};

class HfTokenizer final : public Tokenizer {
 public:
  absl::Status Init(const json& j, const json& config, const std::string& source) {
    POSTTRAIN_ASSIGN_OR_RETURN(model_, MakeModel(j, source));
    for (const auto& [token, id] : model_->vocab()) max_id_ = std::max(max_id_, id);
    if (j.contains("normalizer") && !j["normalizer"].is_null()) {
      POSTTRAIN_ASSIGN_OR_RETURN(normalizer_, MakeNormalizer(j["normalizer"]));
    }
    if (j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null()) {
      POSTTRAIN_ASSIGN_OR_RETURN(pre_tokenizer_, MakePreTokenizer(j["pre_tokenizer"]));
    }
    if (j.contains("decoder") && !j["decoder"].is_null()) {
      POSTTRAIN_ASSIGN_OR_RETURN(decoder_, MakeDecoder(j["decoder"]));
    }
    if (j.contains("post_processor") && !j["post_processor"].is_null()) {
      POSTTRAIN_RETURN_IF_ERROR(ParsePostProcessor(j["post_processor"], source));
    }
    for (const json& t : j.value("added_tokens", json::array())) {
      POSTTRAIN_ASSIGN_OR_RETURN(const std::int64_t id, CheckedId(t.at("id"), t.value("content", std::string()), source));
      const bool special = t.value("special", false);
      AddedToken added{id, t.at("content").get<std::string>(), special, t.value("lstrip", false), t.value("rstrip", false),
                       t.value("single_word", false)};
      max_id_ = std::max(max_id_, added.id);
      contents_.emplace_back(id, added.content);
      // A `normalized` token is matched in the normalised text, by its normalised content.
      const bool normalized = t.value("normalized", !special);
      if (normalized && normalizer_) normalizer_(added.content);
      (normalized ? normalized_added_ : raw_added_).push_back(added);
    }
    raw_matcher_.Build(raw_added_);
    normalized_matcher_.Build(normalized_added_);
    id_to_token_.assign(static_cast<size_t>(max_id_ + 1), std::string());
    for (const auto& [token, id] : model_->vocab()) id_to_token_[static_cast<size_t>(id)] = token;
    for (const auto& [id, content] : contents_) id_to_token_[static_cast<size_t>(id)] = content;
    for (const auto* list : {&raw_added_, &normalized_added_}) {
      for (const AddedToken& a : *list) {
        if (a.special) special_ids_.insert(a.id);
      }
    }
    auto special_id = [&](const char* key) -> std::optional<std::int64_t> {
      if (!config.contains(key)) return std::nullopt;
      const json& v = config[key];
      std::string content = v.is_string() ? v.get<std::string>()
                            : v.is_object() ? Str(v, "content") : std::string();
      if (content.empty()) return std::nullopt;
      return TokenToId(content);
    };
    bos_token_id_ = special_id("bos_token");
    eos_token_id_ = special_id("eos_token");
    pad_token_id_ = special_id("pad_token");
    // transformers' Llama, CodeLlama and Gemma tokenizers rebuild the post-processor
    // from tokenizer_config.json (update_post_processor): bos if add_bos_token (default
    // true), eos if add_eos_token (default false), whatever tokenizer.json says.
    static const std::set<std::string> kRebuilt = {"LlamaTokenizer", "LlamaTokenizerFast", "CodeLlamaTokenizer",
                                                   "CodeLlamaTokenizerFast", "GemmaTokenizer", "GemmaTokenizerFast"};
    if (config.contains("tokenizer_class") && config["tokenizer_class"].is_string() &&
        kRebuilt.count(config["tokenizer_class"].get<std::string>()) > 0) {
      const bool add_bos = config.contains("add_bos_token") && !config["add_bos_token"].is_null() ? config["add_bos_token"].get<bool>() : true;
      const bool add_eos = config.contains("add_eos_token") && !config["add_eos_token"].is_null() ? config["add_eos_token"].get<bool>() : false;
      if ((add_bos && !bos_token_id_) || (add_eos && !eos_token_id_)) {
        return absl::InvalidArgumentError(absl::StrCat(source, ": tokenizer_config.json sets add_", add_bos && !bos_token_id_ ? "bos" : "eos",
                                                       "_token but its token is missing or not in the vocabulary"));
      }
      prefix_ids_.clear();
      suffix_ids_.clear();
      if (add_bos) prefix_ids_.push_back(*bos_token_id_);
      if (add_eos) suffix_ids_.push_back(*eos_token_id_);
    }
    if (!bos_token_id_ && !prefix_ids_.empty()) bos_token_id_ = prefix_ids_.front();
    return absl::OkStatus();
  }

  std::vector<std::int64_t> Encode(absl::string_view text, bool add_special_tokens) const override {
    std::vector<std::int64_t> ids;
    if (add_special_tokens) ids = prefix_ids_;
    bool first = true;  // no added token before: Metaspace's prepend_scheme "first"
    for (Segment& section : raw_matcher_.Split(std::string(text))) {
      if (section.token != nullptr) {
        ids.push_back(section.token->id);
        first = false;
        continue;
      }
      if (normalizer_) normalizer_(section.text);
      for (const Segment& piece : normalized_matcher_.Split(section.text)) {
        if (piece.token != nullptr) {
          ids.push_back(piece.token->id);
        } else if (!piece.text.empty()) {
          std::vector<std::string> words = {piece.text};
          if (pre_tokenizer_) pre_tokenizer_(words, first);
          for (const std::string& word : words) model_->Tokenize(word, ids);
        }
        first = false;
      }
    }
    if (add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
    return ids;
  }

  std::string Decode(absl::Span<const std::int64_t> ids, bool skip_special_tokens) const override {
    std::vector<std::string> tokens;
    for (std::int64_t id : ids) {
      if (id < 0 || id > max_id_) continue;
      if (skip_special_tokens && special_ids_.count(id) > 0) continue;
      tokens.push_back(id_to_token_[static_cast<size_t>(id)]);
    }
    if (decoder_) decoder_(tokens);
    return Utf8Lossy(absl::StrJoin(tokens, ""));
  }

  std::int64_t vocab_size() const override { return max_id_ + 1; }

  std::optional<std::int64_t> TokenToId(absl::string_view token) const override {
    for (const auto& [id, content] : contents_) {
      if (content == token) return id;
    }
    auto it = model_->vocab().find(std::string(token));
    if (it == model_->vocab().end()) return std::nullopt;
    return it->second;
  }

  std::string IdToToken(std::int64_t id) const override {
    if (id < 0 || id > max_id_) return "";
    return id_to_token_[static_cast<size_t>(id)];
  }

 private:
  absl::Status ParsePostProcessor(const json& p, const std::string& source) {
    const std::string type = Str(p, "type");
    if (type == "ByteLevel") return absl::OkStatus();
    if (type == "Sequence") {
      for (const json& item : p.at("processors")) POSTTRAIN_RETURN_IF_ERROR(ParsePostProcessor(item, source));
      return absl::OkStatus();
    }
    if (type == "BertProcessing" || type == "RobertaProcessing") {  // cls A sep
      const json defaults = type == "BertProcessing" ? json{{"cls", {"[CLS]", 101}}, {"sep", {"[SEP]", 102}}}
                                                     : json{{"cls", {"<s>", 0}}, {"sep", {"</s>", 2}}};
      for (auto [key, ids] : {std::pair{"cls", &prefix_ids_}, {"sep", &suffix_ids_}}) {
        const json& token = p.contains(key) ? p[key] : defaults[key];
        if (!token.is_array() || token.size() != 2 || !token[0].is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(source, ": post_processor ", type, ".", key, " is not [token, id]: ", token.dump()));
        }
        POSTTRAIN_ASSIGN_OR_RETURN(const std::int64_t id, CheckedId(token[1], token[0].get<std::string>(), source));
        ids->push_back(id);
      }
      return absl::OkStatus();
    }
    if (type != "TemplateProcessing") {
      return absl::UnimplementedError(absl::StrCat("post_processor type '", type, "' is not supported"));
    }
    bool after_sequence = false;
    for (const json& item : p.at("single")) {
      if (item.contains("Sequence")) {
        after_sequence = true;
        continue;
      }
      const std::string name = item.at("SpecialToken").at("id").get<std::string>();
      const json& special = p.at("special_tokens").at(name);
      for (const json& id : special.at("ids")) {
        POSTTRAIN_ASSIGN_OR_RETURN(const std::int64_t checked, CheckedId(id, name, source));
        (after_sequence ? suffix_ids_ : prefix_ids_).push_back(checked);
      }
    }
    return absl::OkStatus();
  }

  std::unique_ptr<Model> model_;
  std::vector<std::string> id_to_token_;
  std::vector<std::pair<std::int64_t, std::string>> contents_;  // added tokens as written
  std::vector<AddedToken> raw_added_, normalized_added_;         // reserved: the matchers point into them
  AddedTokenMatcher raw_matcher_, normalized_matcher_;
  std::set<std::int64_t> special_ids_;
  std::int64_t max_id_ = -1;
  Normalizer normalizer_;
  PreTokenizer pre_tokenizer_;
  Decoder decoder_;
  std::vector<std::int64_t> prefix_ids_, suffix_ids_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> ParseHfTokenizer(absl::string_view tokenizer_json,
                                                            absl::string_view config_json,
                                                            const std::string& source) {
  json j = json::parse(tokenizer_json.data(), tokenizer_json.data() + tokenizer_json.size(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, " is not valid JSON"));
  }
  json config = json::object();
  if (!config_json.empty()) {
    config = json::parse(config_json.begin(), config_json.end(), nullptr, false);
    if (config.is_discarded() || !config.is_object()) config = json::object();
  }
  auto tokenizer = std::make_unique<HfTokenizer>();
  absl::Status status;
  try {
    status = tokenizer->Init(j, config, source);
  } catch (const json::exception& e) {
    status = absl::InvalidArgumentError(absl::StrCat(source, ": unexpected structure: ", e.what()));
  }
  if (!status.ok()) {
    return absl::StartsWith(status.message(), source) ? status : Annotate(status, source);
  }
  return std::unique_ptr<Tokenizer>(std::move(tokenizer));
}

}  // namespace posttrain
