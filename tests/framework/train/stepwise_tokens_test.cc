// The PRM trainer's per-step labels (StepwiseTokens after the data pipeline's
// prompt tokenization) against TRL's PRMTrainer.tokenize_row transcribed into
// Python (tests/framework/train/prm_reference.py), on stories260K's tokenizer with
// and without train_on_last_step_only and with each truncation limit biting.
#include <gtest/gtest.h>

#include "nlohmann/json.hpp"
#include "posttrain/tokenizer/tokenizer.h"
#include "posttrain/train/tokenize.h"
#include "test_support.h"

namespace posttrain {
namespace {

TEST(StepwiseTokensTest, MatchesTrlsTokenizeRow) {
  auto tokenizer = LoadTokenizer(testing::Stories260KDir());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  Example e;
  e.format = ExampleFormat::kStepwiseSupervision;
  e.prompt = "Tom has 3 apples and buys 4 more. How many apples does he have?";
  e.steps = {"Tom buys 4 apples.", "3 + 4 = <<3+4=7>>7", "The answer is 7."};
  e.step_labels = {true, false, true};
  const std::vector<std::int64_t> separator = (*tokenizer)->Encode("\n", false);
  ASSERT_FALSE(separator.empty());
  struct Case {
    bool last_only;
    std::int64_t max_prompt, max_completion, max_length;
  };
  const std::vector<Case> cases = {{false, 512, -1, 1024}, {true, 512, -1, 1024}, {false, 6, -1, 1024},
                                   {false, 512, 9, 1024},  {true, 512, 13, 20},   {false, 512, -1, 25}};
  nlohmann::json in = nlohmann::json::array();
  std::vector<StepwiseSequence> got;
  for (const Case& c : cases) {
    TokenizeOptions options;
    options.max_prompt_length = c.max_prompt;
    options.max_length = -1;  // the trainer applies max_length to the whole
    const TokenizedExample t = TokenizeExamples({e}, **tokenizer, options)[0];
    ASSERT_EQ(t.step_ids.size(), 3u);
    got.push_back(StepwiseTokens(t.prompt_ids, t.step_ids, e.step_labels, separator, c.last_only, c.max_completion, c.max_length));
    auto limit = [](std::int64_t v) { return v > 0 ? nlohmann::json(v) : nlohmann::json(); };
    nlohmann::json steps = nlohmann::json::array();
    for (const std::string& s : e.steps) steps.push_back((*tokenizer)->Encode(s, false));
    in.push_back({{"prompt_ids", (*tokenizer)->Encode(e.prompt, false)},
                  {"bos", *(*tokenizer)->bos_token_id()},
                  {"steps", steps},
                  {"separator_ids", separator},
                  {"labels", {true, false, true}},
                  {"train_on_last_step_only", c.last_only},
                  {"max_prompt_length", limit(c.max_prompt)},
                  {"max_completion_length", limit(c.max_completion)},
                  {"max_length", limit(c.max_length)}});
  }
  const std::string path = testing::TempDir("prm_tokens") + "/in.json";
  testing::WriteFile(path, in.dump());
  std::string out;
  ASSERT_EQ(testing::RunCommand(posttrain::testing::Python() + " " + testing::SourceDir() + "/tests/framework/train/prm_reference.py " + path, &out), 0) << out;
  const nlohmann::json expected = nlohmann::json::parse(out);
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(got[i].input_ids, expected[i]["input_ids"].get<std::vector<std::int64_t>>()) << "case " << i;
    EXPECT_EQ(got[i].labels, expected[i]["labels"].get<std::vector<std::int64_t>>()) << "case " << i;
  }
  // By hand: three labelled tokens, 1 0 1, each the separator's last token.
  std::vector<std::int64_t> labelled;
  for (size_t k = 0; k < got[0].labels.size(); ++k) {
    if (got[0].labels[k] != kIgnoreLabel) {
      labelled.push_back(got[0].labels[k]);
      EXPECT_EQ(got[0].input_ids[k], separator.back());
    }
  }
  EXPECT_EQ(labelled, (std::vector<std::int64_t>{1, 0, 1}));
}

}  // namespace
}  // namespace posttrain
