// Data parallel over Gloo on loopback, through `posttrain launch`, on the real
// stories260K model:
//   - 2 ranks x batch b end with the weights of 1 rank x batch 2b (sft, dpo, grpo;
//     GRPO's rollouts are seeded per example, so they do not depend on the rank).
//     The two sum the same gradients in a different order (rounding ~1e-7
//     relative); AdamW's first steps turn a gradient near adam_epsilon into an
//     update of up to lr, so the default 1e-8 amplifies that rounding to ~1e-4
//     at lr 1e-3 (measured: grad_norm equal to 1e-8 relative, weights 1e-4
//     apart after one step). The tests use adam_epsilon = 1e-6, which keeps the
//     comparison about data parallelism, not about AdamW's conditioning;
//   - two launchers of one node each (--nnodes 2) equal one launcher of 2 workers;
//   - a rank killed with SIGKILL mid-run makes the other exit naming it, the
//     launcher exits non-zero, and the last checkpoint resumes to the
//     uninterrupted run's weights.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "posttrain/model/safetensors.h"
#include "test_support.h"

namespace posttrain {
namespace {

namespace fs = std::filesystem;

// Every run here is on the CPU (Gloo over loopback), also where a GPU is present:
// the equalities compare set-ups of the same arithmetic.
std::string RecipeArgs(const std::string& recipe, const std::string& out_dir, const std::string& overrides) {
  return absl::StrCat(recipe, " output_dir=", out_dir, " model.path=", testing::Stories260KDir(), " trainer.use_cpu=true ",
                      overrides);
}

std::string Single(const std::string& args) {
  return absl::StrCat("cd ", testing::SourceDir(), " && ", testing::CliPath(), " run ", args, " 2>&1");
}

std::string Launch(const std::string& launch_flags, const std::string& args) {
  return absl::StrCat("cd ", testing::SourceDir(), " && ", testing::CliPath(), " launch ", launch_flags, " --master-port ",
                      testing::FreePort(), " run ", args);
}

// The largest |a - b| over every tensor of two saved models.
double MaxAbsDifference(const std::string& a_dir, const std::string& b_dir) {
  // A model directory: model.safetensors, or shards + index (an FSDP final/).
  auto load = [](const std::string& dir) {
    auto tensors = LoadSafetensorsDir(dir);
    EXPECT_TRUE(tensors.ok()) << tensors.status();
    return tensors.ok() ? *tensors : std::map<std::string, at::Tensor>();
  };
  auto a = load(a_dir), b = load(b_dir);
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (const auto& [name, t] : a) {
    if (b.count(name) == 0) {
      ADD_FAILURE() << "missing " << name;
      continue;
    }
    worst = std::max(worst, (t.to(at::kDouble) - b.at(name).to(at::kDouble)).abs().max().item<double>());
  }
  return worst;
}

double ChangeFromInitial(const std::string& dir) {
  return MaxAbsDifference(testing::Stories260KDir(), dir);
}

// Two saved adapters: the largest |a - b| over their tensors, and the largest lora_B
// entry of the first (B starts at zero: how far training moved it).
struct AdapterComparison {
  double diff = 0, change = 0;
};
AdapterComparison CompareAdapters(const std::string& a_dir, const std::string& b_dir) {
  auto a = testing::LoadTensors(a_dir + "/adapter_model.safetensors");
  auto b = testing::LoadTensors(b_dir + "/adapter_model.safetensors");
  EXPECT_EQ(a.size(), b.size());
  EXPECT_FALSE(a.empty());
  AdapterComparison c;
  for (const auto& [name, t] : a) {
    if (b.count(name) == 0) {
      ADD_FAILURE() << "missing " << name;
      continue;
    }
    c.diff = std::max(c.diff, (t - b.at(name)).abs().max().item<double>());
    if (name.find("lora_B") != std::string::npos) c.change = std::max(c.change, t.abs().max().item<double>());
  }
  return c;
}

struct DpCase {
  const char* name;
  const char* recipe;
  const char* overrides;  // without the batch size
  int batch;              // per rank in the 2-rank run
};

void PrintTo(const DpCase& c, std::ostream* os) { *os << c.name; }

class DataParallelTest : public ::testing::TestWithParam<DpCase> {};

TEST_P(DataParallelTest, TwoRanksOfBatchBEqualOneRankOfBatch2B) {
  const DpCase& c = GetParam();
  const std::string dir = testing::TempDir(absl::StrCat("dp_", c.name));
  std::string out;
  ASSERT_EQ(testing::RunCommand(Single(RecipeArgs(c.recipe, dir + "/one",
                                           absl::StrCat(c.overrides, " trainer.per_device_train_batch_size=", 2 * c.batch))),
                                &out),
            0)
      << out;
  ASSERT_EQ(testing::RunCommand(Launch("--nproc-per-node 2",
                                       RecipeArgs(c.recipe, dir + "/two",
                                           absl::StrCat(c.overrides, " trainer.per_device_train_batch_size=", c.batch))) + " 2>&1",
                                &out),
            0)
      << out;
  EXPECT_THAT(out, ::testing::HasSubstr("[rank 1]"));
  EXPECT_THAT(out, ::testing::HasSubstr("data parallel: rank 0 of 2"));
  // FSDP-style sharding: each rank holds half of every unit; the same steps.
  ASSERT_EQ(testing::RunCommand(Launch("--nproc-per-node 2",
                                       RecipeArgs(c.recipe, dir + "/fsdp",
                                                  absl::StrCat(c.overrides, " trainer.per_device_train_batch_size=", c.batch,
                                                               " trainer.fsdp=full_shard"))) + " 2>&1",
                                &out),
            0)
      << out;
  EXPECT_THAT(out, ::testing::HasSubstr("fsdp full_shard: 6 units"));
  // final/ was written a unit at a time: one file per unit, and the index.
  EXPECT_TRUE(fs::exists(dir + "/fsdp/final/model.safetensors.index.json"));
  EXPECT_TRUE(fs::exists(dir + "/fsdp/final/model-00006-of-00006.safetensors"));
  EXPECT_FALSE(fs::exists(dir + "/fsdp/final/model.safetensors"));
  // Trained, and by the same steps.
  EXPECT_GT(ChangeFromInitial(dir + "/one/final"), 1e-4);
  EXPECT_LE(MaxAbsDifference(dir + "/one/final", dir + "/two/final"), 1e-5) << c.name;
  EXPECT_LE(MaxAbsDifference(dir + "/two/final", dir + "/fsdp/final"), 1e-5) << c.name;
  // Rank 0 alone writes the logs: one line per logging step.
  const std::string two = testing::ReadFile(dir + "/two/metrics.jsonl"), one = testing::ReadFile(dir + "/one/metrics.jsonl");
  EXPECT_EQ(std::count(two.begin(), two.end(), '\n'), std::count(one.begin(), one.end(), '\n'));
}

// LoRA composes with data parallel: two ranks of batch b train the same adapter as
// one rank of batch 2b (the adapter's gradients are what the ranks average). At
// lr 1e-4: AdamW turns the rounding of near-zero gradients (summed over 2b rows in
// one GEMM, or b rows per rank then added) into differences of order lr/10, as for
// full fine-tuning (the data-parallel cases above use adam_epsilon 1e-6 for that).
TEST(DataParallelLoraTest, TwoRanksOfBatchBEqualOneRankOfBatch2B) {
  const std::string dir = testing::TempDir("dp_lora");
  const std::string overrides =
      "trainer.max_steps=8 trainer.learning_rate=1e-4 trainer.adam_epsilon=1e-6 trainer.max_length=96 trainer.max_prompt_length=64 "
      "trainer.logging_steps=4 trainer.eval_on_start=false data.max_examples=64 eval_data.max_examples=4";
  std::string out;
  ASSERT_EQ(testing::RunCommand(Single(RecipeArgs("recipes/dpo/stories260K_hh_lora.toml", dir + "/one",
                                                  overrides + " trainer.per_device_train_batch_size=4")),
                                &out),
            0)
      << out;
  ASSERT_EQ(testing::RunCommand(Launch("--nproc-per-node 2", RecipeArgs("recipes/dpo/stories260K_hh_lora.toml", dir + "/two",
                                                                        overrides + " trainer.per_device_train_batch_size=2")) +
                                    " 2>&1",
                                &out),
            0)
      << out;
  const AdapterComparison c = CompareAdapters(dir + "/one/final", dir + "/two/final");
  EXPECT_GT(c.change, 1e-4);
  EXPECT_LE(c.diff, 1e-5) << "largest lora_B entry " << c.change;
}

// LoRA composes with fsdp: the frozen base is sharded (gathered a layer at a time),
// the adapter replicated, and two ranks with fsdp = "full_shard" train the adapter
// data parallelism trains. With lora_dropout the masks of a layer's recomputation in
// backward must be the forward's (fsdp.cc keeps the generator's state): without that
// the gradients differ (seen: grad_norm 21.04 against 20.79 after one step).
TEST(FsdpLoraTest, FullShardWithAnAdapterEqualsDataParallel) {
  const std::string dir = testing::TempDir("fsdp_lora");
  const std::string overrides =
      "trainer.max_steps=6 trainer.learning_rate=1e-3 trainer.max_length=96 trainer.max_prompt_length=64 "
      "trainer.logging_steps=2 trainer.eval_on_start=false data.max_examples=64 eval_data.max_examples=4 "
      "trainer.per_device_train_batch_size=2 peft.lora_dropout=0.1";
  std::string dp_log, fsdp_log;
  ASSERT_EQ(testing::RunCommand(Launch("--nproc-per-node 2", RecipeArgs("recipes/dpo/stories260K_hh_lora.toml", dir + "/dp", overrides)) +
                                    " 2>&1",
                                &dp_log),
            0)
      << dp_log;
  ASSERT_EQ(testing::RunCommand(Launch("--nproc-per-node 2", RecipeArgs("recipes/dpo/stories260K_hh_lora.toml", dir + "/fsdp",
                                                                        overrides + " trainer.fsdp=full_shard")) +
                                    " 2>&1",
                                &fsdp_log),
            0)
      << fsdp_log;
  EXPECT_THAT(fsdp_log, ::testing::HasSubstr("fsdp full_shard: 6 units"));
  // final/ is the adapter alone, as without fsdp.
  EXPECT_TRUE(fs::exists(dir + "/fsdp/final/adapter_model.safetensors"));
  EXPECT_FALSE(fs::exists(dir + "/fsdp/final/model.safetensors.index.json"));
  const AdapterComparison c = CompareAdapters(dir + "/dp/final", dir + "/fsdp/final");
  EXPECT_GT(c.change, 1e-3) << "nothing was trained";
  EXPECT_LE(c.diff, 1e-5) << "largest lora_B entry " << c.change;
  // Each rank holds half the frozen base (plus the replicated adapter).
  auto parameters_mib = [](const std::string& log) {
    const size_t at = log.find("[rank 1] ");
    const size_t line = log.find("memory (rank 1 of 2", at == std::string::npos ? 0 : at);
    const size_t value = log.find("parameters ", line);
    return line == std::string::npos || value == std::string::npos ? -1.0 : std::stod(log.substr(value + 11));
  };
  EXPECT_GT(parameters_mib(dp_log), 0);
  EXPECT_LT(parameters_mib(fsdp_log), parameters_mib(dp_log) - 0.4) << fsdp_log;
}

// DoRA composes with fsdp too: its weight norms read each layer's gathered weights,
// and its magnitudes train replicated; two full_shard ranks give the adapter (A, B
// and the magnitudes) two data-parallel ranks give (seen: bit-identical).
TEST(FsdpLoraTest, DoraFullShardEqualsDataParallel) {
  const std::string dir = testing::TempDir("fsdp_dora");
  const std::string overrides =
      "peft.use_dora=true trainer.max_steps=3 trainer.learning_rate=1e-3 trainer.max_length=96 trainer.max_prompt_length=64 "
      "trainer.logging_steps=1 trainer.eval_on_start=false data.max_examples=16 eval_data.max_examples=4 "
      "trainer.per_device_train_batch_size=2";
  for (const char* mode : {"dp", "fsdp"}) {
    std::string log;
    const std::string extra = std::string(mode) == "fsdp" ? " trainer.fsdp=full_shard" : "";
    ASSERT_EQ(testing::RunCommand(Launch("--nproc-per-node 2", RecipeArgs("recipes/dpo/stories260K_hh_lora.toml",
                                                                          dir + "/" + mode, overrides + extra)) +
                                      " 2>&1",
                                  &log),
              0)
        << log;
  }
  auto saved = testing::LoadTensors(dir + "/fsdp/final/adapter_model.safetensors");
  EXPECT_EQ(saved.count("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"), 1u);
  const AdapterComparison c = CompareAdapters(dir + "/dp/final", dir + "/fsdp/final");
  EXPECT_GT(c.change, 1e-4) << "nothing was trained";
  EXPECT_LE(c.diff, 1e-5) << "largest lora_B entry " << c.change;
}

INSTANTIATE_TEST_SUITE_P(
    SftDpoGrpo, DataParallelTest,
    ::testing::Values(
        // weight_decay: an FSDP shard decays its projections but not its norms, as
        // the whole model's parameters do one by one.
        DpCase{"sft", "recipes/sft/stories260K_gsm8k.toml",
               "trainer.weight_decay=0.1 "
               "trainer.max_steps=10 trainer.learning_rate=1e-3 trainer.adam_epsilon=1e-6 trainer.max_length=96 trainer.max_prompt_length=64 "
               "trainer.logging_steps=5 trainer.eval_steps=0 trainer.eval_on_start=false data.max_examples=128 "
               "eval_data.max_examples=8",
               2},
        DpCase{"dpo", "recipes/dpo/stories260K_hh_harmless.toml",
               "trainer.max_steps=10 trainer.learning_rate=1e-3 trainer.adam_epsilon=1e-6 trainer.max_length=96 trainer.max_prompt_length=64 "
               "trainer.logging_steps=5 trainer.eval_on_start=false trainer.precompute_ref_log_probs=false "
               "data.max_examples=64 eval_data.max_examples=4",
               2},
        // bco_pair's running mean over every rank's rewards (Collectives::Gather).
        DpCase{"dpo_bco_pair", "recipes/dpo/stories260K_hh_harmless.toml",
               "trainer.loss_type=bco_pair trainer.max_steps=8 trainer.learning_rate=1e-3 trainer.adam_epsilon=1e-6 "
               "trainer.max_length=96 trainer.max_prompt_length=64 trainer.logging_steps=4 trainer.eval_on_start=false "
               "trainer.precompute_ref_log_probs=false data.max_examples=64 eval_data.max_examples=4",
               2},
        DpCase{"grpo", "recipes/grpo/stories260K_keyword.toml",
               "trainer.max_steps=10 trainer.learning_rate=1e-3 trainer.adam_epsilon=1e-6 trainer.num_generations=4 "
               "sampler.max_completion_length=16 trainer.max_completion_length=16 trainer.logging_steps=5 "
               "trainer.scale_rewards=batch rewards.0.keywords=[\\\"the\\\",\\\"she\\\",\\\"he\\\"]",
               2}),
    [](const ::testing::TestParamInfo<DpCase>& info) { return std::string(info.param.name); });

const char* kSft = "recipes/sft/stories260K_gsm8k.toml";  // 1-vs-2-launcher runs are bitwise equal
const char* kSftOverrides =
    "trainer.max_steps=8 trainer.learning_rate=1e-3 trainer.per_device_train_batch_size=2 trainer.max_length=96 "
    "trainer.max_prompt_length=64 trainer.logging_steps=2 trainer.eval_steps=0 trainer.eval_on_start=false "
    "data.max_examples=128 eval_data.max_examples=8";

// A checkpoint of 2 ranks with fsdp = "full_shard" (each rank's shards and
// optimizer state in its own file) resumed by 1 rank with twice the batch (the
// same global batch) ends where the uninterrupted 2-rank run does.
TEST(FsdpResumeTest, TwoRankFullShardCheckpointResumesOnOneRank) {
  const std::string dir = testing::TempDir("fsdp_resume");
  const std::string overrides = absl::StrCat(kSftOverrides, " trainer.fsdp=full_shard trainer.save_steps=4 trainer.adam_epsilon=1e-6");
  std::string out;
  ASSERT_EQ(testing::RunCommand(Launch("--nproc-per-node 2", RecipeArgs(kSft, dir + "/two", overrides)) + " 2>&1", &out), 0) << out;
  // Each rank wrote its own shards and optimizer state; no whole model.
  ASSERT_TRUE(fs::exists(dir + "/two/checkpoint-4/fsdp/rank-0.safetensors"));
  ASSERT_TRUE(fs::exists(dir + "/two/checkpoint-4/fsdp/rank-1.safetensors"));
  EXPECT_FALSE(fs::exists(dir + "/two/checkpoint-4/model.safetensors"));
  const auto shard = testing::LoadTensors(dir + "/two/checkpoint-4/fsdp/rank-1.safetensors");
  ASSERT_EQ(shard.count("fsdp.layers.0"), 1u);
  ASSERT_EQ(shard.count("optimizer.exp_avg.fsdp.layers.0"), 1u);
  EXPECT_EQ(shard.at("fsdp.layers.0").numel(), shard.at("optimizer.exp_avg.fsdp.layers.0").numel());
  ASSERT_EQ(testing::RunCommand(Single(RecipeArgs(kSft, dir + "/one",
                                                  absl::StrCat(overrides, " trainer.per_device_train_batch_size=4 "
                                                               "trainer.resume_from_checkpoint=", dir, "/two/checkpoint-4"))),
                                &out),
            0)
      << out;
  EXPECT_THAT(out, ::testing::HasSubstr("resumed from"));
  EXPECT_GT(ChangeFromInitial(dir + "/two/final"), 1e-4);
  EXPECT_LE(MaxAbsDifference(dir + "/two/final", dir + "/one/final"), 1e-5);
  // A sharded checkpoint missing a rank's file is refused by name.
  fs::create_directories(dir + "/broken");
  fs::copy(dir + "/two/checkpoint-4", dir + "/broken/checkpoint-4", fs::copy_options::recursive);
  fs::remove(dir + "/broken/checkpoint-4/fsdp/rank-1.safetensors");
  EXPECT_EQ(testing::RunCommand(Single(RecipeArgs(kSft, dir + "/broken",
                                                  absl::StrCat(overrides, " trainer.resume_from_checkpoint=latest"))),
                                &out),
            1)
      << out;
  EXPECT_THAT(out, ::testing::HasSubstr("was written by 2 ranks but holds 1 of their shard files"));
}

TEST(MultiNodeTest, TwoLaunchersOfOneWorkerEqualOneLauncherOfTwo) {
  const std::string dir = testing::TempDir("dp_nnodes");
  std::string out;
  // One compute thread per worker in both set-ups: the same arithmetic, bit for bit.
  ASSERT_EQ(testing::RunCommand("export OMP_NUM_THREADS=1; " + Launch("--nproc-per-node 2", RecipeArgs(kSft, dir + "/one", kSftOverrides)) + " 2>&1", &out), 0) << out;
  // Node 1 first, in the background: it waits for node 0's store.
  const int port = testing::FreePort();
  const std::string node = absl::StrCat("export OMP_NUM_THREADS=1; cd ", testing::SourceDir(), " && ", testing::CliPath(),
                                        " launch --nnodes 2 --nproc-per-node 1 --master-addr 127.0.0.1 --master-port ", port);
  ASSERT_EQ(testing::RunCommand(absl::StrCat("(", node, " --node-rank 1 run ", RecipeArgs(kSft, dir + "/two", kSftOverrides), " > ", dir,
                                             "/node1.log 2>&1; echo $? > ", dir, "/node1.rc) & ", node, " --node-rank 0 run ",
                                             RecipeArgs(kSft, dir + "/two", kSftOverrides), " 2>&1; wait"),
                                &out),
            0)
      << out;
  EXPECT_EQ(testing::ReadFile(dir + "/node1.rc"), "0\n") << testing::ReadFile(dir + "/node1.log");
  EXPECT_EQ(MaxAbsDifference(dir + "/one/final", dir + "/two/final"), 0.0);
  EXPECT_GT(ChangeFromInitial(dir + "/two/final"), 1e-4);
}

// The launcher's children (the workers), by rank order of creation.
std::vector<int> Children(int pid) {
  std::vector<int> out;
  const std::string text = testing::ReadFile(absl::StrCat("/proc/", pid, "/task/", pid, "/children"));
  for (absl::string_view part : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    int child = 0;
    if (absl::SimpleAtoi(part, &child)) out.push_back(child);
  }
  return out;
}

TEST(DistributedFaultTest, AKilledRankStopsTheRunAndTheLastCheckpointResumes) {
  const std::string dir = testing::TempDir("dp_fault");
  const std::string overrides = absl::StrCat(kSftOverrides, " trainer.save_steps=2");
  std::string out;
  // The uninterrupted 2-rank run.
  ASSERT_EQ(testing::RunCommand(Launch("--nproc-per-node 2", RecipeArgs(kSft, dir + "/a", overrides)) + " 2>&1", &out), 0) << out;
  // The same, with rank 1 killed once checkpoint-4 exists.
  ASSERT_EQ(testing::RunCommand(absl::StrCat("sh -c '", Launch("--nproc-per-node 2 --grace 55", RecipeArgs(kSft, dir + "/b", overrides)),
                                             " > ", dir, "/b.log 2>&1; echo $? > ", dir, "/b.rc' > /dev/null 2>&1 & echo $!"),
                                &out),
            0);
  int shell = 0;
  ASSERT_TRUE(absl::SimpleAtoi(out.substr(0, out.find('\n')), &shell)) << out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!fs::exists(dir + "/b/checkpoint-4") && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(fs::exists(dir + "/b/checkpoint-4"));
  // shell -> launcher -> workers.
  const std::vector<int> launcher = Children(shell);
  ASSERT_EQ(launcher.size(), 1u);
  const std::vector<int> workers = Children(launcher[0]);
  ASSERT_EQ(workers.size(), 2u);
  const auto killed_at = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(workers[1], SIGKILL), 0);
  while (!fs::exists(dir + "/b.rc") && std::chrono::steady_clock::now() - killed_at < std::chrono::seconds(90)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // Rank 0 stopped by itself (within the grace the launcher gives it), naming rank 1.
  EXPECT_LT(std::chrono::steady_clock::now() - killed_at, std::chrono::seconds(60));
  ASSERT_TRUE(fs::exists(dir + "/b.rc"));
  EXPECT_NE(testing::ReadFile(dir + "/b.rc"), "0\n");
  const std::string log = testing::ReadFile(dir + "/b.log");
  EXPECT_THAT(log, ::testing::HasSubstr("rank 1 (pid"));
  EXPECT_THAT(log, ::testing::HasSubstr("was killed by signal 9"));
  EXPECT_THAT(log, ::testing::ContainsRegex("\\[rank 0\\].*rank 1 stopped responding \\(lost\\)"));
  ASSERT_FALSE(fs::exists(dir + "/b/final"));
  // A checkpoint interrupted while being written (its files go to
  // checkpoint-<n>.tmp/, renamed when complete) is never taken for one.
  fs::create_directories(dir + "/b/checkpoint-99.tmp");
  testing::WriteFile(dir + "/b/checkpoint-99.tmp/trainer_state.json", "{\"global_step\": 99}\n");
  testing::WriteFile(dir + "/b/checkpoint-99.tmp/model.safetensors", "truncated");
  // The last complete checkpoint resumes to the uninterrupted run's weights.
  ASSERT_EQ(testing::RunCommand(Launch("--nproc-per-node 2", RecipeArgs(kSft, dir + "/b", absl::StrCat(overrides, " trainer.resume_from_checkpoint=latest"))) + " 2>&1", &out), 0)
      << out;
  EXPECT_THAT(out, ::testing::ContainsRegex("resumed from .*/b/checkpoint-[4-7] at step"));
  EXPECT_LE(MaxAbsDifference(dir + "/a/final", dir + "/b/final"), 1e-6);
}

// A model's own dropout (a random GPT-2 with GPT2Config's 0.1 on attention, residual
// branches and embeddings) under fsdp = "full_shard": each layer recomputed for its
// backward draws the masks its forward drew (the generator's state is kept and
// restored), so 2 sharded ranks end where 2 ranks of plain data parallel do.
TEST(FsdpDropoutTest, FullShardWithModelDropoutEqualsDataParallel) {
  const std::string dir = testing::TempDir("fsdp_dropout");
  testing::WriteFile(dir + "/gpt2.json",
                     R"({"model_type": "gpt2", "vocab_size": 512, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 128,
                        "attn_pdrop": 0.1, "resid_pdrop": 0.1, "embd_pdrop": 0.1, "bos_token_id": 1, "eos_token_id": 2})");
  std::string out;
  ASSERT_EQ(testing::RunCommand(testing::CliPath() + " init --config " + dir + "/gpt2.json --tokenizer " +
                                    testing::Stories260KDir() + " --out " + dir + "/gpt2 2>&1",
                                &out),
            0)
      << out;
  auto args = [&](const std::string& run, const std::string& extra) {
    return absl::StrCat(kSft, " output_dir=", dir, "/", run, " model.path=", dir, "/gpt2 trainer.use_cpu=true ", kSftOverrides, " ", extra);
  };
  std::string dp_log, fsdp_log;
  ASSERT_EQ(testing::RunCommand(Launch("--nproc-per-node 2", args("dp", "")) + " 2>&1", &dp_log), 0) << dp_log;
  ASSERT_EQ(testing::RunCommand(Launch("--nproc-per-node 2", args("fsdp", "trainer.fsdp=full_shard")) + " 2>&1", &fsdp_log), 0)
      << fsdp_log;
  EXPECT_THAT(dp_log, ::testing::HasSubstr("dropout in training: attention 0.1"));
  EXPECT_THAT(fsdp_log, ::testing::HasSubstr("fsdp full_shard"));
  EXPECT_GT(MaxAbsDifference(dir + "/gpt2", dir + "/dp/final"), 1e-3) << "nothing was trained";
  EXPECT_LE(MaxAbsDifference(dir + "/dp/final", dir + "/fsdp/final"), 1e-5);
}

}  // namespace
}  // namespace posttrain
