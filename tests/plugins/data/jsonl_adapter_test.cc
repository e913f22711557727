#include <zlib.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_support.h"

namespace posttrain {
namespace {

using ::testing::HasSubstr;
using testing::CreateBuiltin;

absl::StatusOr<std::vector<Example>> Load(const std::string& path,
                                          std::map<std::string, OptionValue> options = {}) {
  options["path"] = path;
  absl::StatusOr<std::unique_ptr<DataAdapter>> adapter =
      CreateBuiltin<DataAdapter>("jsonl", std::move(options));
  if (!adapter.ok()) return adapter.status();
  return (*adapter)->Load();
}

std::string Write(const std::string& content) {
  const std::string path = testing::TempDir("jsonl") + "/data.jsonl";
  testing::WriteFile(path, content);
  return path;
}

TEST(JsonlAdapterTest, InfersEachTrlFormat) {
  struct Case {
    std::string line;
    ExampleFormat format;
  };
  for (const Case& c : std::vector<Case>{
           {R"({"text": "t"})", ExampleFormat::kLanguageModeling},
           {R"({"prompt": "p"})", ExampleFormat::kPromptOnly},
           {R"({"prompt": "p", "completion": "c"})", ExampleFormat::kPromptCompletion},
           {R"({"prompt": "p", "chosen": "a", "rejected": "b"})", ExampleFormat::kPreference},
           {R"({"prompt": "p", "completion": "c", "label": true})",
            ExampleFormat::kUnpairedPreference}}) {
    absl::StatusOr<std::vector<Example>> examples = Load(Write(c.line + "\n"));
    ASSERT_TRUE(examples.ok()) << examples.status();
    ASSERT_EQ(examples->size(), 1u);
    EXPECT_EQ((*examples)[0].format, c.format) << c.line;
  }
}

TEST(JsonlAdapterTest, FieldMappingAndMetadata) {
  absl::StatusOr<std::vector<Example>> examples =
      Load(Write(R"({"question": "1+1?", "answer": "#### 2", "id": 7})"
                 "\n"),
           {{"prompt_field", std::string("question")}, {"completion_field", std::string("answer")}});
  ASSERT_TRUE(examples.ok()) << examples.status();
  const Example& e = (*examples)[0];
  EXPECT_EQ(e.format, ExampleFormat::kPromptCompletion);
  EXPECT_EQ(e.prompt, "1+1?");
  EXPECT_EQ(e.completion, "#### 2");
  EXPECT_EQ(e.metadata, nlohmann::json({{"id", 7}}));
  EXPECT_EQ(e.line, 1);
}

TEST(JsonlAdapterTest, ImplicitPromptIsTheCommonPrefixAsInTrl) {
  absl::StatusOr<std::vector<Example>> examples = Load(Write(
      R"({"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello there.", "rejected": "\n\nHuman: Hi?\n\nAssistant: Go away."})"
      "\n"
      R"({"chosen": "Q: x A: yes", "rejected": "Q: x A: no"})"
      "\n"));
  ASSERT_TRUE(examples.ok()) << examples.status();
  EXPECT_EQ((*examples)[0].prompt, "\n\nHuman: Hi?\n\nAssistant:");
  EXPECT_EQ((*examples)[0].chosen, " Hello there.");
  EXPECT_EQ((*examples)[0].rejected, " Go away.");
  // The prefix "Q: x A: " ends in a space, which stays with the completions.
  EXPECT_EQ((*examples)[1].prompt, "Q: x A:");
  EXPECT_EQ((*examples)[1].chosen, " yes");
}

TEST(JsonlAdapterTest, MalformedLineNamesFileLineAndExpectation) {
  const std::string path = Write("{\"text\": \"a\"}\n\n{\"text\": 5}\n");
  absl::Status s = Load(path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr(path + ":3: field \"text\" must be a string, got number"));

  s = Load(Write("{\"text\": \"a\"}\n{\"text\": \"b\"\n")).status();
  EXPECT_THAT(std::string(s.message()), HasSubstr("data.jsonl:2: malformed JSON (expected one JSON object per line)"));

  s = Load(Write("{\"text\": \"a\"}\n{\"body\": \"b\"}\n")).status();
  EXPECT_THAT(std::string(s.message()), HasSubstr(":2: a language_modeling record needs field(s) \"text\"; this record has \"body\""));

  s = Load(Write("[1, 2]\n")).status();
  EXPECT_THAT(std::string(s.message()), HasSubstr(":1: expected a JSON object, got array"));
}

TEST(JsonlAdapterTest, OnBadRowSkipLeavesBadRowsOutWholeAndSaysWhere) {
  // Row 2 is not JSON, row 4 is a record of the wrong shape (its "text" is a number),
  // row 5 is a truncated object: none of them may turn into a (partial) example.
  const std::string path = Write("{\"text\": \"a\"}\nnot json\n{\"text\": \"b\"}\n{\"text\": 7}\n{\"text\": \"c\"\n{\"text\": \"d\"}\n");
  for (const auto& [key, value] : std::vector<std::pair<std::string, OptionValue>>{{"on_bad_row", std::string("skip")},
                                                                                    {"skip_malformed", true}}) {
    absl::StatusOr<std::unique_ptr<DataAdapter>> adapter = CreateBuiltin<DataAdapter>("jsonl", {{"path", path}, {key, value}});
    ASSERT_TRUE(adapter.ok());
    absl::StatusOr<std::vector<Example>> examples = (*adapter)->Load();
    ASSERT_TRUE(examples.ok()) << examples.status();
    ASSERT_EQ(examples->size(), 3u) << key;
    EXPECT_EQ((*examples)[0].text, "a");
    EXPECT_EQ((*examples)[1].text, "b");
    EXPECT_EQ((*examples)[2].text, "d");
    EXPECT_EQ((*examples)[2].line, 6);
    EXPECT_EQ((*adapter)->num_skipped(), 3);
    const std::vector<std::string> rows = (*adapter)->skipped_rows();
    ASSERT_EQ(rows.size(), 3u);
    EXPECT_THAT(rows[0], HasSubstr(path + ":2: malformed JSON"));
    EXPECT_THAT(rows[1], HasSubstr(path + ":4: field \"text\" must be a string, got number"));
    EXPECT_THAT(rows[2], HasSubstr(path + ":5: malformed JSON"));
  }
  // The default stops at the first bad row, naming it.
  absl::StatusOr<std::unique_ptr<DataAdapter>> strict = CreateBuiltin<DataAdapter>("jsonl", {{"path", path}});
  ASSERT_TRUE(strict.ok());
  absl::Status s = (*strict)->Load().status();
  EXPECT_THAT(std::string(s.message()), HasSubstr(path + ":2: malformed JSON"));
}

TEST(JsonlAdapterTest, ConversationalRecordsKeepTheirMessages) {
  const std::string u = R"({"role": "user", "content": "hi"})", a = R"({"role": "assistant", "content": "yo"})",
                    b = R"({"role": "assistant", "content": "no"})";
  absl::StatusOr<std::vector<Example>> lm = Load(Write("{\"messages\": [" + u + ", " + a + "], \"id\": 3}\n"));
  ASSERT_TRUE(lm.ok()) << lm.status();
  EXPECT_EQ((*lm)[0].format, ExampleFormat::kLanguageModeling);
  EXPECT_EQ((*lm)[0].conversation["messages"].size(), 2u);
  EXPECT_EQ((*lm)[0].metadata, nlohmann::json({{"id", 3}}));
  absl::StatusOr<std::vector<Example>> pc = Load(Write("{\"prompt\": [" + u + "], \"completion\": [" + a + "]}\n"));
  ASSERT_TRUE(pc.ok()) << pc.status();
  EXPECT_EQ((*pc)[0].format, ExampleFormat::kPromptCompletion);
  EXPECT_EQ((*pc)[0].conversation["completion"][0]["content"], "yo");
  // Implicit prompt: the messages chosen and rejected share.
  absl::StatusOr<std::vector<Example>> pref =
      Load(Write("{\"chosen\": [" + u + ", " + a + "], \"rejected\": [" + u + ", " + b + "]}\n"));
  ASSERT_TRUE(pref.ok()) << pref.status();
  EXPECT_EQ((*pref)[0].format, ExampleFormat::kPreference);
  EXPECT_EQ((*pref)[0].conversation["prompt"].size(), 1u);
  EXPECT_EQ((*pref)[0].conversation["chosen"][0]["content"], "yo");
  EXPECT_EQ((*pref)[0].conversation["rejected"][0]["content"], "no");
  absl::StatusOr<std::vector<Example>> unpaired =
      Load(Write("{\"prompt\": [" + u + "], \"completion\": [" + a + "], \"label\": false}\n"));
  ASSERT_TRUE(unpaired.ok()) << unpaired.status();
  EXPECT_EQ((*unpaired)[0].format, ExampleFormat::kUnpairedPreference);
  EXPECT_EQ((*unpaired)[0].label, false);
  // A message without a role is named with its field and position.
  absl::Status bad = Load(Write("{\"messages\": [" + u + ", {\"content\": \"x\"}]}\n")).status();
  EXPECT_THAT(std::string(bad.message()), HasSubstr(":1: field \"messages\", message 1: expected {\"role\""));
}

// TRL's stepwise supervision: prompt, completions (the steps), labels (one bool each).
TEST(JsonlAdapterTest, ReadsStepwiseSupervisionAndRefusesMismatchedLabels) {
  absl::StatusOr<std::vector<Example>> rows =
      Load(Write("{\"prompt\": \"2+2?\", \"completions\": [\"2+2=4\", \"The answer is 4.\"], \"labels\": [true, false], \"id\": 7}\n"));
  ASSERT_TRUE(rows.ok()) << rows.status();
  EXPECT_EQ((*rows)[0].format, ExampleFormat::kStepwiseSupervision);
  EXPECT_EQ((*rows)[0].prompt, "2+2?");
  EXPECT_EQ((*rows)[0].steps, (std::vector<std::string>{"2+2=4", "The answer is 4."}));
  EXPECT_EQ((*rows)[0].step_labels, (std::vector<bool>{true, false}));
  EXPECT_EQ((*rows)[0].metadata, nlohmann::json({{"id", 7}}));
  absl::Status bad = Load(Write("{\"prompt\": \"p\", \"completions\": [\"a\", \"b\"], \"labels\": [true]}\n")).status();
  EXPECT_THAT(std::string(bad.message()), HasSubstr(":1: stepwise supervision: 2 completions (steps) but 1 labels"));
  bad = Load(Write("{\"prompt\": \"p\", \"completions\": [\"a\"], \"labels\": [1]}\n")).status();
  EXPECT_THAT(std::string(bad.message()), HasSubstr("labels[0] must be true or false"));
  absl::StatusOr<std::vector<Example>> shipped = Load(testing::SourceDir() + "/recipes/data/gsm8k_prm_test.jsonl");
  ASSERT_TRUE(shipped.ok()) << shipped.status();
  EXPECT_EQ(shipped->size(), 128u);
  for (const Example& e : *shipped) EXPECT_EQ(e.steps.size(), e.step_labels.size());
}

// Found by tests/fuzz/fuzz_jsonl.cc: a number too large for a double (1e309) threw
// nlohmann's out_of_range past the parse-error handler; now a malformed-row error with
// file:line. The fuzzer's input is tests/fuzz/regressions/jsonl_number_overflow.
TEST(JsonlAdapterTest, ANumberTooLargeForADoubleIsAMalformedRow) {
  absl::Status bad = Load(Write("{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": 1e309}\n")).status();
  EXPECT_THAT(std::string(bad.message()), HasSubstr(":2: malformed JSON"));
  EXPECT_THAT(std::string(bad.message()), HasSubstr("number overflow"));
  EXPECT_FALSE(Load(testing::SourceDir() + "/tests/fuzz/regressions/jsonl_number_overflow").ok());
}

TEST(JsonlAdapterTest, ReadsTheOpenAiPreferenceLayoutOfTheOrcaPairs) {
  absl::StatusOr<std::vector<Example>> pairs = Load(testing::DataPath("orca_dpo_pairs_validation.jsonl"));
  ASSERT_TRUE(pairs.ok()) << pairs.status();
  ASSERT_EQ(pairs->size(), 284u);  // 283 newlines: the last record has none
  const Example& e = (*pairs)[0];
  EXPECT_EQ(e.format, ExampleFormat::kPreference);
  EXPECT_EQ(e.conversation["prompt"][0]["role"], "system");
  EXPECT_EQ(e.conversation["chosen"][0]["role"], "assistant");
  EXPECT_NE(e.conversation["chosen"], e.conversation["rejected"]);
  // As language modeling: the prompt's messages and the preferred answer.
  absl::StatusOr<std::unique_ptr<DataAdapter>> lm = CreateBuiltin<DataAdapter>(
      "jsonl", {{"path", testing::DataPath("orca_dpo_pairs_validation.jsonl")}, {"format", std::string("language_modeling")}});
  ASSERT_TRUE(lm.ok());
  absl::StatusOr<std::vector<Example>> convs = (*lm)->Load();
  ASSERT_TRUE(convs.ok()) << convs.status();
  EXPECT_EQ((*convs)[0].format, ExampleFormat::kLanguageModeling);
  EXPECT_EQ((*convs)[0].conversation["messages"].size(), e.conversation["prompt"].size() + 1);
  EXPECT_EQ((*convs)[0].conversation["messages"].back(), e.conversation["chosen"][0]);
}

TEST(JsonlAdapterTest, MissingFile) {
  EXPECT_EQ(Load("/nonexistent.jsonl").status().code(), absl::StatusCode::kNotFound);
}

TEST(JsonlAdapterTest, ReadsTheRealHhRlhfGzipAndGsm8k) {
  absl::StatusOr<std::vector<Example>> hh = Load(testing::DataPath("hh_rlhf_harmless_base_test.jsonl.gz"));
  ASSERT_TRUE(hh.ok()) << hh.status();
  EXPECT_EQ(hh->size(), 2312u);  // the data README's count
  for (const Example& e : *hh) {
    ASSERT_EQ(e.format, ExampleFormat::kPreference);
    EXPECT_EQ(e.prompt.rfind("\n\nHuman:", 0), 0u) << ExampleLocation(e);
  }
  absl::StatusOr<std::vector<Example>> gsm = Load(
      testing::DataPath("gsm8k_test.jsonl"),
      {{"prompt_field", std::string("question")}, {"completion_field", std::string("answer")}});
  ASSERT_TRUE(gsm.ok()) << gsm.status();
  EXPECT_EQ(gsm->size(), 1319u);
}

TEST(JsonlAdapterTest, TruncatedGzipIsDataLoss) {
  const std::string dir = testing::TempDir("gz");
  std::string payload;
  for (int i = 0; i < 2000; ++i) payload += "{\"text\": \"line " + std::to_string(i) + "\"}\n";
  gzFile gz = gzopen((dir + "/d.jsonl.gz").c_str(), "wb");
  gzwrite(gz, payload.data(), static_cast<unsigned>(payload.size()));
  gzclose(gz);
  std::string bytes = testing::ReadFile(dir + "/d.jsonl.gz");
  absl::StatusOr<std::vector<Example>> whole = Load(dir + "/d.jsonl.gz");
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(whole->size(), 2000u);
  testing::WriteFile(dir + "/cut.jsonl.gz", bytes.substr(0, bytes.size() / 2));
  absl::Status s = Load(dir + "/cut.jsonl.gz").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("cut.jsonl.gz"));
}

}  // namespace
}  // namespace posttrain
