#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_support.h"

namespace posttrain {
namespace {

using testing::CreateBuiltin;

absl::StatusOr<std::vector<Example>> Load(std::map<std::string, OptionValue> options) {
  absl::StatusOr<std::unique_ptr<DataAdapter>> adapter =
      CreateBuiltin<DataAdapter>("text", std::move(options));
  if (!adapter.ok()) return adapter.status();
  return (*adapter)->Load();
}

TEST(TextAdapterTest, OneRecordPerLineTrimmedAndNonEmpty) {
  const std::string path = testing::TempDir("text") + "/t.txt";
  testing::WriteFile(path, "first line\n\n  second  \nthird");
  absl::StatusOr<std::vector<Example>> examples = Load({{"path", path}});
  ASSERT_TRUE(examples.ok()) << examples.status();
  ASSERT_EQ(examples->size(), 3u);
  EXPECT_EQ((*examples)[1].text, "second");
  EXPECT_EQ((*examples)[1].line, 3);
  EXPECT_EQ((*examples)[2].line, 4);
}

TEST(TextAdapterTest, TinyStoriesSplitBySeparatorAsPrompts) {
  absl::StatusOr<std::vector<Example>> examples =
      Load({{"path", testing::DataPath("tinystories_train_head2MiB.txt")},
            {"separator", std::string("<|endoftext|>")},
            {"format", std::string("prompt_only")},
            {"max_chars", std::int64_t{40}},
            {"max_examples", std::int64_t{100}}});
  ASSERT_TRUE(examples.ok()) << examples.status();
  ASSERT_EQ(examples->size(), 100u);
  for (const Example& e : *examples) {
    EXPECT_EQ(e.format, ExampleFormat::kPromptOnly);
    EXPECT_LE(e.prompt.size(), 40u);
    EXPECT_FALSE(e.prompt.empty());
    EXPECT_NE(e.prompt.back(), ' ');  // cut at a word boundary, trimmed
  }
  EXPECT_EQ((*examples)[0].line, 1);
}

TEST(TextAdapterTest, EmptySeparatorIsRefused) {
  absl::Status s = Load({{"path", std::string("x")}, {"separator", std::string("")}}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "test [text]: separator: must not be empty");
}

}  // namespace
}  // namespace posttrain
