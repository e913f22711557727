// Resource faults: a checkpoint that cannot be written (a file-size limit standing in
// for a full disk: RLIMIT_FSIZE via `ulimit -f`) stops the run with a clear error and
// leaves the earlier checkpoint intact and resumable to the same final weights; so does
// an output directory that turned read-only; a sharded model whose shards disagree with
// its index is refused by name.
#include <unistd.h>

#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "posttrain/model/hf_model.h"
#include "posttrain/model/safetensors.h"
#include "test_support.h"

namespace posttrain {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string Sft(const std::string& out_dir, const std::string& extra = "") {
  return "cd " + testing::SourceDir() + " && " + testing::CliPath() + " run recipes/sft/stories260K_gsm8k.toml output_dir=" +
         out_dir + " model.path=" + testing::Stories260KDir() +
         " trainer.max_steps=6 trainer.save_steps=2 trainer.per_device_train_batch_size=2 trainer.max_length=96 "
         "trainer.max_prompt_length=48 trainer.eval_steps=0 trainer.eval_on_start=false data.max_examples=32 "
         "eval_data.max_examples=2 trainer.logging_steps=1 trainer.save_total_limit=-1 " + extra;
}

// The regular files of `dir` by name, with their bytes.
std::map<std::string, std::string> FilesIn(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.is_regular_file()) files[e.path().filename().string()] = testing::ReadFile(e.path().string());
  }
  return files;
}

