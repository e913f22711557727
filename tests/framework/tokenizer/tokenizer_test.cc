#include "posttrain/tokenizer/tokenizer.h"

#include <chrono>
#include <fstream>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "posttrain/tokenizer/hf_tokenizer.h"
#include "test_support.h"

namespace posttrain {
namespace {

using ::testing::HasSubstr;

std::vector<nlohmann::json> ReadJsonl(const std::string& path) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

// The converted tokenizer.json against SentencePiece itself (python3-sentencepiece)
// on every line of the 2 MiB TinyStories sample.
TEST(TokenizerTest, ConvertedTokenizerJsonEqualsSentencePieceOnTinyStories) {
  const std::string text_path = testing::DataPath("tinystories_train_head2MiB.txt");
  const std::string ref_path = testing::TempDir("spm") + "/reference.jsonl";
  std::string out;
  ASSERT_EQ(testing::RunCommand(posttrain::testing::Python() + " " + testing::SourceDir() +
                                    "/tests/framework/tokenizer/spm_reference.py " +
                                    testing::RepoDataPath("tok512.model") + " " + text_path + " " + ref_path,
                                &out),
            0)
      << out;
  std::vector<nlohmann::json> reference = ReadJsonl(ref_path);
  auto tokenizer = LoadTokenizer(testing::Stories260KDir() + "/tokenizer.json");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const std::string text = testing::ReadFile(text_path);
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  ASSERT_EQ(lines.size(), reference.size());
  int mismatches = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    std::vector<std::int64_t> ids = (*tokenizer)->Encode(lines[i]);
    const auto expected = reference[i]["ids"].get<std::vector<std::int64_t>>();
    if (ids != expected && ++mismatches <= 3) ADD_FAILURE() << "line " << i + 1 << ": " << lines[i];
    const std::string decoded = (*tokenizer)->Decode(expected);
    if (decoded != reference[i]["decoded"].get<std::string>() && ++mismatches <= 3) {
      ADD_FAILURE() << "decode of line " << i + 1 << ": '" << decoded << "'";
    }
  }
  EXPECT_EQ(mismatches, 0) << "of " << lines.size() << " lines";
  EXPECT_GT(lines.size(), 10000u);
}

TEST(TokenizerTest, SentencePieceModelThroughLibsentencepiece) {
  auto spm = LoadTokenizer(testing::RepoDataPath("tok512.model"));
  ASSERT_TRUE(spm.ok()) << spm.status();
  auto hf = LoadTokenizer(testing::Stories260KDir());
  ASSERT_TRUE(hf.ok());
  for (const char* text : {"Once upon a time", "  two  spaces ", "Tom's dog, Max, ran 12 miles!", "naïve café 🦙"}) {
    EXPECT_EQ((*spm)->Encode(text, true), (*hf)->Encode(text, true)) << text;
    EXPECT_EQ((*spm)->Decode((*spm)->Encode(text)), (*hf)->Decode((*hf)->Encode(text))) << text;
  }
  EXPECT_EQ((*spm)->bos_token_id(), 1);
  EXPECT_EQ((*hf)->bos_token_id(), 1);
  EXPECT_EQ((*hf)->eos_token_id(), 2);
  EXPECT_EQ((*hf)->vocab_size(), 512);
  // Fuzzing found a .model with an empty piece: libsentencepiece throws from its trie
  // builder (the process aborted); now an error naming the file, and the module stays
  // usable.
  const std::string bad = testing::SourceDir() + "/tests/fuzz/regressions/spm_model_empty_piece";
  auto broken = LoadSentencePieceTokenizer(bad);
  ASSERT_FALSE(broken.ok());
  EXPECT_THAT(std::string(broken.status().message()), ::testing::HasSubstr("cannot load SentencePiece model '" + bad + "': malformed model"));
  auto again = LoadTokenizer(testing::RepoDataPath("tok512.model"));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->Encode("Once upon a time", true), (*spm)->Encode("Once upon a time", true));
}

