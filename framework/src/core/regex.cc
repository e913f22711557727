#include "posttrain/core/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "absl/strings/str_cat.h"

namespace posttrain {

namespace {
// Backtracking steps one match may take (PCRE2's default is 10^7): a module name is
// short, so an honest pattern needs a few thousand at most.
constexpr std::uint32_t kMatchLimit = 1'000'000;
}  // namespace

struct FullMatchRegex::Code {
  pcre2_code* code = nullptr;
  pcre2_match_context* context = nullptr;
  ~Code() {
    if (context != nullptr) pcre2_match_context_free(context);
    if (code != nullptr) pcre2_code_free(code);
  }
};

absl::StatusOr<FullMatchRegex> FullMatchRegex::Compile(const std::string& pattern) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  auto code = std::make_shared<Code>();
  code->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                             PCRE2_UTF | PCRE2_ANCHORED | PCRE2_ENDANCHORED, &error, &offset, nullptr);
  if (code->code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    return absl::InvalidArgumentError(absl::StrCat("'", pattern, "' is not a regular expression (at offset ", offset,
                                                   ": ", reinterpret_cast<char*>(message), ")"));
  }
  code->context = pcre2_match_context_create(nullptr);
  pcre2_set_match_limit(code->context, kMatchLimit);
  pcre2_set_depth_limit(code->context, kMatchLimit);
  FullMatchRegex regex;
  regex.pattern_ = pattern;
  regex.code_ = std::move(code);
  return regex;
}

absl::StatusOr<bool> FullMatchRegex::Matches(absl::string_view text) const {
  pcre2_match_data* data = pcre2_match_data_create_from_pattern(code_->code, nullptr);
  const int rc = pcre2_match(code_->code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0, 0, data,
                             code_->context);
  pcre2_match_data_free(data);
  if (rc >= 0) return true;
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT) {
    return absl::ResourceExhaustedError(
        absl::StrCat("regular expression '", pattern_, "' backtracks too much (over ", kMatchLimit, " steps) on '", text, "'"));
  }
  PCRE2_UCHAR message[256];
  pcre2_get_error_message(rc, message, sizeof(message));
  return absl::InvalidArgumentError(
      absl::StrCat("regular expression '", pattern_, "' on '", text, "': ", reinterpret_cast<char*>(message)));
}

}  // namespace posttrain
