// "Did you mean" suggestions for misspelt keys and names.
//
//   ClosestMatch("betta", {"beta", "loss_type"})   →  "beta"
//   ClosestMatch("zzz", {"beta"})                  →  ""   (nothing close enough)
#pragma once

#include "absl/strings/string_view.h"
#include <string>
#include <string_view>
#include <vector>

namespace posttrain {

// Optimal-string-alignment distance (Levenshtein plus adjacent transpositions).
int EditDistance(absl::string_view a, absl::string_view b);

// The candidate closest to `word` if it is within max(2, |word| / 3) edits (or
// `word` is a prefix of it); "" otherwise. Ties go to the earlier candidate.
std::string ClosestMatch(absl::string_view word, const std::vector<std::string>& candidates);

// " (did you mean 'x'?)" or "".
std::string DidYouMeanSuffix(absl::string_view word, const std::vector<std::string>& candidates);

}  // namespace posttrain