TEST(TokenizerTest, Qwen3TokenizerReproducesHuggingFaceIds) {
  const std::string dir = testing::DataPath("qwen3_tokenizer");
  auto tokenizer = LoadTokenizer(dir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  std::vector<nlohmann::json> fixture = ReadJsonl(testing::SourceDir() + "/../shared/fixtures/qwen3_tokenizer_hf.jsonl");
  ASSERT_GT(fixture.size(), 10u);
  for (const nlohmann::json& row : fixture) {
    const std::string text = row["text"].get<std::string>();
    const auto expected = row["ids"].get<std::vector<std::int64_t>>();
    EXPECT_EQ((*tokenizer)->Encode(text), expected) << text;
    EXPECT_EQ((*tokenizer)->Decode(expected), text) << text;
  }
  EXPECT_EQ((*tokenizer)->TokenToId("<|im_end|>"), 151645);
  EXPECT_EQ((*tokenizer)->eos_token_id(), 151645);  // tokenizer_config.json
  // Special tokens in the text are matched whole, and skipped on request.
  std::vector<std::int64_t> ids = (*tokenizer)->Encode("<|im_start|>user\nhi<|im_end|>");
  EXPECT_EQ(ids.front(), 151644);
  EXPECT_EQ(ids.back(), 151645);
  EXPECT_EQ((*tokenizer)->Decode(ids, /*skip_special_tokens=*/true), "user\nhi");
}

// A word of 100,000 characters (no spaces: a DNA string, a base64 blob) through the
// BPE merges: the same ids as libsentencepiece (independent BPE) and in time linear
// in its length up to a log (the pairwise rescan it replaced took ~50 s here).
TEST(TokenizerTest, LongWordsCostTheirLengthNotItsSquare) {
  std::string word;
  std::uint64_t state = 12345;
  for (int i = 0; i < 100000; ++i) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    word += static_cast<char>('a' + (state >> 33) % 10);
  }
  auto hf = LoadTokenizer(testing::Stories260KDir());
  auto spm = LoadTokenizer(testing::RepoDataPath("tok512.model"));
  ASSERT_TRUE(hf.ok() && spm.ok());
  const auto start = std::chrono::steady_clock::now();
  const std::vector<std::int64_t> ids = (*hf)->Encode(word);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(ids, (*spm)->Encode(word));
  EXPECT_GT(ids.size(), 10000u);
  EXPECT_LT(seconds, 5.0) << ids.size() << " tokens";
  RecordProperty("seconds", std::to_string(seconds));
}

TEST(TokenizerTest, BadTokenizerFilesGiveClearErrors) {
  EXPECT_EQ(LoadTokenizer("/nonexistent/dir").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(ParseHfTokenizer("{oops", "", "t.json").status().message()), HasSubstr("t.json is not valid JSON"));
  EXPECT_THAT(std::string(ParseHfTokenizer(R"({"model": {"type": "Unigram", "vocab": []}})", "", "t.json").status().message()),
              HasSubstr("model.vocab is empty or not a list of [piece, score]"));
  EXPECT_THAT(std::string(ParseHfTokenizer(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "unk_token": "a", "merges": ["a b"]}})", "", "t.json")
                              .status()
                              .message()),
              HasSubstr("merge 'a b' uses tokens not in the vocabulary"));
  EXPECT_THAT(std::string(ParseHfTokenizer(R"({"pre_tokenizer": {"type": "UnicodeScripts"}, "model": {"type": "BPE", "vocab": {"a": 0}, "unk_token": "a", "merges": []}})",
                                           "", "t.json")
                              .status()
                              .message()),
              HasSubstr("pre_tokenizer type 'UnicodeScripts' is not supported"));
}

