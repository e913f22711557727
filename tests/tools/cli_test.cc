// Runs the real `posttrain` binary.
#include <filesystem>
#include <sstream>

#include "gmock/gmock.h"
#include "nlohmann/json.hpp"
#include "gtest/gtest.h"
#include "test_support.h"

namespace posttrain {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string Cli(const std::string& args) {
  return "POSTTRAIN_PLUGIN_PATH= " + testing::CliPath() + " " + args;
}

constexpr const char* kRecipe = R"(
[data]
type = "jsonl"
path = "data.jsonl"

[trainer]
type = "fixture_preference"
betta = 0.1
)";

TEST(CliTest, ListShowsBuiltinPluginsOfAllFourKindsWithTheirLibraries) {
  std::string out;
  ASSERT_EQ(testing::RunCommand(Cli("list"), &out), 0) << out;
  for (const char* line : {"trainer          reward_eval", "reward_function  keyword",
                           "sampler          dataset", "data_adapter     jsonl"}) {
    EXPECT_THAT(out, HasSubstr(line));
  }
  EXPECT_THAT(out, HasSubstr("/lib/posttrain/plugins/libposttrain_data_jsonl.so"));
}

TEST(CliTest, ValidateTypoNamesFileKeyAndSuggestion) {
  const std::string path = testing::TempDir("cli") + "/typo.toml";
  testing::WriteFile(path, kRecipe);
  std::string out;
  const int rc = testing::RunCommand(
      Cli("--plugin-dir " + testing::FixturePluginDir("preference") + " validate " + path), &out);
  EXPECT_EQ(rc, 1);
  EXPECT_THAT(out, HasSubstr("posttrain: error: " + path + ": 1 error in the recipe"));
  EXPECT_THAT(out, HasSubstr(path + ":8:1: trainer.betta: unknown option (did you mean 'beta'?)"));
  EXPECT_THAT(out, Not(HasSubstr("terminate")));
}

TEST(CliTest, UnknownPluginListsKnownNames) {
  const std::string path = testing::TempDir("cli") + "/unknown.toml";
  testing::WriteFile(path, "[data]\ntype = 'csv'\npath = 'x'\n[trainer]\ntype = 'grpo2'\n");
  std::string out;
  EXPECT_EQ(testing::RunCommand(Cli("validate " + path), &out), 1);
  EXPECT_THAT(out, HasSubstr("data.type: unknown data_adapter 'csv'; known data_adapters: jsonl, text"));
  EXPECT_THAT(out, HasSubstr("trainer.type: unknown trainer 'grpo2' (did you mean 'grpo'?); known trainers: bco, cpo, dpo, gkd, grpo, kto, nash_md, online_dpo, orpo, ppo, prm, reward, reward_eval, rloo, sft, xpo"));
}

TEST(CliTest, SyntaxErrorShowsLineAndColumn) {
  const std::string path = testing::TempDir("cli") + "/syntax.toml";
  testing::WriteFile(path, "seed = 1\nbeta = = 2\n");
  std::string out;
  EXPECT_EQ(testing::RunCommand(Cli("validate " + path), &out), 1);
  EXPECT_THAT(out, HasSubstr(path + ":2:8: TOML syntax error"));
}

TEST(CliTest, OverridesOnTheCommandLine) {
  const std::string dir = testing::TempDir("cli");
  const std::string path = dir + "/ok.toml";
  std::string text = kRecipe;
  text.replace(text.find("betta"), 5, "beta");
  // validate loads the data as run would.
  text.replace(text.find("data.jsonl"), 10, dir + "/data.jsonl");
  testing::WriteFile(dir + "/data.jsonl", "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n");
  testing::WriteFile(path, text);
  std::string out;
  const std::string plugin = " --plugin-dir " + testing::FixturePluginDir("preference");
  EXPECT_EQ(testing::RunCommand(Cli(plugin + " validate " + path + " trainer.beta=0.5"), &out), 0) << out;
  EXPECT_EQ(testing::RunCommand(Cli(plugin + " validate " + path + " trainer.beta=high"), &out), 1);
  EXPECT_THAT(out, HasSubstr("(command-line override): trainer.beta: expected float, got string"));
}

