// Bad input, table-driven: each case is an input a user can give the CLI (a recipe
// value, a generate flag, a broken config.json or tokenizer.json, a checkpoint that
// does not fit its tokenizer) and the error it must give. Every case must exit 1
// with that message — never a libtorch abort, a signal or a silent success.
#include <filesystem>
#include <fstream>
#include <functional>

#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "posttrain/model/hf_model.h"
#include "test_support.h"

namespace posttrain {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

struct BadInput {
  std::string name;
  std::string args;      // after `posttrain`; {model} {dir} {recipe} are replaced
  std::string expected;  // a part of the one-paragraph error
};

void PrintTo(const BadInput& c, std::ostream* os) { *os << c.name; }

// A copy of stories260K whose config.json / tokenizer.json `edit` changes.
std::string EditedModel(const std::string& root, const std::string& name,
                        const std::function<void(nlohmann::json&)>& edit_config,
                        const std::function<void(nlohmann::json&)>& edit_tokenizer = nullptr) {
  const std::string dir = root + "/models/" + name;
  fs::create_directories(dir);
  for (const auto& entry : fs::directory_iterator(testing::Stories260KDir())) {
    fs::copy_file(entry.path(), dir + "/" + entry.path().filename().string(), fs::copy_options::overwrite_existing);
  }
  for (auto [file, edit] : {std::pair{"config.json", edit_config}, {"tokenizer.json", edit_tokenizer}}) {
    if (!edit) continue;
    nlohmann::json j = nlohmann::json::parse(testing::ReadFile(dir + "/" + file));
    edit(j);
    testing::WriteFile(dir + "/" + file, j.dump());
  }
  return dir;
}

std::string Substitute(std::string text, const std::string& key, const std::string& value) {
  for (size_t at = text.find(key); at != std::string::npos; at = text.find(key, at + value.size())) {
    text.replace(at, key.size(), value);
  }
  return text;
}

// Builds the inputs once per machine into `root` (each test runs in its own
// process; the first to finish renames its copy into place).
void BuildFixtures(const std::string& root, const std::string& final_root) {
  using J = nlohmann::json;
  const std::string& dir = root;
  testing::WriteFile(dir + "/data.jsonl",
                     "{\"prompt\": \"Once upon a time\", \"completion\": \" there was a cat.\"}\n"
                     "{\"prompt\": \"One day\", \"completion\": \" a dog ran.\"}\n"
                     "{\"prompt\": \"The sun\", \"completion\": \" was warm.\"}\n");
  testing::WriteFile(dir + "/broken.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \n");
  testing::WriteFile(dir + "/sft.toml", absl::StrCat("output_dir = '", final_root, "/run'\n[model]\npath = '",
                                                     testing::Stories260KDir(), "'\n[data]\ntype = 'jsonl'\npath = '", final_root,
                                                     "/data.jsonl'\n[trainer]\ntype = 'sft'\nmax_steps = 1\n"));
  testing::WriteFile(dir + "/grpo.toml",
                     absl::StrCat("output_dir = '", final_root, "/grpo'\n[model]\npath = '", testing::Stories260KDir(),
                                  "'\n[data]\ntype = 'jsonl'\npath = '", final_root,
                                  "/data.jsonl'\n[sampler]\ntype = 'default'\n[[rewards]]\ntype = 'keyword'\n"
                                  "keywords = ['dog']\n[trainer]\ntype = 'grpo'\nmax_steps = 1\n"));
  ModelConfig stories = *ModelConfig::FromJsonFile(testing::Stories260KDir() + "/config.json");
  SaveOptions save;
  save.tokenizer_source_dir = testing::Stories260KDir();
  // A model of another vocabulary, for ref_model and for a tokenizer too large.
  ModelConfig small = stories;
  small.vocab_size = 300;
  auto other = CausalLM::Random(small, at::kFloat, 1);
  ASSERT_TRUE(SaveCausalLM(**other, dir + "/vocab300").ok());
  ASSERT_TRUE(SaveCausalLM(**other, dir + "/models/small_model", save).ok());
  // A truncated model file.
  const std::string truncated = EditedModel(dir, "truncated", nullptr);
  fs::resize_file(truncated + "/model.safetensors", fs::file_size(truncated + "/model.safetensors") / 2);
  // NaN weights.
  auto model = LoadCausalLM(testing::Stories260KDir(), at::kFloat);
  ASSERT_TRUE(model.ok());
  for (auto& [name, p] : (*model)->named_parameters()) {
    if (name == "model.norm.weight") p.detach().fill_(std::nanf(""));
  }
  ASSERT_TRUE(SaveCausalLM(**model, dir + "/nan_weights", save).ok());
  // Broken config.json and tokenizer.json.
  EditedModel(dir, "rope_theta", [](J& c) { c["rope_theta"] = 0.0; });
  EditedModel(dir, "eps", [](J& c) { c["rms_norm_eps"] = -1e-5; });
  EditedModel(dir, "llama3", [](J& c) {
    c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 0.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 256}};
  });
  EditedModel(dir, "hidden", [](J& c) { c["hidden_size"] = 64.5; });
  EditedModel(dir, "banana", [](J& c) { c["rope_scaling"] = "banana"; });
  EditedModel(dir, "maxpos", [](J& c) { c["max_position_embeddings"] = 0; });
  EditedModel(dir, "proportional_rope", [](J& c) { c["rope_scaling"] = {{"rope_type", "proportional"}, {"factor", 4.0}}; });
  EditedModel(dir, "huge_id", nullptr, [](J& t) { t["model"]["vocab"]["<unk>"] = 1000000000000LL; });
  EditedModel(dir, "negative_id", nullptr, [](J& t) { t["model"]["vocab"]["<unk>"] = -3; });
  EditedModel(dir, "empty_vocab", nullptr, [](J& t) {
    t["model"]["vocab"] = J::object();
    t["model"]["merges"] = J::array();
  });
  EditedModel(dir, "missing_unk", nullptr, [](J& t) { t["model"]["unk_token"] = "<nothere>"; });
  EditedModel(dir, "no_fallback", nullptr, [](J& t) {
    t["model"]["unk_token"] = nullptr;
    t["model"]["byte_fallback"] = false;
  });
  EditedModel(dir, "duplicate_ids", nullptr, [](J& t) {
    for (auto& [token, id] : t["model"]["vocab"].items()) {
      if (id == 6) {
        id = 5;
        break;
      }
    }
  });
}

