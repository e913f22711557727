// TensorBoard event files: CRC-32C against its published check value, every scalar
// and text read back by an independent reader (tests/support/tfevents_py.py: its own
// CRC and python3-protobuf), a record cut short by a kill dropped on resume, and
// resuming keeps only the steps up to the checkpoint.
#include "posttrain/run/tensorboard.h"

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "test_support.h"

namespace posttrain {
namespace {

namespace fs = std::filesystem;

nlohmann::json ReadBack(const std::string& path) {
  std::string json;
  EXPECT_EQ(testing::RunCommand(posttrain::testing::Python() + " " + testing::SourceDir() + "/tests/support/tfevents_py.py " + path, &json), 0) << json;
  return nlohmann::json::parse(json);
}

TEST(TensorBoardTest, Crc32cHasItsCheckValue) {
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);  // the CRC-32C check value (RFC 3720, B.4)
  EXPECT_EQ(Crc32c("", 0), 0u);
}

TEST(TensorBoardTest, ScalarsAndTextReadBackAndResumeDropsLaterSteps) {
  const std::string dir = testing::TempDir("tensorboard");
  std::string path;
  {
    auto tb = TensorBoardWriter::Open(dir, -1);
    ASSERT_TRUE(tb.ok()) << tb.status();
    path = (*tb)->path();
    for (std::int64_t step = 1; step <= 4; ++step) {
      ASSERT_TRUE((*tb)->AddScalars(step, {{"train/loss", 1.0 / static_cast<double>(step)}, {"train/lr", 0.25}}).ok());
    }
    ASSERT_TRUE((*tb)->AddText(2, "completions", "| a | b |\n|---|---|\n| é | 1 |").ok());
  }
  nlohmann::json events = ReadBack(path);
  EXPECT_EQ(events["file_version"], "brain.Event:2");
  ASSERT_EQ(events["scalars"].size(), 8u);
  EXPECT_EQ(events["scalars"][0], nlohmann::json({"train/loss", 1, 1.0}));
  EXPECT_EQ(events["scalars"][7], nlohmann::json({"train/lr", 4, 0.25}));
  EXPECT_EQ(events["texts"][0], nlohmann::json({"completions", 2, "| a | b |\n|---|---|\n| é | 1 |"}));

  // A kill in the middle of a record: its tail is missing.
  fs::resize_file(path, fs::file_size(path) - 5);
  auto records = TensorBoardWriter::ReadRecords(path);
  ASSERT_TRUE(records.ok()) << records.status();
  EXPECT_EQ(records->size(), 5u);  // the version and steps 1-4; the text was cut
  // Resume from step 2: steps 3 and 4 (and the cut record) go; new ones follow.
  {
    auto tb = TensorBoardWriter::Open(dir, 2);
    ASSERT_TRUE(tb.ok()) << tb.status();
    EXPECT_EQ((*tb)->path(), path);
    ASSERT_TRUE((*tb)->AddScalars(3, {{"train/loss", 0.5}}).ok());
  }
  events = ReadBack(path);
  ASSERT_EQ(events["scalars"].size(), 5u);
  EXPECT_EQ(events["scalars"][4], nlohmann::json({"train/loss", 3, 0.5}));
  // A corrupted byte is refused by name.
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(20);
    f.put('\x7f');
  }
  EXPECT_EQ(TensorBoardWriter::ReadRecords(path).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace posttrain