TEST(CliTest, DescribeShowsOptionsTypesDefaultsAndDocs) {
  std::string out;
  ASSERT_EQ(testing::RunCommand(Cli("describe keyword"), &out), 0) << out;
  EXPECT_THAT(out, HasSubstr("reward_function keyword"));
  EXPECT_THAT(out, HasSubstr("keywords"));
  EXPECT_THAT(out, HasSubstr("(required)"));
  EXPECT_THAT(out, HasSubstr("whole_word"));
  ASSERT_EQ(testing::RunCommand(Cli("describe reward_eval"), &out), 0);
  EXPECT_THAT(out, HasSubstr("per_device_train_batch_size"));  // engine options too
  EXPECT_EQ(testing::RunCommand(Cli("describe keywrd"), &out), 1);
  EXPECT_THAT(out, HasSubstr("no component named 'keywrd' (did you mean 'keyword'?)"));
}

TEST(CliTest, UserErrorsExitNonZeroWithOneParagraph) {
  std::string out;
  EXPECT_EQ(testing::RunCommand(Cli("run /nonexistent.toml"), &out), 1);
  EXPECT_THAT(out, HasSubstr("posttrain: error: cannot open recipe '/nonexistent.toml'"));
  EXPECT_EQ(testing::RunCommand(Cli("--plugin-dir " + testing::FixturePluginDir("not_a_plugin") + " list"), &out), 1);
  EXPECT_THAT(out, HasSubstr("is not a posttrain plugin"));
  EXPECT_EQ(testing::RunCommand(Cli("frobnicate"), &out), 2) << out;
  EXPECT_THAT(out, HasSubstr("posttrain: usage error:"));
  EXPECT_EQ(testing::RunCommand(Cli("--help"), &out), 0);
  EXPECT_THAT(out, HasSubstr("validate"));
}

