// FullMatchRegex: Python's re.fullmatch on module names (as PEFT matches
// target_modules), in bounded time.
#include "posttrain/core/regex.h"

#include <chrono>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace posttrain {
namespace {

using ::testing::HasSubstr;

TEST(FullMatchRegexTest, MatchesTheWholeNameAsPythonsFullmatch) {
  absl::StatusOr<FullMatchRegex> re = FullMatchRegex::Compile(R"(.*\.(q|v)_proj)");
  ASSERT_TRUE(re.ok()) << re.status();
  EXPECT_TRUE(*re->Matches("model.layers.0.self_attn.q_proj"));
  EXPECT_TRUE(*re->Matches("model.layers.11.self_attn.v_proj"));
  EXPECT_FALSE(*re->Matches("model.layers.0.self_attn.k_proj"));
  EXPECT_FALSE(*re->Matches("model.layers.0.self_attn.q_proj.lora_A"));  // fullmatch, not search
  absl::StatusOr<FullMatchRegex> prefix = FullMatchRegex::Compile(R"(model\.layers\.[0-9]+\.mlp)");
  ASSERT_TRUE(prefix.ok());
  EXPECT_FALSE(*prefix->Matches("model.layers.0.mlp.down_proj"));
  EXPECT_TRUE(*prefix->Matches("model.layers.0.mlp"));
}

TEST(FullMatchRegexTest, BadPatternsAreNamedErrors) {
  // Python's re refuses these too ("multiple repeat", "missing )").
  for (const char* pattern : {".+++", "(q|v"}) {
    absl::StatusOr<FullMatchRegex> re = FullMatchRegex::Compile(pattern);
    ASSERT_FALSE(re.ok()) << pattern;
    EXPECT_THAT(std::string(re.status().message()), HasSubstr(std::string("'") + pattern + "' is not a regular expression"));
  }
}

TEST(FullMatchRegexTest, CatastrophicBacktrackingIsAnErrorNotAHang) {
  // (a|a)+ tries 2^n ways to split n a's before failing at the last character.
  absl::StatusOr<FullMatchRegex> re = FullMatchRegex::Compile("(a|a)+[bc]");
  ASSERT_TRUE(re.ok());
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<bool> hit = re->Matches(std::string(40, 'a') + "d");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  ASSERT_FALSE(hit.ok());
  EXPECT_EQ(hit.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(hit.status().message()), HasSubstr("backtracks too much"));
  EXPECT_TRUE(*re->Matches("aaab"));
}

}  // namespace
}  // namespace posttrain
