#include "lexer.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/str_cat.h"
#include "value.h"

namespace posttrain::chat {
namespace {

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Jinja2's lexer first turns every newline sequence of the source ("\r\n", "\r", "\n")
// into its newline_sequence, "\n": in text, in string literals, and before trim_blocks
// and lstrip_blocks look for line ends. A template saved with CRLF line ends renders
// with "\n".
std::string NormalizeNewlines(const std::string& source) {
  std::string out;
  out.reserve(source.size());
  for (std::size_t i = 0; i < source.size(); ++i) {
    if (source[i] != '\r') {
      out += source[i];
      continue;
    }
    out += '\n';
    if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string source) : src_(NormalizeNewlines(source)) {
    // keep_trailing_newline = False: one trailing newline is dropped.
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  std::vector<Token> Run() {
    while (pos_ < src_.size()) {
      std::size_t open = FindTagStart(pos_);
      std::string text = src_.substr(pos_, open - pos_);
      int text_line = line_;
      Advance(open);
      if (open == src_.size()) {
        EmitText(std::move(text), text_line, /*next_strip=*/false, /*next_lstrip=*/false, open);
        break;
      }
      char kind = src_[open + 1];
      bool strip_before = open + 2 < src_.size() && src_[open + 2] == '-';
      bool keep_indent = open + 2 < src_.size() && src_[open + 2] == '+';
      bool lstrip = (kind == '%' || kind == '#') && !keep_indent;
      EmitText(std::move(text), text_line, strip_before, lstrip, open);
      Advance(open + 2 + ((strip_before || keep_indent) ? 1 : 0));
      if (kind == '#') {
        LexComment(open);
      } else if (kind == '{') {
        tokens_.push_back({Token::Type::kVariableBegin, "{{", line_});
        LexTag("}}", Token::Type::kVariableEnd, open);
      } else {
        if (TryRaw(open)) continue;
        tokens_.push_back({Token::Type::kBlockBegin, "{%", line_});
        LexTag("%}", Token::Type::kBlockEnd, open);
      }
    }
    tokens_.push_back({Token::Type::kEnd, "", line_});
    return std::move(tokens_);
  }

 private:
  std::size_t FindTagStart(std::size_t from) const {
    for (std::size_t i = from; i + 1 < src_.size(); ++i) {
      if (src_[i] == '{' && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    }
    return src_.size();
  }

  void Advance(std::size_t to) {
    for (; pos_ < to; ++pos_) {
      if (src_[pos_] == '\n') ++line_;
    }
  }

  // Text before a tag: the previous tag's right-hand rules, then this tag's left-hand.
  // `tag` is the source offset of the next tag's '{'.
  void EmitText(std::string text, int line, bool next_strip, bool next_lstrip, std::size_t tag) {
    if (strip_next_) {
      std::size_t i = 0;
      while (i < text.size() && IsSpace(text[i])) ++i;
      text.erase(0, i);
    } else if (trim_next_newline_) {
      if (!text.empty() && text[0] == '\n') text.erase(0, 1);
    }
    strip_next_ = trim_next_newline_ = false;
    if (next_strip) {
      while (!text.empty() && IsSpace(text.back())) text.pop_back();
    } else if (next_lstrip) {
      // lstrip_blocks: only spaces and tabs between the line's start (in the source)
      // and the tag.
      std::size_t s = tag;
      while (s > 0 && (src_[s - 1] == ' ' || src_[s - 1] == '\t')) --s;
      std::size_t blanks = tag - s;
      if ((s == 0 || src_[s - 1] == '\n') && blanks <= text.size()) text.erase(text.size() - blanks);
    }
    if (!text.empty()) tokens_.push_back({Token::Type::kText, std::move(text), line});
  }

  // After a tag's closing delimiter: `-` strips, trim_blocks drops one newline.
  void AfterTag(bool strip_after, bool is_block) {
    strip_next_ = strip_after;
    trim_next_newline_ = !strip_after && is_block;
  }

  void LexComment(std::size_t open) {
    int start_line = line_;
    std::size_t close = src_.find("#}", pos_);
    if (close == std::string::npos) {
      throw TemplateError(absl::StrCat("unterminated comment (opened at line ", start_line, ")"), start_line);
    }
    bool strip_after = close > open + 2 && src_[close - 1] == '-';
    Advance(close + 2);
    AfterTag(strip_after, /*is_block=*/true);
  }

  // {% raw %} ... {% endraw %}: the text between, verbatim.
  bool TryRaw(std::size_t open) {
    std::size_t i = pos_;
    while (i < src_.size() && IsSpace(src_[i])) ++i;
    if (src_.compare(i, 3, "raw") != 0) return false;
    i += 3;
    while (i < src_.size() && IsSpace(src_[i])) ++i;
    bool strip_after = i < src_.size() && src_[i] == '-';
    if (strip_after) ++i;
    if (src_.compare(i, 2, "%}") != 0) return false;
    std::size_t body = i + 2;
    int start_line = line_;
    for (std::size_t j = body; j < src_.size(); ++j) {
      if (src_.compare(j, 2, "{%") != 0) continue;
      std::size_t k = j + 2;
      bool strip_before = k < src_.size() && src_[k] == '-';
      if (strip_before || (k < src_.size() && src_[k] == '+')) ++k;
      while (k < src_.size() && IsSpace(src_[k])) ++k;
      if (src_.compare(k, 6, "endraw") != 0) continue;
      k += 6;
      while (k < src_.size() && IsSpace(src_[k])) ++k;
      bool end_strip = k < src_.size() && src_[k] == '-';
      if (end_strip) ++k;
      if (src_.compare(k, 2, "%}") != 0) continue;
      std::string text = src_.substr(body, j - body);
      Advance(body);
      AfterTag(strip_after, true);
      EmitText(std::move(text), line_, strip_before, !strip_before, j);
      Advance(k + 2);
      AfterTag(end_strip, true);
      (void)open;
      return true;
    }
    throw TemplateError(absl::StrCat("unterminated 'raw' block (opened at line ", start_line, ")"), start_line);
  }

  void LexTag(const char* close, Token::Type end_type, std::size_t open) {
    int start_line = line_;
    int depth = 0;  // brackets opened inside the tag: `}}` closes it only at depth 0
    while (true) {
      while (pos_ < src_.size() && IsSpace(src_[pos_])) Advance(pos_ + 1);
      if (pos_ >= src_.size()) {
        throw TemplateError(absl::StrCat("unexpected end of template: the tag opened at line ", start_line,
                                         " is not closed with '", close, "'"),
                            start_line);
      }
      if (depth == 0 && src_[pos_] == '-' && src_.compare(pos_ + 1, 2, close) == 0) {
        Advance(pos_ + 3);
        tokens_.push_back({end_type, close, line_});
        AfterTag(true, end_type == Token::Type::kBlockEnd);
        return;
      }
      if (depth == 0 && src_.compare(pos_, 2, close) == 0) {
        Advance(pos_ + 2);
        tokens_.push_back({end_type, close, line_});
        AfterTag(false, end_type == Token::Type::kBlockEnd);
        return;
      }
      char c = src_[pos_];
      if (c == '\'' || c == '"') {
        LexString(c);
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        LexNumber();
      } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        std::size_t start = pos_;
        while (pos_ < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_')) ++pos_;
        tokens_.push_back({Token::Type::kName, src_.substr(start, pos_ - start), line_});
      } else {
        static const char* kTwo[] = {"**", "//", "==", "!=", "<=", ">="};
        std::string op(1, c);
        for (const char* two : kTwo) {
          if (src_.compare(pos_, 2, two) == 0) op = two;
        }
        if (std::string("+-*/%~|.,:()[]{}=<>!").find(c) == std::string::npos) {
          throw TemplateError(absl::StrCat("unexpected character '", std::string(1, c), "'"), line_);
        }
        if (op == "!") throw TemplateError("unexpected character '!'", line_);
        if (c == '(' || c == '[' || c == '{') ++depth;
        if (c == ')' || c == ']' || c == '}') --depth;
        tokens_.push_back({Token::Type::kOperator, op, line_});
        Advance(pos_ + op.size());
      }
    }
    (void)open;
  }

  void LexString(char quote) {
    int start_line = line_;
    std::string value;
    std::size_t i = pos_ + 1;
    for (;; ++i) {
      if (i >= src_.size()) throw TemplateError("unterminated string", start_line);
      char c = src_[i];
      if (c == quote) break;
      if (c != '\\' || i + 1 >= src_.size()) {
        value += c;
        continue;
      }
      char e = src_[++i];
      switch (e) {
        case 'n': value += '\n'; break;
        case 't': value += '\t'; break;
        case 'r': value += '\r'; break;
        case '\\': value += '\\'; break;
        case '\'': value += '\''; break;
        case '"': value += '"'; break;
        case '\n': break;  // a backslash-newline continues the string
        case 'u':
        case 'x': {
          std::size_t n = e == 'u' ? 4 : 2;
          const std::string hex = src_.substr(i + 1, n);
          if (hex.size() != n || hex.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
            throw TemplateError(absl::StrCat("truncated \\", std::string(1, e), " escape in a string"), line_);
          }
          unsigned cp = std::stoul(hex, nullptr, 16);
          i += n;
          if (cp < 0x80) value += static_cast<char>(cp);
          else if (cp < 0x800) {
            value += static_cast<char>(0xC0 | (cp >> 6));
            value += static_cast<char>(0x80 | (cp & 0x3F));
          } else {
            value += static_cast<char>(0xE0 | (cp >> 12));
            value += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            value += static_cast<char>(0x80 | (cp & 0x3F));
          }
          break;
        }
        default: value += '\\'; value += e;  // Python keeps unknown escapes
      }
    }
    tokens_.push_back({Token::Type::kString, std::move(value), start_line});
    Advance(i + 1);
  }

  void LexNumber() {
    std::size_t start = pos_;
    bool is_float = false;
    while (pos_ < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_')) ++pos_;
    if (pos_ + 1 < src_.size() && src_[pos_] == '.' && std::isdigit(static_cast<unsigned char>(src_[pos_ + 1]))) {
      is_float = true;
      ++pos_;
      while (pos_ < src_.size() && std::isdigit(static_cast<unsigned char>(src_[pos_]))) ++pos_;
    }
    if (pos_ < src_.size() && (src_[pos_] == 'e' || src_[pos_] == 'E')) {
      std::size_t e = pos_ + 1;
      if (e < src_.size() && (src_[e] == '+' || src_[e] == '-')) ++e;
      if (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) {
        is_float = true;
        pos_ = e;
        while (pos_ < src_.size() && std::isdigit(static_cast<unsigned char>(src_[pos_]))) ++pos_;
      }
    }
    std::string text = src_.substr(start, pos_ - start);
    text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
    tokens_.push_back({is_float ? Token::Type::kFloat : Token::Type::kInteger, text, line_});
  }

  std::string src_;
  std::size_t pos_ = 0;
  int line_ = 1;
  bool strip_next_ = false;
  bool trim_next_newline_ = false;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> Tokenize(std::string source) { return Lexer(std::move(source)).Run(); }

}  // namespace posttrain::chat