TEST(TokenizerTest, ByteLevelBpeByHand) {
  // Vocabulary of single bytes plus merges "h e" → "he", "he l" → "hel"; GPT-2
  // byte-level maps ' ' to 'Ġ'.
  const std::string json = R"({
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "vocab": {"h": 0, "e": 1, "l": 2, "o": 3, "Ġ": 4, "he": 5, "hel": 6, "Ġh": 7},
              "merges": [["h", "e"], ["he", "l"], ["Ġ", "h"]]}})";
  auto tokenizer = ParseHfTokenizer(json, "", "t.json");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  // "hello hel" → pre-tokens "hello", "Ġhel". Lowest rank first: "hello" →
  // he·l·l·o → hel·l·o; "Ġhel" → Ġ·he·l (rank 0 beats Ġh's rank 2) → Ġ·hel.
  EXPECT_EQ((*tokenizer)->Encode("hello hel"), (std::vector<std::int64_t>{6, 2, 3, 4, 6}));
  EXPECT_EQ((*tokenizer)->Decode({6, 2, 3, 4, 6}), "hello hel");
}

// The Precompiled normaliser (SentencePiece's compiled rules, as T5/ALBERT/XLM-R
// tokenizer.json files carry them) against SentencePiece itself: a Unigram model
// trained by python3-sentencepiece with its default nmt_nfkc rules, written as
// Hugging Face's converter writes it, gives SentencePiece's ids on texts full of
// compatibility characters (ligatures, full- and half-width forms, circled and
// Roman numerals, decomposed accents, odd spaces). Without the normaliser most of
// them tokenize otherwise. A malformed charsmap is named.
TEST(TokenizerTest, PrecompiledNormaliserEqualsSentencePiece) {
  const std::string dir = testing::TempDir("precompiled");
  std::string out;
  ASSERT_EQ(testing::RunCommand(posttrain::testing::Python() + " " + testing::SourceDir() +
                                    "/tests/framework/tokenizer/precompiled_reference.py " + dir, &out), 0)
      << out;
  const std::string text = testing::ReadFile(dir + "/tokenizer.json");
  auto tokenizer = ParseHfTokenizer(text);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  nlohmann::json without = nlohmann::json::parse(text);
  without["normalizer"]["normalizers"].erase(0);
  auto plain = ParseHfTokenizer(without.dump());
  ASSERT_TRUE(plain.ok()) << plain.status();
  int cases = 0, changed = 0;
  for (const nlohmann::json& c : ReadJsonl(dir + "/cases.jsonl")) {
    const std::string input = c["text"].get<std::string>();
    const auto expected = c["ids"].get<std::vector<std::int64_t>>();
    EXPECT_EQ((*tokenizer)->Encode(input), expected) << input;
    changed += (*plain)->Encode(input) != expected;
    ++cases;
  }
  EXPECT_EQ(cases, 14);
  EXPECT_GE(changed, 10) << "the cases should depend on the normaliser";
  // Where the crate departs from SentencePiece: a grapheme cluster of 6 bytes or more
  // is normalised a character at a time, so half-width ﾊ + ﾟ (3 + 3 bytes) becomes
  // ハ + U+309A, not SentencePiece's longest-match パ; under 6 bytes (e + U+0301)
  // the cluster is looked up whole and composes.
  EXPECT_EQ((*tokenizer)->Encode("\xEF\xBE\x8A\xEF\xBE\x9F"), (*tokenizer)->Encode("\xE3\x83\x8F\xE3\x82\x9A"));
  EXPECT_EQ((*tokenizer)->Encode("e\xCC\x81"), (*tokenizer)->Encode("\xC3\xA9"));

  nlohmann::json broken = nlohmann::json::parse(text);
  broken["normalizer"]["normalizers"][0]["precompiled_charsmap"] = "AAAA";  // a 3-byte blob
  EXPECT_THAT(std::string(ParseHfTokenizer(broken.dump()).status().message()), HasSubstr("Precompiled"));
  broken["normalizer"]["normalizers"][0]["precompiled_charsmap"] = "!!";
  EXPECT_THAT(std::string(ParseHfTokenizer(broken.dump()).status().message()), HasSubstr("not base64"));
}

}  // namespace
}  // namespace posttrain