TEST(CliTest, QuickstartRecipeRuns) {
  const std::string dir = testing::TempDir("quickstart");
  std::string out;
  const int rc = testing::RunCommand(
      "cd " + testing::SourceDir() + " && " +
          Cli("run recipes/quickstart.toml output_dir=" + dir + " trainer.max_steps=3 model.path=" +
              testing::Stories260KDir()),
      &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_THAT(out, ::testing::ContainsRegex("run finished: 3 steps on [0-9]+ examples"));
  // Before and after: a completion of the first step, the last step's, and the
  // keyword share at the first and the last logged step.
  EXPECT_THAT(out, HasSubstr("first step:  ["));
  EXPECT_THAT(out, HasSubstr("sample completions (last step):"));
  EXPECT_THAT(out, ::testing::ContainsRegex("rewards/keyword/mean +[0-9.]+ -> +[0-9.]+"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/final/model.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/final/tokenizer.json"));
  EXPECT_THAT(testing::ReadFile(dir + "/recipe.resolved.toml"), HasSubstr("max_steps = 3"));
}

}  // namespace
}  // namespace posttrain

namespace posttrain {
namespace {

TEST(CliModelTest, ConvertGenerateAndTokenize) {
  const std::string dir = testing::TempDir("convert") + "/stories";
  std::string out;
  ASSERT_EQ(testing::RunCommand(testing::CliPath() + " convert llama2c --checkpoint " + testing::RepoDataPath("stories260K.bin") +
                                    " --tokenizer " + testing::RepoDataPath("tok512.model") + " --out " + dir,
                                &out),
            0)
      << out;
  for (const char* file : {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                           "tokenizer_config.json", "tokenizer.model"}) {
    EXPECT_FALSE(testing::ReadFile(dir + "/" + file).empty()) << file;
  }
  ASSERT_EQ(testing::RunCommand("(" + testing::CliPath() + " tokenize --tokenizer " + dir +
                                    " --text 'Once upon a time' --add-special-tokens 2>/dev/null)",
                                &out),
            0);
  EXPECT_EQ(out, "[1,403,407,261,378]\n");  // the fixture's prompt_ids
  ASSERT_EQ(testing::RunCommand("(" + testing::CliPath() + " generate --model " + dir +
                                    " --prompt 'Once upon a time' --max-new-tokens 20 2>/dev/null)",
                                &out),
            0)
      << out;
  EXPECT_THAT(out, ::testing::HasSubstr("Once upon a time, there was a little girl named Lily."));
  // --bf16 (bf16 products over the fp32 weights): the same confident greedy start.
  ASSERT_EQ(testing::RunCommand("(" + testing::CliPath() + " generate --bf16 --model " + dir +
                                    " --prompt 'Once upon a time' --max-new-tokens 20 2>/dev/null)",
                                &out),
            0)
      << out;
  EXPECT_THAT(out, ::testing::HasSubstr("Once upon a time, there was a little girl named Lily."));
  ASSERT_EQ(testing::RunCommand("(" + testing::CliPath() + " generate --json --model " + dir +
                                    " --prompt 'The dog' --temperature 1 --top-p 0.9 --num-generations 2"
                                    " --max-new-tokens 8 --seed 3 2>/dev/null)",
                                &out),
            0);
  std::istringstream lines(out);
  int n = 0;
  for (std::string line; std::getline(lines, line); ++n) {
    nlohmann::json j = nlohmann::json::parse(line);
    EXPECT_EQ(j["token_ids"].size(), j["logprobs"].size());
  }
  EXPECT_EQ(n, 2);
}

// posttrain chat-template over the inputs of the Qwen3 fixture (rendered by Jinja2
// with transformers' settings) gives every text byte for byte; a template that
// raises gives an error row with the template's message.
TEST(CliModelTest, ChatTemplateRendersTheQwen3FixtureAndReportsRaises) {
  const std::string dir = testing::TempDir("chat_cli");
  std::istringstream fixture(testing::ReadFile(testing::DataPath("../fixtures/chat_template_qwen3_jinja2.jsonl")));
  std::string inputs;
  std::vector<nlohmann::ordered_json> expected;
  for (std::string line; std::getline(fixture, line);) {
    // ordered_json: key order is data here (tojson prints keys as given).
    nlohmann::ordered_json row = nlohmann::ordered_json::parse(line);
    nlohmann::ordered_json in = {{"messages", row["messages"]}, {"add_generation_prompt", row["add_generation_prompt"]},
                                 {"kwargs", row["kwargs"]}};
    if (row.contains("tools")) in["tools"] = row["tools"];
    inputs += in.dump() + "\n";
    expected.push_back(row);
  }
  testing::WriteFile(dir + "/in.jsonl", inputs);
  std::string out;
  ASSERT_EQ(testing::RunCommand(testing::CliPath() + " chat-template --tokenizer " + testing::DataPath("qwen3_tokenizer") +
                                    " --input " + dir + "/in.jsonl --out " + dir + "/out.jsonl",
                                &out),
            0)
      << out;
  std::istringstream got(testing::ReadFile(dir + "/out.jsonl"));
  size_t i = 0;
  for (std::string line; std::getline(got, line); ++i) {
    ASSERT_LT(i, expected.size());
    EXPECT_EQ(nlohmann::ordered_json::parse(line)["text"], expected[i]["text"]) << "row " << i;
  }
  EXPECT_EQ(i, expected.size());

  // A Mistral-style template that raises on roles that do not alternate.
  nlohmann::json config = {
      {"bos_token", "<s>"},
      {"eos_token", "</s>"},
      {"chat_template",
       "{{ bos_token }}{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
       "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
       "{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% else %}{{ m['content'] + eos_token }}"
       "{% endif %}{% endfor %}"}};
  testing::WriteFile(dir + "/tokenizer_config.json", config.dump());
  testing::WriteFile(dir + "/rows.jsonl",
                     "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}\n"
                     "{\"messages\": [{\"role\": \"assistant\", \"content\": \"b\"}]}\n");
  ASSERT_EQ(testing::RunCommand(testing::CliPath() + " chat-template --tokenizer " + dir + " --input " + dir +
                                    "/rows.jsonl 2>/dev/null",
                                &out),
            0)
      << out;
  EXPECT_EQ(out,
            "{\"text\":\"<s>[INST] a [/INST]b</s>\"}\n"
            "{\"error\":\"Conversation roles must alternate user/assistant/user/assistant/...\"}\n");
}

// generate --chat renders --prompt as a user turn with the template's generation
// prompt and stops at its end-of-turn token.
TEST(CliModelTest, GenerateChatRendersThePromptAsAUserTurn) {
  std::string out;
  ASSERT_EQ(testing::RunCommand("(cd " + testing::SourceDir() + " && " + testing::CliPath() + " generate --json --model " +
                                    testing::Stories260KDir() +
                                    " --chat --chat-template-path recipes/templates/chatml_stories260K.jinja"
                                    " --prompt 'Tell me a story' --max-new-tokens 200 2>/dev/null)",
                                &out),
            0)
      << out;
  nlohmann::json j = nlohmann::json::parse(out);
  EXPECT_EQ(j["prompt"], "<s><|im_start|>user\nTell me a story</s>\n<|im_start|>assistant\n");
  if (j["finish_reason"] == "stop") EXPECT_EQ(j["token_ids"].back(), 2);
}

TEST(CliModelTest, ModelErrorsAreOneParagraph) {
  std::string out;
  EXPECT_EQ(testing::RunCommand(testing::CliPath() + " generate --model /nonexistent --prompt x", &out), 1);
  EXPECT_THAT(out, ::testing::HasSubstr("posttrain: error: model directory '/nonexistent' does not exist"));
  EXPECT_EQ(testing::RunCommand(testing::CliPath() + " tokenize --tokenizer /nonexistent.json --text x", &out), 1);
  EXPECT_THAT(out, ::testing::HasSubstr("does not exist"));
}

// TRL's command line: `posttrain sft|dpo|grpo --model_name_or_path ... --dataset_name
// ... --output_dir ... --<key> V` builds the recipe from TRL's flag names, validates
// it, saves it as recipe.resolved.toml and runs it.
TEST(CliTest, TrlStyleCommandLinesRunSftDpoAndGrpo) {
  const std::string dir = testing::TempDir("trl_cli");
  const std::string model = " --model_name_or_path " + testing::Stories260KDir();
  std::string out;
  // GSM8K's question/answer rows read as prompt-completion without field flags.
  ASSERT_EQ(testing::RunCommand(Cli("sft" + model + " --dataset_name " + testing::RepoDataPath("gsm8k_train_head1024.jsonl") +
                                    " --output_dir " + dir + "/sft --max_steps 2 --per_device_train_batch_size=2 --bf16"),
                                &out),
            0)
      << out;
  // The progress line (plain lines off a terminal): step/total, elapsed<remaining, rates, loss.
  EXPECT_THAT(out, ::testing::ContainsRegex("train 2/2 \\[[0-9]+s<0s, [0-9.]+ it/s, [0-9]+ tok/s\\] loss="));
  std::string resolved = testing::ReadFile(dir + "/sft/recipe.resolved.toml");
  EXPECT_THAT(resolved, HasSubstr("max_steps = 2"));
  EXPECT_THAT(resolved, HasSubstr("bf16 = true"));
  EXPECT_THAT(resolved, HasSubstr("per_device_train_batch_size = 2"));
  ASSERT_EQ(testing::RunCommand(Cli("dpo" + model + " --dataset_name " + testing::RepoDataPath("hh_rlhf_harmless_base_test_head512.jsonl.gz") +
                                    " --output_dir " + dir + "/dpo --max_steps 2 --per_device_train_batch_size 2 --max_length 96 "
                                    "--use_peft --lora_r 4 --lora_target_modules q_proj v_proj --use_dora --beta 0.2"),
                                &out),
            0)
      << out;
  resolved = testing::ReadFile(dir + "/dpo/recipe.resolved.toml");
  EXPECT_THAT(resolved, HasSubstr("target_modules = [ 'q_proj', 'v_proj' ]"));
  EXPECT_THAT(resolved, HasSubstr("r = 4"));
  EXPECT_THAT(resolved, HasSubstr("use_dora = true"));
  EXPECT_THAT(testing::ReadFile(dir + "/dpo/final/adapter_config.json"), HasSubstr("\"use_dora\": true"));
  // GRPO: the default sampler is added, max_completion_length set for trainer and sampler alike.
  ASSERT_EQ(testing::RunCommand(Cli("grpo" + model + " --dataset_name " + testing::RepoDataPath("gsm8k_test_head128.jsonl") +
                                    " --reward_funcs accuracy --output_dir " + dir + "/grpo --max_steps 2 --num_generations 2 "
                                    "--per_device_train_batch_size 2 --max_completion_length 12"),
                                &out),
            0)
      << out;
  resolved = testing::ReadFile(dir + "/grpo/recipe.resolved.toml");
  EXPECT_THAT(resolved, HasSubstr("[[rewards]]"));
  EXPECT_THAT(resolved, HasSubstr("type = 'default'"));
  EXPECT_THAT(testing::ReadFile(dir + "/grpo/metrics.jsonl"), HasSubstr("rewards/accuracy/mean"));
  // posttrain plot: the DPO and the GRPO run overlaid, one panel per default metric
  // present (loss, learning_rate, rewards/accuracies, reward; GRPO's default β = 0
  // logs no kl): 2 columns × 2 rows. A build without PLplot says so instead.
  if (!POSTTRAIN_TEST_CLI_HAS_PLOT) {
    EXPECT_EQ(testing::RunCommand(Cli("plot " + dir + "/dpo --out " + dir + "/curves.png"), &out), 1) << out;
    EXPECT_THAT(out, HasSubstr("built without PLplot"));
    return;
  }
  ASSERT_EQ(testing::RunCommand(Cli("plot " + dir + "/dpo " + dir + "/grpo --out " + dir + "/curves.png --width 900 --panel-height 200"), &out), 0)
      << out;
  EXPECT_THAT(out, HasSubstr("4 panel(s) (loss, learning_rate, rewards/accuracies, reward)"));
  const std::string png = testing::ReadFile(dir + "/curves.png");
  ASSERT_GT(png.size(), 24u);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(png.substr(12, 4), "IHDR");
  auto be32 = [&](size_t at) {
    return (static_cast<unsigned>(static_cast<unsigned char>(png[at])) << 24) | (static_cast<unsigned char>(png[at + 1]) << 16) |
           (static_cast<unsigned char>(png[at + 2]) << 8) | static_cast<unsigned char>(png[at + 3]);
  };
  EXPECT_EQ(be32(16), 900u);
  EXPECT_EQ(be32(20), 400u);
  ASSERT_EQ(testing::RunCommand(Cli("plot " + dir + "/grpo --metrics reward,loss --out " + dir + "/grpo.svg"), &out), 0) << out;
  EXPECT_THAT(testing::ReadFile(dir + "/grpo.svg"), HasSubstr("<svg"));
  EXPECT_EQ(testing::RunCommand(Cli("plot " + dir + "/grpo --metrics rewrd"), &out), 1);
  EXPECT_THAT(out, HasSubstr("no run has metric 'rewrd'"));
  // Unknown flags and trainers get a did-you-mean; nothing downloads.
  EXPECT_EQ(testing::RunCommand(Cli("sft" + model + " --dataset_name " + testing::RepoDataPath("gsm8k_test_head128.jsonl") + " --max_stepz 2"), &out), 1);
  EXPECT_THAT(out, HasSubstr("unknown flag --max_stepz (did you mean 'max_steps'?)"));
  EXPECT_EQ(testing::RunCommand(Cli("sfx --max_steps 2"), &out), 2);
  EXPECT_THAT(out, HasSubstr("'sfx' is neither a command nor a trainer (did you mean 'sft'?)"));
  EXPECT_EQ(testing::RunCommand(Cli("sft" + model + " --dataset_name trl-lib/Capybara"), &out), 1);
  EXPECT_THAT(out, HasSubstr("is not a local file"));
}

// `posttrain env` for bug reports: versions, BLAS and oneDNN, threads, the allocator,
// devices. The CLI itself runs on jemalloc keeping freed pages (posttrain_program():
// libtorch's link flags once dropped it from the CLI and the benchmarks).
TEST(CliTest, EnvPrintsVersionsBlasThreadsAllocatorAndDevices) {
  std::string out;
  ASSERT_EQ(testing::RunCommand(Cli("env"), &out), 0) << out;
  for (const char* line : {"posttrain: 0.", "cpu: ", "threads: ", "libtorch: ", "oneDNN", "BLAS: /", "devices: cpu",
#ifndef POSTTRAIN_SANITIZED  // sanitized builds run on the sanitizers' allocator
                           "allocator: jemalloc, freed pages kept (dirty_decay_ms -1, muzzy_decay_ms -1)",
#endif
                           "allocator: "}) {
    EXPECT_THAT(out, HasSubstr(line));
  }
  EXPECT_THAT(out, ::testing::ContainsRegex("libtorch: [0-9]+\\.[0-9]+"));
}

}  // namespace
}  // namespace posttrain