TEST(FaultTest, ACheckpointThatCannotBeWrittenStopsTheRunAndKeepsTheEarlierOne) {
  const std::string dir = testing::TempDir("disk_full");
  std::string out;
  ASSERT_EQ(testing::RunCommand(Sft(dir + "/run"), &out), 0) << out;
  const auto reference = testing::LoadTensors(dir + "/run/final/model.safetensors");
  fs::remove_all(dir + "/run/checkpoint-4");
  fs::remove_all(dir + "/run/final");
  const std::string kept = dir + "/run/checkpoint-2";
  const std::map<std::string, std::string> before = FilesIn(kept);
  ASSERT_FALSE(before.empty());
  // A final model that cannot be written: an error, and no final/ that looks complete.
  int final_rc = testing::RunCommand("ulimit -f 600 && " + Sft(dir + "/run", "trainer.max_steps=2 trainer.resume_from_checkpoint=" + kept), &out);
  EXPECT_EQ(final_rc, 1) << out;
  EXPECT_THAT(out, HasSubstr("writing final/ (removed; the checkpoints written so far are intact)"));
  EXPECT_THAT(out, HasSubstr("File too large"));
  EXPECT_FALSE(fs::exists(dir + "/run/final"));
  // Resumed with files capped at 600 KiB: checkpoint-4's model (1 MiB) cannot be written.
  const int rc = testing::RunCommand("ulimit -f 600 && " + Sft(dir + "/run", "trainer.resume_from_checkpoint=" + kept), &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_THAT(out, HasSubstr("posttrain: error:"));
  EXPECT_THAT(out, HasSubstr("checkpoint-4"));
  EXPECT_THAT(out, ::testing::Not(HasSubstr("terminate called")));
  EXPECT_FALSE(fs::exists(dir + "/run/checkpoint-4/model.safetensors")) << "a half-written checkpoint is not left behind";
  EXPECT_TRUE(FilesIn(kept) == before) << kept << " changed";
  // The earlier checkpoint resumes to the same final weights as the uninterrupted run.
  ASSERT_EQ(testing::RunCommand(Sft(dir + "/run", "trainer.resume_from_checkpoint=" + kept), &out), 0) << out;
  const auto resumed = testing::LoadTensors(dir + "/run/final/model.safetensors");
  ASSERT_EQ(resumed.size(), reference.size());
  for (const auto& [name, t] : reference) EXPECT_TRUE(at::equal(t, resumed.at(name))) << name;
}

// Makes `dir` read-only for this process while in scope. Root ignores permission bits,
// so as root the directory is made immutable instead (chattr +i: no entry may be added
// or removed, by anyone).
class ReadOnlyDirectory {
 public:
  explicit ReadOnlyDirectory(std::string dir) : dir_(std::move(dir)), root_(::geteuid() == 0) {
    std::string out;
    ok_ = testing::RunCommand(root_ ? "chattr +i '" + dir_ + "'" : "chmod a-w '" + dir_ + "'", &out) == 0;
  }
  ~ReadOnlyDirectory() {
    std::string out;
    testing::RunCommand(root_ ? "chattr -i '" + dir_ + "'" : "chmod u+w '" + dir_ + "'", &out);
  }
  bool ok() const { return ok_; }

 private:
  std::string dir_;
  bool root_;
  bool ok_ = false;
};

TEST(FaultTest, AReadOnlyOutputDirectoryStopsTheRunAndKeepsTheEarlierCheckpoint) {
  const std::string dir = testing::TempDir("read_only");
  std::string out;
  ASSERT_EQ(testing::RunCommand(Sft(dir + "/run", "trainer.max_steps=3"), &out), 0) << out;
  fs::remove_all(dir + "/run/final");
  const std::string kept = dir + "/run/checkpoint-2";
  const std::map<std::string, std::string> before = FilesIn(kept);
  ASSERT_FALSE(before.empty());
  {
    ReadOnlyDirectory read_only(dir + "/run");
    if (!read_only.ok()) GTEST_SKIP() << "this file system cannot make " << dir << " read-only";
    const int rc = testing::RunCommand(Sft(dir + "/run", "trainer.resume_from_checkpoint=" + kept), &out);
    EXPECT_EQ(rc, 1) << out;
    EXPECT_THAT(out, HasSubstr("posttrain: error:"));
    EXPECT_THAT(out, HasSubstr(dir + "/run"));
    EXPECT_THAT(out, ::testing::AnyOf(HasSubstr("Operation not permitted"), HasSubstr("Permission denied")));
    EXPECT_THAT(out, ::testing::Not(HasSubstr("terminate called")));
  }
  EXPECT_FALSE(fs::exists(dir + "/run/checkpoint-4"));
  EXPECT_FALSE(fs::exists(dir + "/run/final"));
  EXPECT_TRUE(FilesIn(kept) == before) << kept << " changed";
  // The directory a checkpoint goes to is read-only (here checkpoint-4, met mid-run).
  fs::create_directories(dir + "/run/checkpoint-4");
  testing::WriteFile(dir + "/run/checkpoint-4/README", "not posttrain's\n");  // so that it cannot be replaced either
  {
    ReadOnlyDirectory read_only(dir + "/run/checkpoint-4");
    ASSERT_TRUE(read_only.ok());
    const int rc = testing::RunCommand(Sft(dir + "/run", "trainer.resume_from_checkpoint=" + kept), &out);
    EXPECT_EQ(rc, 1) << out;
    EXPECT_THAT(out, HasSubstr("writing checkpoint-4 (earlier checkpoints are intact)"));
    EXPECT_THAT(out, HasSubstr(dir + "/run/checkpoint-4"));
    EXPECT_THAT(out, ::testing::Not(HasSubstr("terminate called")));
    EXPECT_FALSE(fs::exists(dir + "/run/checkpoint-4.tmp")) << "the half-written checkpoint is removed";
  }
  fs::remove_all(dir + "/run/checkpoint-4");
  EXPECT_TRUE(FilesIn(kept) == before) << kept << " changed";
  // Writable again, the kept checkpoint resumes.
  ASSERT_EQ(testing::RunCommand(Sft(dir + "/run", "trainer.resume_from_checkpoint=" + kept), &out), 0) << out;
  EXPECT_TRUE(fs::exists(dir + "/run/final/model.safetensors"));
}

TEST(FaultTest, ShardsThatDisagreeWithTheirIndexAreRefusedByName) {
  auto model = LoadCausalLM(testing::Stories260KDir(), at::kFloat);
  ASSERT_TRUE(model.ok());
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& [name, t] : (*model)->named_parameters()) tensors.emplace_back(name, t.detach());
  const std::string dir = testing::TempDir("shards");
  ASSERT_TRUE(SaveSafetensorsDir(dir, tensors, /*max_shard_bytes=*/200000).ok());
  ASSERT_TRUE(fs::exists(dir + "/model.safetensors.index.json"));
  nlohmann::json index = nlohmann::json::parse(testing::ReadFile(dir + "/model.safetensors.index.json"));
  const std::string first = index["weight_map"].begin().key();
  const std::string shard = index["weight_map"].begin().value();
  // The index names a tensor its shard lacks.
  nlohmann::json missing = index;
  missing["weight_map"]["model.layers.0.extra.weight"] = shard;
  testing::WriteFile(dir + "/model.safetensors.index.json", missing.dump());
  absl::Status s = LoadSafetensorsDir(dir).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr("lists 'model.layers.0.extra.weight' in " + shard));
  // A shard holds a tensor the index does not list there.
  nlohmann::json extra = index;
  extra["weight_map"].erase(first);
  testing::WriteFile(dir + "/model.safetensors.index.json", extra.dump());
  s = LoadSafetensorsDir(dir).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr("shard " + shard + " holds '" + first + "'"));
}

}  // namespace
}  // namespace posttrain