const std::string& FixtureRoot() {
  static const std::string* root = [] {
    const fs::path base = fs::path(::testing::TempDir()) / "posttrain_tests";
    const std::string out = (base / "bad_input_fixtures_v4").string();
    if (fs::exists(out + "/complete")) return new std::string(out);
    const std::string mine = (base / ("bad_input_fixtures.tmp." + std::to_string(::getpid()))).string();
    fs::remove_all(mine);
    fs::create_directories(mine);
    BuildFixtures(mine, out);
    testing::WriteFile(mine + "/complete", "");
    std::error_code ec;
    fs::rename(mine, out, ec);
    if (ec) fs::remove_all(mine, ec);  // another process was first
    return new std::string(out);
  }();
  return *root;
}

class BadInputTest : public ::testing::TestWithParam<BadInput> {};

TEST_P(BadInputTest, GivesItsErrorAndExitsOne) {
  const BadInput& c = GetParam();
  std::string args = Substitute(c.args, "{model}", testing::Stories260KDir());
  args = Substitute(args, "{dir}", FixtureRoot());
  std::string out;
  const int rc = testing::RunCommand("cd " + testing::SourceDir() + " && timeout 60 " + testing::CliPath() + " " + args, &out);
  EXPECT_EQ(rc, 1) << c.name << ": " << out;
  EXPECT_THAT(out, HasSubstr(c.expected)) << c.name;
  EXPECT_THAT(out, Not(HasSubstr("terminate called"))) << c.name;
  EXPECT_THAT(out, Not(HasSubstr("Exception raised from"))) << c.name;  // a libtorch trace
}

