// Regular expressions from outside input (a PEFT adapter_config.json's target_modules,
// a recipe), matched in bounded time.
//
//   POSTTRAIN_ASSIGN_OR_RETURN(FullMatchRegex re, FullMatchRegex::Compile(R"(.*\.(q|v)_proj)"));
//   POSTTRAIN_ASSIGN_OR_RETURN(bool hit, re.Matches("model.layers.0.self_attn.q_proj"));
//
// Python's `re` syntax as PCRE2 reads it (UTF-8); Matches is re.fullmatch. A pattern
// that backtracks past PCRE2's match limit (catastrophic nesting such as `(.+)+x`) is a
// ResourceExhausted error instead of a hang: std::regex has no such limit.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace posttrain {

class FullMatchRegex {
 public:
  // InvalidArgument naming the pattern, the offset and PCRE2's reason.
  static absl::StatusOr<FullMatchRegex> Compile(const std::string& pattern);

  // Whether the whole of `text` matches; ResourceExhausted past the match limit.
  absl::StatusOr<bool> Matches(absl::string_view text) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct Code;
  std::string pattern_;
  std::shared_ptr<const Code> code_;
};

}  // namespace posttrain
