// Resuming is exact for every trainer family: a run killed with SIGKILL right after
// a checkpoint and resumed from it ends with the same weights, bit for bit, as the
// same run uninterrupted — also when the checkpoint falls within a generation's
// reuse (GRPO num_iterations, PPO num_ppo_epochs) and for state a trainer carries
// (bco_pair's running mean) — and its logs hold every step once, as the
// uninterrupted run's do.
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "posttrain/model/safetensors.h"
#include "test_support.h"

namespace posttrain {
namespace {

namespace fs = std::filesystem;

struct ResumeCase {
  const char* name;
  const char* recipe;
  const char* overrides;
  int checkpoint;  // kill once checkpoint-<n> exists
};

// full_determinism: bit-equal weights need deterministic kernels on CUDA (its backward
// kernels accumulate with atomics in a varying order); on the CPU it changes nothing.
std::string Command(const ResumeCase& c, const std::string& out_dir, const std::string& extra = "") {
  return absl::StrCat("cd ", testing::SourceDir(), " && exec ", testing::CliPath(), " run ", c.recipe, " output_dir=", out_dir,
                      " model.path=", testing::Stories260KDir(), " trainer.full_determinism=true ", c.overrides, " ", extra);
}

void PrintTo(const ResumeCase& c, std::ostream* os) { *os << c.name; }

class ResumeTest : public ::testing::TestWithParam<ResumeCase> {};

TEST_P(ResumeTest, SigkillAndResumeEqualsTheUninterruptedRun) {
  const ResumeCase& c = GetParam();
  const std::string dir = testing::TempDir(absl::StrCat("resume_", c.name));
  std::string out;
  ASSERT_EQ(testing::RunCommand(Command(c, dir + "/a"), &out), 0) << out;
  ASSERT_EQ(testing::RunCommand("sh -c '" + Command(c, dir + "/b") + " > " + dir + "/b.log 2>&1 & echo $!'", &out), 0);
  int pid = 0;
  ASSERT_TRUE(absl::SimpleAtoi(out.substr(0, out.find('\n')), &pid)) << out;
  const std::string checkpoint = absl::StrCat(dir, "/b/checkpoint-", c.checkpoint);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(checkpoint) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  // Later checkpoints may follow before the kill lands: the resume names this one.
  ASSERT_EQ(::kill(pid, SIGKILL), 0);  // the job `cd && exec posttrain`: posttrain itself
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ASSERT_FALSE(fs::exists(dir + "/b/final")) << "the run finished before it could be killed";
  ASSERT_EQ(testing::RunCommand(Command(c, dir + "/b", absl::StrCat("trainer.resume_from_checkpoint=", checkpoint)), &out), 0)
      << out;
  EXPECT_THAT(out, ::testing::HasSubstr("resumed from"));
  // An adapter run's final/ is the adapter (PEFT's file), else the whole model.
  const bool adapter = fs::exists(dir + "/a/final/adapter_model.safetensors");
  const std::string file = adapter ? "/final/adapter_model.safetensors" : "/final/model.safetensors";
  auto a = testing::LoadTensors(dir + "/a" + file);
  auto b = testing::LoadTensors(dir + "/b" + file);
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  for (const auto& [name, t] : a) EXPECT_TRUE(at::equal(t, b.at(name))) << c.name << ": " << name;
  if (adapter) {
    EXPECT_GT(a.at("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight").abs().max().item<double>(), 0.0)
        << "nothing was trained";
  } else {
    auto initial = testing::LoadTensors(testing::Stories260KDir() + "/model.safetensors");
    EXPECT_FALSE(at::equal(initial.at("model.norm.weight"), a.at("model.norm.weight"))) << "nothing was trained";
  }
  // Logs: every step once, the same lines as the uninterrupted run.
  EXPECT_EQ(testing::ReadFile(dir + "/a/metrics.jsonl"), testing::ReadFile(dir + "/b/metrics.jsonl"));
  if (fs::exists(dir + "/a/completions.jsonl")) {
    EXPECT_EQ(testing::ReadFile(dir + "/a/completions.jsonl"), testing::ReadFile(dir + "/b/completions.jsonl"));
  }
  // TensorBoard (report_to): the resumed stream holds the same scalars and texts at
  // the same steps as the uninterrupted one's, each once (read back independently).
  if (fs::exists(dir + "/a/runs")) {
    auto events = [&](const std::string& run) {
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(run + "/runs")) files.push_back(e.path().string());
      EXPECT_EQ(files.size(), 1u) << run;
      std::string json;
      EXPECT_EQ(testing::RunCommand(posttrain::testing::Python() + " " + testing::SourceDir() + "/tests/support/tfevents_py.py " + files[0], &json), 0)
          << json;
      return nlohmann::json::parse(json);
    };
    const nlohmann::json a_events = events(dir + "/a"), b_events = events(dir + "/b");
    EXPECT_EQ(a_events["scalars"], b_events["scalars"]);
    EXPECT_EQ(a_events["texts"].size(), b_events["texts"].size());
    std::set<std::pair<std::string, std::int64_t>> seen;
    for (const auto& s : b_events["scalars"]) {
      EXPECT_TRUE(seen.insert({s[0].get<std::string>(), s[1].get<std::int64_t>()}).second) << s.dump();
    }
    EXPECT_TRUE(seen.count({"train/loss", c.checkpoint + 2}) || seen.count({"train/loss", c.checkpoint + 1}))
        << "steps after the resume are there";
  }
}

INSTANTIATE_TEST_SUITE_P(
    EveryTrainerFamily, ResumeTest,
    ::testing::Values(
        ResumeCase{"sft", "recipes/sft/stories260K_gsm8k.toml",
                   "trainer.max_steps=9 trainer.per_device_train_batch_size=4 trainer.gradient_accumulation_steps=2 "
                   "trainer.max_length=128 trainer.max_prompt_length=64 trainer.save_steps=3 trainer.logging_steps=2 "
                   "trainer.eval_steps=0 data.max_examples=64 eval_data.max_examples=8 trainer.eval_on_start=false "
                   "trainer.report_to=[\\\"tensorboard\\\"]",
                   3},
        ResumeCase{"dpo_bco_pair", "recipes/dpo/stories260K_hh_harmless.toml",
                   "trainer.loss_type=bco_pair trainer.max_steps=9 trainer.per_device_train_batch_size=4 "
                   "trainer.max_length=96 trainer.max_prompt_length=64 trainer.save_steps=3 trainer.logging_steps=2 "
                   "trainer.eval_on_start=false trainer.precompute_ref_log_probs=false data.max_examples=64 "
                   "eval_data.max_examples=4",
                   3},
        // lora_dropout: the masks come from generators seeded per step, so the resume
        // draws what the uninterrupted run drew.
        ResumeCase{"dpo_lora", "recipes/dpo/stories260K_hh_lora.toml",
                   "peft.lora_dropout=0.1 trainer.max_steps=9 trainer.per_device_train_batch_size=4 trainer.max_length=96 "
                   "trainer.max_prompt_length=64 trainer.save_steps=3 trainer.logging_steps=2 trainer.eval_on_start=false "
                   "data.max_examples=64 eval_data.max_examples=4",
                   3},
        ResumeCase{"grpo_num_iterations_2", "recipes/grpo/stories260K_keyword.toml",
                   "trainer.max_steps=12 trainer.per_device_train_batch_size=2 trainer.num_generations=4 "
                   "sampler.max_completion_length=16 trainer.max_completion_length=16 trainer.num_iterations=2 "
                   "trainer.save_steps=3 trainer.logging_steps=2 trainer.report_to=[\\\"tensorboard\\\"] "
                   "rewards.0.keywords=[\\\"the\\\",\\\"she\\\",\\\"he\\\"]",  // common words: groups differ
                   3},
        ResumeCase{"ppo", "recipes/ppo/stories260K_keyword.toml",
                   "trainer.max_steps=12 trainer.per_device_train_batch_size=4 sampler.max_completion_length=16 "
                   "trainer.save_steps=3 trainer.logging_steps=2",
                   3}),
    [](const ::testing::TestParamInfo<ResumeCase>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace posttrain