std::vector<BadInput> Cases() {
  const std::string validate = "validate {dir}/sft.toml ";
  const std::string grpo = "validate {dir}/grpo.toml ";
  const std::string gen = "generate --model {model} --prompt 'Once upon a time' ";
  std::vector<BadInput> cases = {
      // Recipe values out of range (validate runs every check run does).
      {"learning_rate_nan", validate + "trainer.learning_rate=nan", "trainer.learning_rate: must be a finite number"},
      {"learning_rate_inf", validate + "trainer.learning_rate=inf", "trainer.learning_rate: must be a finite number"},
      {"learning_rate_negative", validate + "trainer.learning_rate=-0.1", "trainer.learning_rate: must be >= 0"},
      {"batch_size_zero", validate + "trainer.per_device_train_batch_size=0", "per_device_train_batch_size: must be >= 1"},
      {"batch_size_negative", validate + "trainer.per_device_train_batch_size=-3", "per_device_train_batch_size: must be >= 1"},
      {"max_length_zero", validate + "trainer.max_length=0", "trainer.max_length: must be >= 1"},
      {"max_prompt_length_negative", validate + "trainer.max_prompt_length=-4", "trainer.max_prompt_length: must be >= 1"},
      {"accumulation_zero", validate + "trainer.gradient_accumulation_steps=0", "gradient_accumulation_steps: must be >= 1"},
      {"logging_steps_zero", validate + "trainer.logging_steps=0", "trainer.logging_steps: must be >= 1"},
      {"warmup_ratio_five", validate + "trainer.warmup_ratio=5", "trainer.warmup_ratio: must be in [0, 1]"},
      {"max_grad_norm_negative", validate + "trainer.max_grad_norm=-1", "trainer.max_grad_norm: must be >= 0"},
      {"adam_beta1_above_one", validate + "trainer.adam_beta1=1.5", "trainer.adam_beta1: must be in [0, 1)"},
      {"epochs_negative", validate + "trainer.num_train_epochs=-1", "trainer.num_train_epochs: must be > 0"},
      {"save_total_limit_zero", validate + "trainer.save_total_limit=0", "save_total_limit: must be >= 1, or -1"},
      {"data_skip_negative", validate + "data.skip=-5", "data.skip: must be >= 0"},
      {"num_generations_zero", grpo + "trainer.num_generations=0", "trainer.num_generations: must be >= 2"},
      {"sampler_top_p_zero", grpo + "sampler.top_p=0", "sampler.top_p: must be in (0, 1]"},
      // Options that nothing reads.
      {"ref_model_without_reference", validate + "trainer.ref_model={model}", "ref_model: set, but has no effect: trainer 'sft' uses no reference model"},
      {"max_length_online", grpo + "trainer.max_length=64", "max_length: set, but has no effect: trainer 'grpo' samples its completions"},
      // What run would refuse only after loading: validate loads it too.
      {"malformed_data_file", validate + "data.path={dir}/broken.jsonl", "broken.jsonl:2"},
      {"truncated_model", validate + "model.path={dir}/models/truncated", "model.safetensors"},
      {"ref_model_other_vocab", "validate {dir}/sft.toml trainer.type=dpo trainer.ref_model={dir}/vocab300 'data.path={dir}/data.jsonl'",
       "has vocab_size 300 but the policy"},
      {"dtype_float16_recipe", validate + "model.dtype=float16", "model.dtype: 'float16' is not one of"},
      // generate flags.
      {"generate_min_p_two", gen + "--min-p 2", "min_p must be in [0, 1], got 2"},
      {"generate_dtype_float16", gen + "--dtype float16", "dtype 'float16' is not supported on the CPU"},
      {"generate_temperature_negative", gen + "--temperature -1", "temperature must be >= 0"},
      {"generate_temperature_nan", gen + "--temperature nan", "temperature must be a finite number"},
      {"generate_top_p_two", gen + "--top-p 2", "top_p must be in (0, 1]"},
      {"generate_top_p_zero", gen + "--top-p 0", "top_p must be in (0, 1]"},
      {"generate_top_k_negative", gen + "--top-k -5", "top_k must be >= 0"},
      {"generate_repetition_penalty_zero", gen + "--repetition-penalty 0", "repetition_penalty must be > 0"},
      {"generate_repetition_penalty_negative", gen + "--repetition-penalty -1", "repetition_penalty must be > 0"},
      {"generate_prompt_too_long", "generate --model {model} --prompt \"$(printf 'a%.0s' $(seq 1 3000))\"",
       "max_position_embeddings = 512"},
      {"generate_nan_weights", "generate --model {dir}/nan_weights --prompt Once --max-new-tokens 4",
       "logits are not finite"},
      // Broken config.json.
      {"config_rope_theta_zero", "generate --model {dir}/models/rope_theta --prompt Once", "rope_theta must be a positive number"},
      {"config_rms_norm_eps_negative", "generate --model {dir}/models/eps --prompt Once", "rms_norm_eps must be a positive number"},
      {"config_llama3_factor_zero", "generate --model {dir}/models/llama3 --prompt Once", "rope_scaling (llama3) needs factor > 0"},
      {"config_hidden_size_fraction", "generate --model {dir}/models/hidden --prompt Once", "\"hidden_size\" must be an integer, got 64.5"},
      {"config_rope_scaling_string", "generate --model {dir}/models/banana --prompt Once", "\"rope_scaling\" must be an object or null"},
      {"config_max_position_zero", "generate --model {dir}/models/maxpos --prompt Once", "max_position_embeddings must be positive"},
      {"config_unknown_rope", "generate --model {dir}/models/proportional_rope --prompt Once", "rope_scaling type \"proportional\" is not supported"},
      // Broken tokenizer.json.
      {"tokenizer_huge_id", "generate --model {dir}/models/huge_id --prompt Once", "outside [0, 16777216)"},
      {"tokenizer_negative_id", "generate --model {dir}/models/negative_id --prompt Once", "is -3, outside"},
      {"tokenizer_empty_vocab", "generate --model {dir}/models/empty_vocab --prompt Once", "model.vocab is empty"},
      {"tokenizer_missing_unk", "generate --model {dir}/models/missing_unk --prompt Once", "model.unk_token '<nothere>' is not in model.vocab"},
      {"tokenizer_no_fallback", "generate --model {dir}/models/no_fallback --prompt Once", "would be dropped"},
      {"tokenizer_duplicate_ids", "generate --model {dir}/models/duplicate_ids --prompt Once", "gives id 5 to both"},
      {"tokenizer_larger_than_model", "generate --model {dir}/models/small_model --prompt Once", "the tokenizer has 512 token ids but the model's vocab_size is 300"},
  };
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Table, BadInputTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<BadInput>& info) { return info.param.name; });

// Huge generation lengths are cut at the model's context instead of allocating
// for them (they used to try 128 GB, or overflow).
TEST(BadInputGenerateTest, HugeMaxNewTokensStopsAtTheContext) {
  const std::string json = testing::TempDir("huge") + "/out.jsonl";
  for (const char* n : {"1000000000", "9223372036854775807"}) {
    std::string out;
    ASSERT_EQ(testing::RunCommand("(" + testing::CliPath() + " generate --model " + testing::Stories260KDir() +
                                      " --prompt Once --json --max-new-tokens " + n + " 2>/dev/null) > " + json,
                                  &out),
              0)
        << out;
    const std::string text = testing::ReadFile(json);
    const nlohmann::json row = nlohmann::json::parse(text.substr(0, text.find('\n')));
    EXPECT_LE(row["token_ids"].size(), 512u);
  }
}

}  // namespace
}  // namespace posttrain
