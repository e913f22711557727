#include "posttrain/model/safetensors.h"

#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_support.h"

namespace posttrain {
namespace {

using ::testing::HasSubstr;

std::string Msg(const absl::Status& s) { return std::string(s.message()); }

// A file with a hand-written header and `buffer_bytes` zero bytes of data.
std::string HandMade(const std::string& dir, const std::string& header, size_t buffer_bytes,
                     std::uint64_t declared_size = 0) {
  std::string content;
  const std::uint64_t n = declared_size > 0 ? declared_size : header.size();
  for (int i = 0; i < 8; ++i) content.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  content += header;
  content.append(buffer_bytes, '\0');
  const std::string path = dir + "/hand.safetensors";
  testing::WriteFile(path, content);
  return path;
}

TEST(SafetensorsTest, SaveThenLoadIsBitIdenticalForEveryDtype) {
  const std::string path = testing::TempDir("st") + "/t.safetensors";
  std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"f32", at::randn({3, 5})},
      {"bf16", at::randn({7}).to(at::kBFloat16)},
      {"f16", at::randn({2, 2, 2}).to(at::kHalf)},
      {"i64", at::arange(10, at::kLong)},
      {"strided", at::randn({4, 6}).t()},  // non-contiguous input
      {"empty", at::zeros({0, 4})},
      {"scalar", at::tensor(3.5)},
  };
  ASSERT_TRUE(SaveSafetensors(path, tensors, {{"format", "pt"}}).ok());
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata().at("format"), "pt");
  for (const auto& [name, t] : tensors) {
    absl::StatusOr<at::Tensor> loaded = file->Get(name);
    ASSERT_TRUE(loaded.ok()) << name;
    EXPECT_EQ(loaded->scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(loaded->sizes(), t.sizes()) << name;
    EXPECT_TRUE(at::equal(*loaded, t)) << name;  // bit-identical
  }
  EXPECT_EQ(file->Get("nope").status().code(), absl::StatusCode::kNotFound);
}

TEST(SafetensorsTest, MatchesPythonReaderLayout) {
  // The header Python's safetensors writes for {"a": float32 [2]}: offsets [0, 8].
  const std::string dir = testing::TempDir("st");
  const std::string path = HandMade(dir, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8);
  absl::StatusOr<SafetensorsFile> file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE(at::equal(*file->Get("a"), at::zeros({2})));
}

TEST(SafetensorsTest, HostileFilesGiveClearErrors) {
  const std::string dir = testing::TempDir("st");
  struct Case {
    std::string header;
    size_t buffer;
    std::uint64_t declared;
    std::string expected;
  };
  const std::string ok_entry = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  for (const Case& c : std::vector<Case>{
           {"{" + ok_entry + "}", 4, 0, "run past the 4-byte data buffer (truncated?)"},
           {"{" + ok_entry + "}", 8, 1ull << 40, "exceeds the 100 MB limit"},
           {"{" + ok_entry + "}", 8, 5000, "runs past the end of the"},
           {R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8, 0,
            "shape [3] of F32 needs 12 bytes but data_offsets span 8"},
           {R"({"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8, 0, "unsupported dtype \"Q4\""},
           {R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, 0, "not a non-negative integer"},
           {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
            12, 0, "overlap"},
           {"{not json", 8, 0, "header is not valid JSON"},
           {R"({"a":{"dtype":"F32","shape":[2]}})", 8, 0, "lacks dtype, shape or data_offsets"},
       }) {
    absl::Status s = SafetensorsFile::Open(HandMade(dir, c.header, c.buffer, c.declared)).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.expected;
    EXPECT_THAT(Msg(s), HasSubstr(c.expected));
    EXPECT_THAT(Msg(s), HasSubstr("hand.safetensors"));
  }
  testing::WriteFile(dir + "/tiny.safetensors", "abc");
  EXPECT_THAT(Msg(SafetensorsFile::Open(dir + "/tiny.safetensors").status()), HasSubstr("shorter than the 8-byte header"));
}

TEST(SafetensorsTest, TruncatedRealFileIsRefused) {
  const std::string dir = testing::TempDir("st");
  ASSERT_TRUE(SaveSafetensors(dir + "/whole.safetensors", {{"w", at::randn({64, 64})}}).ok());
  std::string bytes = testing::ReadFile(dir + "/whole.safetensors");
  testing::WriteFile(dir + "/cut.safetensors", bytes.substr(0, bytes.size() - 100));
  absl::Status s = SafetensorsFile::Open(dir + "/cut.safetensors").status();
  EXPECT_THAT(Msg(s), HasSubstr("tensor 'w': data_offsets [0, 16384] run past"));
}

TEST(SafetensorsTest, ShardedDirectoryRoundTrip) {
  const std::string dir = testing::TempDir("sharded");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (int i = 0; i < 5; ++i) tensors.push_back({"t" + std::to_string(i), at::randn({100})});
  ASSERT_TRUE(SaveSafetensorsDir(dir, tensors, /*max_shard_bytes=*/1000).ok());  // 400 B each → 3 shards
  EXPECT_TRUE(std::filesystem::exists(dir + "/model-00001-of-00003.safetensors"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/model.safetensors.index.json"));
  absl::StatusOr<std::map<std::string, at::Tensor>> loaded = LoadSafetensorsDir(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->size(), 5u);
  for (const auto& [name, t] : tensors) EXPECT_TRUE(at::equal(loaded->at(name), t)) << name;
}

}  // namespace
}  // namespace posttrain
